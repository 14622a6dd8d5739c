"""Small audio listings generated in code (no binary fixtures): good clips of assorted rates and
channel counts plus one bad file of every kind the prep job must reject."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from data_prep.records import ClipRecord, LabelVocab, SourceListing

VOCAB = LabelVocab(ids=("tone", "noise"), names=("Tone", "Noise"))


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_listing(root: Path, n_good: int = 12) -> tuple[SourceListing, dict[str, str]]:
    """Good clips at assorted rates/channels plus one file of every bad kind. Returns the listing
    and {path: expected reject reason} for the bad ones."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records, bad = [], {}
    for i in range(n_good):
        rate = (16000, 22050, 44100, 48000)[i % 4]
        wave = _tone(0.5 + i * 0.3, rate, 200 + 50 * i)
        if i % 3 == 0:
            wave = np.stack([wave, 0.5 * wave], axis=1)  # stereo: downmixed
        path = root / f"good_{i}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, wave, rate)
        records.append(ClipRecord(f"good_{i}", str(path), ("tone",) if i % 2 else ("tone", "noise"), "train"))

    def add_bad(name: str, reason: str, labels=("noise",)):
        path = root / name
        records.append(ClipRecord(Path(name).stem, str(path), labels, "train"))
        bad[str(path)] = reason
        return path

    add_bad("corrupt.wav", "unreadable").write_bytes(b"RIFF\x00\x00garbage" * 10)
    add_bad("empty.wav", "empty").write_bytes(b"")
    sf.write(add_bad("silent.wav", "silent"), np.zeros(16000, np.float32), 16000)
    nan = rng.standard_normal(16000).astype(np.float32) * 0.1
    nan[100] = np.nan
    sf.write(add_bad("nan.wav", "non_finite"), nan, 16000, subtype="FLOAT")
    sf.write(add_bad("short.wav", "too_short"), _tone(0.05, 16000), 16000)
    sf.write(add_bad("lowrate.wav", "bad_sample_rate"), _tone(1.0, 2000, 300), 2000)
    add_bad("missing.wav", "missing_audio")
    return SourceListing("unit", VOCAB, records, []), bad


def tree_bytes(url: str) -> dict[str, bytes]:
    root = Path(url)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
