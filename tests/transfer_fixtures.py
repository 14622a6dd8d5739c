"""A tiny target task with clear class structure, prepared, embedded and ready for `weaksound transfer`.

- audio generated in code (no binary fixtures): 3 classes that differ in spectrum (a low harmonic
  tone, a high chirp, amplitude-modulated noise), random pitch/gain jitter per clip, 2 s at 16 kHz;
- official folds 1..N_FOLDS; clips come in pairs cut from one "source recording", and both clips
  of a pair always share a fold (so fold isolation holds);
- class ids carry a super-category prefix ("tonal/...", "noisy/...");
- a random "cpu-small" network with 4 source classes, exported like a trained one;
- the dataset is prepared with the production prep code and embedded with `run_embed`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from data_prep.pipeline import run_prep
from data_prep.records import ClipRecord, LabelVocab, SourceListing
from data_prep.shards import ShardConfig
from trainer.config import preset
from trainer.export import export_model
from trainer.model import WeakLabelCNN
from inference.config import EmbedConfig
from inference.embed import load_arrays, load_embeddings, run_embed, save_arrays

RATE = 16000
CLASSES = (("tonal/low_tone", "Low tone"), ("tonal/high_chirp", "High chirp"), ("noisy/noise_bursts", "Noise bursts"))
N_FOLDS = 3
PER_CLASS_AND_FOLD = 4  # two source recordings of two clips each


def _render(cls: int, rng: np.random.Generator, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    if cls == 0:
        f0 = rng.uniform(180, 260)
        wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3))
    elif cls == 1:
        f0, f1 = rng.uniform(2500, 3200), rng.uniform(4500, 6000)
        wave = np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) * t**2 / seconds))
    else:
        wave = rng.standard_normal(t.size) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    wave = wave / np.max(np.abs(wave)) * rng.uniform(0.2, 0.5)
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_target_listing(root: Path, seed: int = 0) -> SourceListing:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for fold in range(1, N_FOLDS + 1):
        for cls, (cid, _) in enumerate(CLASSES):
            for i in range(PER_CLASS_AND_FOLD):
                clip_id = f"f{fold}-c{cls}-{i}"
                path = root / f"{clip_id}.wav"
                sf.write(path, _render(cls, rng), RATE)
                records.append(ClipRecord(clip_id, str(path), (cid,), f"fold{fold}", fold=fold,
                                          source_id=f"src-f{fold}-c{cls}-{i // 2}"))
    vocab = LabelVocab(ids=tuple(c for c, _ in CLASSES), names=tuple(n for _, n in CLASSES))
    return SourceListing("tiny-events", vocab, records, [])


def make_source_model(url: str, num_classes: int = 4) -> str:
    """A random cpu-small N_S with non-trivial BatchNorm statistics, exported like a trained one."""
    cfg = preset("cpu-small")
    arch = cfg.model.__class__(**{**cfg.model.__dict__, "num_classes": num_classes})
    torch.manual_seed(0)
    model = WeakLabelCNN(arch, n_mels=cfg.frontend.n_mels).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    vocab = [{"index": i, "id": f"src{i}", "name": f"Source class {i}"} for i in range(num_classes)]
    return export_model(url, model, frontend=cfg.frontend, architecture=arch, vocabulary=vocab)


def build_target(root: Path) -> dict[str, str]:
    """Prepare + embed the tiny target task under ``root``; returns {"data", "model", "embeddings"}."""
    data, emb = str(root / "data"), str(root / "emb")
    run_prep(make_target_listing(root / "audio"), data, ShardConfig(sample_rate=RATE, max_clips_per_shard=12),
             executor="local", progress=False)
    model = make_source_model(str(root / "model"))
    run_embed(EmbedConfig(model, data, emb, executor="local", progress=False))
    return {"data": data, "model": model, "embeddings": emb}


def build_source(root: Path, model: str) -> str:
    """A tiny multi-label "source" dataset in the model's own vocabulary (src0..src3), with
    train and eval splits and no folds, embedded; returns the embeddings URL."""
    rng = np.random.default_rng(1)
    (root / "source_audio").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(24):
        present = [c for c in range(3) if rng.random() < 0.5] or [i % 3]
        wave = sum(_render(c, rng) for c in present)
        path = root / "source_audio" / f"s{i}.wav"
        sf.write(path, (wave / np.max(np.abs(wave)) * 0.4).astype(np.float32), RATE)
        labels = tuple(f"src{c}" for c in present) + (("src3",) if i % 4 == 0 else ())
        records.append(ClipRecord(f"s{i}", str(path), labels, "train" if i < 16 else "eval"))
    vocab = LabelVocab(ids=tuple(f"src{c}" for c in range(4)), names=tuple(f"Source class {c}" for c in range(4)))
    data, emb = str(root / "source_data"), str(root / "source_emb")
    run_prep(SourceListing("tiny-source", vocab, records, []), data,
             ShardConfig(sample_rate=RATE, max_clips_per_shard=12), executor="local", progress=False)
    run_embed(EmbedConfig(model, data, emb, executor="local", progress=False))
    return emb


def leak_one_source(emb_url: str, out_url: str) -> str:
    """A copy of an embeddings folder in which one clip of fold 2 claims a source recording of fold 1."""
    shutil.copytree(emb_url, out_url)
    e = load_embeddings(out_url)
    donor = str(next(s for s, f in zip(e.arrays["source_id"], e.arrays["fold"]) if f == 1))
    for name in sorted(p.name for p in (Path(out_url) / "shards").glob("*.npz")):
        path = str(Path(out_url) / "shards" / name)
        arrays = load_arrays(path)
        hit = np.flatnonzero(arrays["fold"] == 2)
        if hit.size:
            arrays["source_id"] = arrays["source_id"].astype(object)
            arrays["source_id"][hit[0]] = donor
            arrays["source_id"] = arrays["source_id"].astype(str)
            save_arrays(path, arrays)
            return donor
    raise AssertionError("no clip of fold 2")
