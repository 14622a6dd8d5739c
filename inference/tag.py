"""Tagging (`weaksound tag --model URL FILE...`, inference/tag_cli.py): clip-level tags and a segment-level timeline for audio files.

Works for any length, from under a second to hours: the file is streamed (decoded and resampled block by block) and scored in
chunks of --chunk-seconds, so memory stays bounded. Chunks overlap by one segment and each
segment is kept from exactly one chunk, so the timeline has one row per segment of the whole file.
(The log-mel dB floor, top_db below the maximum, is computed per chunk.)

Outputs per FILE (with --out DIR): <stem>.tags.json (top-k clip labels), <stem>.timeline.csv
(onset, offset, label, score of every event above --threshold, consecutive segments merged),
<stem>.timeline.png (score of the top classes over time).

The typed run is ``run_tag(TagConfig) -> TagSummary`` (inference/config.py).
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field

import numpy as np

from data_prep import audio
from inference.config import TagConfig
from runtime import storage


@dataclass
class TagResult:
    path: str
    duration_s: float
    clip_scores: np.ndarray        # (C,) pooled like the model was trained (avg or max)
    segment_scores: np.ndarray     # (K, C)
    segment_starts_s: np.ndarray   # (K,)
    segment_seconds: float
    names: list[str]

    def top(self, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.clip_scores)[:k]
        return [(self.names[i], float(self.clip_scores[i])) for i in order]

    def events(self, threshold: float) -> list[tuple[float, float, str, float]]:
        """(onset_s, offset_s, label, max score) for runs of consecutive segments above threshold."""
        rows = []
        hop = float(self.segment_starts_s[1] - self.segment_starts_s[0]) if len(self.segment_starts_s) > 1 else 0.0
        for c, name in enumerate(self.names):
            above = self.segment_scores[:, c] >= threshold
            k = 0
            while k < len(above):
                if not above[k]:
                    k += 1
                    continue
                start = k
                while k < len(above) and above[k]:
                    k += 1
                onset = float(self.segment_starts_s[start])
                offset = min(float(self.segment_starts_s[k - 1]) + self.segment_seconds, self.duration_s)
                rows.append((onset, max(offset, onset + hop), name, float(self.segment_scores[start:k, c].max())))
        return sorted(rows)


def tag_waveform(exported, wave: np.ndarray, chunk_seconds: float = TagConfig.chunk_seconds,
                 path: str = "") -> TagResult:
    """Score a mono waveform at the model's rate, chunk by chunk (see module doc)."""
    return tag_stream(exported, [wave], chunk_seconds, path)


def tag_stream(exported, blocks, chunk_seconds: float = TagConfig.chunk_seconds, path: str = "") -> TagResult:
    """Score consecutive mono blocks at the model's rate (any sizes) as one recording, holding only
    one chunk plus one segment of audio at a time."""
    import torch

    fe, arch = exported.frontend, exported.architecture
    log_mel = exported.log_mel()
    hop_samples = arch.segment_hop_frames * fe.hop_length          # samples between segments
    seg_samples = arch.segment_frames * fe.hop_length               # samples spanned by one segment's grid
    step = max(hop_samples, int(chunk_seconds * fe.sample_rate) // hop_samples * hop_samples)
    per_chunk = step // hop_samples                                  # segments kept from each chunk
    device = next(exported.model.parameters()).device
    scores, total = [], 0
    buffer = np.zeros(0, np.float32)
    blocks = iter(blocks)
    ended = False
    while True:
        while not ended and buffer.size < step + seg_samples:  # fill one chunk plus the overlap
            try:
                block = next(blocks)
            except StopIteration:
                ended = True
                break
            total += block.size
            buffer = np.concatenate([buffer, block.astype(np.float32, copy=False)])
        piece = buffer[:step + seg_samples]
        x = torch.from_numpy(np.ascontiguousarray(piece))[None].to(device)
        with torch.inference_mode():
            feats, frames = log_mel(x, torch.tensor([piece.size], device=device))
            out = exported.model(feats, frames)
        k = int(out.num_segments[0])
        last = ended and buffer.size <= step
        scores.append(out.segments[0, : k if last else min(k, per_chunk)].float().cpu().numpy())
        if last:
            break
        buffer = buffer[step:]
    seg = np.concatenate(scores)
    clip = seg.max(0) if arch.pooling == "max" else seg.mean(0)
    starts = np.arange(seg.shape[0]) * hop_samples / fe.sample_rate
    seg_s = ((arch.segment_frames - 1) * fe.hop_length + fe.n_fft) / fe.sample_rate
    names = [v["name"] for v in exported.vocabulary]
    return TagResult(path, total / fe.sample_rate, clip, seg, starts, seg_s, names)


def tag_file(exported, path: str, chunk_seconds: float = TagConfig.chunk_seconds) -> TagResult:
    """Tag a file of any length: it is streamed (decoded and resampled block by block), never held whole."""
    with storage.open_url(path, "rb") as f:
        blocks = audio.stream_mono(f, path, exported.frontend.sample_rate, block_seconds=chunk_seconds)
        return tag_stream(exported, blocks, chunk_seconds, path)


def write_outputs(result: TagResult, out_dir: str, top_k: int, threshold: float) -> dict[str, str]:
    stem = os.path.splitext(os.path.basename(result.path))[0] or "audio"
    paths = {k: storage.join(out_dir, f"{stem}.{k}") for k in ("tags.json", "timeline.csv", "timeline.png")}
    storage.write_text_atomic(paths["tags.json"], json.dumps(
        {"path": result.path, "duration_s": result.duration_s,
         "top": [{"label": n, "score": s} for n, s in result.top(top_k)]}, indent=1))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["onset_s", "offset_s", "label", "score"])
    for onset, offset, name, score in result.events(threshold):
        w.writerow([f"{onset:.3f}", f"{offset:.3f}", name, f"{score:.4f}"])
    storage.write_text_atomic(paths["timeline.csv"], buf.getvalue())
    storage.write_bytes_atomic(paths["timeline.png"], timeline_png(result, top_k))
    return paths


def timeline_png(result: TagResult, top_k: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    top = np.argsort(-result.clip_scores)[:top_k]
    fig = Figure(figsize=(10, 1.2 + 0.35 * len(top)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    hop = result.segment_starts_s[1] - result.segment_starts_s[0] if len(result.segment_starts_s) > 1 else 1.0
    extent = (0.0, float(result.segment_starts_s[-1] + hop), len(top) - 0.5, -0.5)
    im = ax.imshow(result.segment_scores[:, top].T, aspect="auto", vmin=0, vmax=1, cmap="magma",
                   interpolation="nearest", extent=extent)
    ax.set_yticks(range(len(top)))
    ax.set_yticklabels([result.names[i] for i in top], fontsize=8)
    ax.set_xlabel("time (s): segment start")
    ax.set_title(f"{os.path.basename(result.path)}: segment scores of the top {len(top)} classes", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


@dataclass
class TagSummary:
    """What a tagging run produced: a result per tagged file (and its output files, with ``out``),
    and the files skipped with the reason."""

    tagged: list[tuple[TagResult, dict[str, str]]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def run_tag(cfg: TagConfig) -> TagSummary:
    """Tag every file of ``cfg.files``; an undecodable or missing file is skipped by name, never fatal."""
    from trainer.export import load_exported

    exported = load_exported(cfg.model)
    summary = TagSummary()
    for path in cfg.files:
        try:
            result = tag_file(exported, path, cfg.chunk_seconds)
        except (audio.AudioError, FileNotFoundError) as e:
            summary.skipped.append((path, str(e)))
            continue
        written = write_outputs(result, cfg.out, cfg.top_k, cfg.threshold) if cfg.out else {}
        summary.tagged.append((result, written))
    return summary
