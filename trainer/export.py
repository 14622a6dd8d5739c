"""Final model export: ``model.safetensors`` + ``config.json``, loadable without pickle.

``config.json`` (format ``weaksound-model/1``) describes everything needed to rebuild and use
the network from the JSON alone:

```json
{"format": "weaksound-model/1",
 "architecture": {"type": "WeakLabelCNN", "n_mels": 128, "channels": [16, ...],
                  "convs_per_block": [2, ...], "f1_channels": 1024, "num_classes": 527,
                  "pooling": "avg", "f2_hidden": 0},
 "frontend": {"sample_rate": 44100, "n_fft": 1024, "hop_length": 512, "n_mels": 128, ...},
 "pooling": "avg",
 "segment": {"frames": 128, "hop_frames": 64, "seconds": 1.4977, "hop_seconds": 0.743},
 "input": {"layout": "(B, 1, T, n_mels) log-mel dB, time-major", "min_frames": 128},
 "outputs": {"clip": "(B, C) pooled sigmoid", "segments": "(B, K, C)", "f1": "(B, K, F1)"},
 "vocabulary": [{"index": 0, "id": "...", "name": "..."}],
 "training": {...}}
```

``load_exported(url)`` works on a local folder or ``s3://`` prefix (via ``runtime.storage``).

Publication: an export is written with ``runtime.storage.publish_folder``, so the two files
replace the previous export in one step. Locally ``url`` is a symlink to a version folder
``.<name>.versions/<version>/`` beside it (the newest two versions are kept); on S3 the object
``url/_CURRENT`` names the version under ``<parent>/.<name>.versions/``. Readers resolve ``url``
once (``storage.resolve_folder``) and read both files from that one version, so they never pair
the weights of one export with the config of another, and an interrupted export leaves the
previous one in place. ``config.json`` also records the sha256 and size of its weights
(``"weights"``), checked on load (exports written before that field load unchecked).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from runtime import storage
from trainer.config import FrontEndConfig, ModelConfig, _from_dict
from trainer.frontend import LogMel
from trainer.model import WeakLabelCNN, segment_geometry

__all__ = ["export_model", "load_exported", "exported_from_bytes", "read_export_config", "read_export_files",
           "ExportedModel", "FORMAT", "WEIGHTS", "CONFIG"]

FORMAT = "weaksound-model/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class ExportedModel:
    model: WeakLabelCNN  # in eval mode
    frontend: FrontEndConfig
    architecture: ModelConfig
    vocabulary: list[dict]  # [{"index", "id", "name"}], index = output column
    config: dict  # the whole config.json

    def log_mel(self) -> LogMel:
        """The matching front end (waveforms -> model input), on the model's device."""
        device = next(self.model.parameters()).device
        return LogMel(self.frontend, min_frames=self.architecture.segment_frames).to(device)


def export_model(url: str, model: torch.nn.Module, *, frontend: FrontEndConfig, architecture: ModelConfig,
                 vocabulary: list[dict], training: dict | None = None,
                 extra_files: dict[str, bytes] | None = None) -> str:
    """Publish ``model.safetensors`` and ``config.json`` (plus ``extra_files``, e.g. a record
    that belongs to this export) as the new version of ``url`` in one step; returns ``url``.

    ``model`` is the unwrapped network; ``vocabulary`` is the manifest's list of
    ``{"index", "id", "name"}`` (its length must equal the number of outputs).
    """
    if len(vocabulary) != architecture.num_classes:
        raise ValueError(f"vocabulary has {len(vocabulary)} entries but the model has "
                         f"{architecture.num_classes} outputs")
    extra_files = dict(extra_files or {})
    clash = sorted({WEIGHTS, CONFIG} & set(extra_files))
    if clash:
        raise ValueError(f"extra_files may not replace {clash}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = save_safetensors(state)
    seg_s, hop_s = segment_geometry(frontend, architecture)
    arch = {"type": "WeakLabelCNN", "n_mels": frontend.n_mels, **dataclasses.asdict(architecture)}
    doc = {
        "format": FORMAT,
        "architecture": arch,
        "frontend": dataclasses.asdict(frontend),
        "pooling": architecture.pooling,
        "segment": {"frames": architecture.segment_frames, "hop_frames": architecture.segment_hop_frames,
                    "seconds": seg_s, "hop_seconds": hop_s},
        "input": {"layout": "(B, 1, T, n_mels) log-mel dB (ref 1.0, per-clip top_db), time-major",
                  "min_frames": architecture.segment_frames},
        "outputs": {"clip": "(B, C) pooled sigmoid scores", "segments": "(B, K, C) sigmoid scores",
                    "f1": "(B, K, F1) F1 activations (embedding layer)"},
        "vocabulary": [{"index": int(v["index"]), "id": str(v["id"]), "name": str(v.get("name", v["id"]))}
                       for v in vocabulary],
        "training": training or {},
        "weights": {"file": WEIGHTS, "sha256": hashlib.sha256(weights).hexdigest(), "bytes": len(weights)},
    }
    storage.publish_folder(url, {WEIGHTS: weights, CONFIG: json.dumps(doc, indent=1).encode("utf-8"),
                                 **extra_files})
    return url


def read_export_files(url: str) -> tuple[bytes, bytes, str]:
    """``(config.json bytes, model.safetensors bytes, version folder)`` of the export at ``url``,
    both read from the one version ``url`` stands for now."""
    folder = storage.resolve_folder(url)
    try:
        config = storage.read_bytes(storage.join(folder, CONFIG))
        weights = storage.read_bytes(storage.join(folder, WEIGHTS))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{url} is not a complete export ({error}); expected {WEIGHTS} + {CONFIG}") from None
    return config, weights, folder


def read_export_config(url: str) -> tuple[FrontEndConfig, ModelConfig]:
    """The front end and architecture of the export at ``url`` (its ``config.json`` only)."""
    folder = storage.resolve_folder(url)
    doc = json.loads(storage.read_text(storage.join(folder, CONFIG)))
    return _configs(doc, url)[:2]


def load_exported(url: str, device: str | torch.device = "cpu") -> ExportedModel:
    """Rebuild the exported network from ``config.json`` alone and load its weights (eval mode)."""
    config, weights, _ = read_export_files(url)
    return exported_from_bytes(json.loads(config), weights, device, where=url)


def exported_from_bytes(doc: dict, weights: bytes, device: str | torch.device = "cpu", *,
                        where: str = "export") -> ExportedModel:
    """The network of an export held in memory: ``doc`` (config.json) and ``weights``
    (model.safetensors bytes), e.g. shipped to Ray tasks without shared storage."""
    frontend, architecture, n_mels = _configs(doc, where)
    recorded = doc.get("weights")
    if recorded and (recorded.get("bytes") != len(weights)
                     or recorded.get("sha256") != hashlib.sha256(weights).hexdigest()):
        raise ValueError(f"{where}: {WEIGHTS} ({len(weights)} bytes) is not the file its {CONFIG} was written "
                         f"with ({recorded.get('bytes')} bytes, sha256 {recorded.get('sha256')}); "
                         "the two files come from different exports")
    model = WeakLabelCNN(architecture, n_mels=n_mels)
    model.load_state_dict(load_safetensors(weights), strict=True)
    model.to(device).eval()
    return ExportedModel(model=model, frontend=frontend, architecture=architecture,
                         vocabulary=doc["vocabulary"], config=doc)


def _configs(doc: dict, where: str) -> tuple[FrontEndConfig, ModelConfig, int]:
    if doc.get("format") != FORMAT:
        raise ValueError(f"{where}: not a {FORMAT} export (format={doc.get('format')!r})")
    arch = dict(doc["architecture"])
    kind, n_mels = arch.pop("type"), arch.pop("n_mels")
    if kind != "WeakLabelCNN":
        raise ValueError(f"{where}: unknown architecture type {kind!r}")
    architecture = _from_dict(ModelConfig, arch, "architecture.")
    frontend = _from_dict(FrontEndConfig, doc["frontend"], "frontend.")
    return frontend, architecture, n_mels
