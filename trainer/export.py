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
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from runtime import storage
from trainer.config import FrontEndConfig, ModelConfig, _from_dict
from trainer.frontend import LogMel
from trainer.model import WeakLabelCNN, segment_geometry

__all__ = ["export_model", "load_exported", "exported_from_bytes", "read_export_config", "ExportedModel", "FORMAT",
           "WEIGHTS", "CONFIG"]

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
                 vocabulary: list[dict], training: dict | None = None) -> str:
    """Write ``model.safetensors`` and ``config.json`` under ``url``; returns ``url``.

    ``model`` is the unwrapped network; ``vocabulary`` is the manifest's list of
    ``{"index", "id", "name"}`` (its length must equal the number of outputs).
    """
    if len(vocabulary) != architecture.num_classes:
        raise ValueError(f"vocabulary has {len(vocabulary)} entries but the model has "
                         f"{architecture.num_classes} outputs")
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
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    storage.write_bytes_atomic(storage.join(url, WEIGHTS), save_safetensors(state))
    # config last: its presence means the export is complete
    storage.write_text_atomic(storage.join(url, CONFIG), json.dumps(doc, indent=1))
    return url


def read_export_config(url: str) -> tuple[FrontEndConfig, ModelConfig]:
    """The front end and architecture of the export at ``url`` (its ``config.json`` only)."""
    doc = _read_config(url)
    return _configs(doc, url)[:2]


def load_exported(url: str, device: str | torch.device = "cpu") -> ExportedModel:
    """Rebuild the exported network from ``config.json`` alone and load its weights (eval mode)."""
    return exported_from_bytes(_read_config(url), storage.read_bytes(storage.join(url, WEIGHTS)), device,
                               where=url)


def exported_from_bytes(doc: dict, weights: bytes, device: str | torch.device = "cpu", *,
                        where: str = "export") -> ExportedModel:
    """The network of an export held in memory: ``doc`` (config.json) and ``weights``
    (model.safetensors bytes), e.g. shipped to Ray tasks without shared storage."""
    frontend, architecture, n_mels = _configs(doc, where)
    model = WeakLabelCNN(architecture, n_mels=n_mels)
    model.load_state_dict(load_safetensors(weights), strict=True)
    model.to(device).eval()
    return ExportedModel(model=model, frontend=frontend, architecture=architecture,
                         vocabulary=doc["vocabulary"], config=doc)


def _read_config(url: str) -> dict:
    return json.loads(storage.read_text(storage.join(url, CONFIG)))


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
