"""The recipe preset and honest model selection in a real 2-worker Ray Train run (slow: ~1 min)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from data_prep.pipeline import run_prep
from data_prep.records import ClipRecord, SourceListing
from data_prep.shards import ShardConfig
from runtime import storage
from test_trainer_data import TONE_HZ, VOCAB
from trainer.export import load_exported
from trainer.main import main


def _tones_with_val_and_scrambled_eval(root, out: str, rate: int = 16000) -> str:
    """48 train, 16 val and 16 eval tone clips; the eval labels are drawn independently of the audio,
    so eval mAP follows chance while val mAP follows learning: the two splits disagree on epochs."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    records = []
    for i in range(80):
        labels = sorted(set(rng.choice(4, size=int(rng.integers(1, 3))).tolist()))
        t = np.arange(int(rng.uniform(1.6, 3.0) * rate)) / rate
        wave = 0.05 * rng.standard_normal(t.size)
        for k in labels:
            wave += 0.2 * np.sin(2 * np.pi * TONE_HZ[k] * t)
        path = root / f"c{i:03d}.wav"
        sf.write(path, wave.astype(np.float32), rate)
        split = "train" if i < 48 else "val" if i < 64 else "eval"
        if split == "eval":
            labels = sorted(set(rng.choice(4, size=int(rng.integers(1, 3))).tolist()))
        records.append(ClipRecord(f"c{i:03d}", str(path), tuple(VOCAB.ids[k] for k in labels), split))
    run_prep(SourceListing("tones-val", VOCAB, records, []), out, ShardConfig(sample_rate=rate, max_clips_per_shard=16),
             executor="local", progress=False)
    return out


@pytest.mark.slow
def test_the_recipe_run_chooses_best_on_val_never_on_eval_and_exports_the_ema(tmp_path, ray_local, capsys,
                                                                               monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    data = _tones_with_val_and_scrambled_eval(tmp_path / "wav", str(tmp_path / "shards"))
    out = str(tmp_path / "runs")
    assert main(["--data", data, "--out", out, "--name", "plus", "--preset", "cpu-small-plus", "--workers", "2",
                 "--no-progress", "--set", "loader.max_crop_s=2.0", "--set", "loader.batch_seconds=16",
                 "--epochs", "4", "--steps-per-epoch", "4", "--ema-decay", "0.5", "--warmup-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "model selection on the 'val' split" in printed
    doc = json.loads(storage.read_text(f"{out}/plus/metrics.json"))
    epochs = doc["epochs"]
    assert doc["selection_split"] == "val" and doc["best"]["split"] == "val"
    assert all(e["val_clips"] == 16 and e["eval_clips"] == 16 for e in epochs)
    val = [e["val_mAP"] for e in epochs]
    assert doc["best"]["epoch"] == int(np.argmax(val)) and doc["best"]["mAP"] == max(val)
    best = load_exported(f"{out}/plus/best")
    assert best.config["training"]["split"] == "val" and best.config["training"]["epoch"] == doc["best"]["epoch"]
    model = load_exported(f"{out}/plus/model")
    assert model.config["training"]["weights"] == "ema" and model.config["training"]["selection_split"] == "val"
    summary = json.loads(printed.split("[trainer] done: ", 1)[1].splitlines()[0])
    assert summary["best_epoch"] == doc["best"]["epoch"]
    assert summary["best_eval_mAP"] == epochs[doc["best"]["epoch"]]["eval_mAP"]
    assert doc["config"]["augment"]["mixup_alpha"] > 0 and doc["config"]["loader"]["sampling"] == "balanced"
