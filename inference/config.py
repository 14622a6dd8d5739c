"""Typed configs of the inference runs, and the command line each one stands for.

``run_embed(EmbedConfig)`` (inference/embed.py) and ``run_tag(TagConfig)`` (inference/tag.py) are
the typed runs; ``weaksound embed`` / ``weaksound tag`` (inference/embed_cli.py, tag_cli.py) parse
their options into these configs, and ``command()`` renders a config back into that command line.

Example:
    >>> EmbedConfig(model="runs/r1/model", data="data/esc50", out="emb/esc50", executor="local").command()
    'weaksound embed --model runs/r1/model --data data/esc50 --out emb/esc50 --executor local'
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from data_prep.job import EXECUTORS, changed_options as _options

__all__ = ["EmbedConfig", "TagConfig"]


@dataclass(frozen=True)
class EmbedConfig:
    """One `weaksound embed` run: F1/F2 embeddings of every clip of ``split`` of ``data``.

    Attributes:
        model: exported model folder/URL (model.safetensors + config.json).
        data: prepared dataset URL (with manifest.json).
        out: output URL for the embeddings (local folder or s3://).
        split: the manifest split to embed, or ``"all"``.
        batch_seconds: padded audio seconds per forward pass; bounds memory (a batch holds
            clips x longest clip <= this).
        actors: model actors; 0 = one per GPU, else one per CPU core.
        executor: ``"ray"`` (actors over the cluster) or ``"local"`` (this process).
        address: Ray cluster to join; None = ``$RAY_ADDRESS``, else a local Ray.
        progress: show a progress bar.
        metrics_port: serve Prometheus metrics on 127.0.0.1:PORT; 0 = the model actors export
            them through Ray's metrics exporter.
        metrics_linger_s: with ``metrics_port``, keep serving this long after the job.
        on_mismatch: what to do with an existing .npz in ``out`` made from another model or other
            shard data (its fingerprints differ): ``"refuse"`` (fail before embedding anything,
            naming it) or ``"redo"`` (recompute and replace it).
    """

    model: str
    data: str
    out: str
    split: str = "all"
    batch_seconds: float = 60.0
    actors: int = 0
    executor: str = "ray"
    address: str | None = None
    progress: bool = True
    metrics_port: int = 0
    metrics_linger_s: float = 10.0
    on_mismatch: str = "refuse"

    def __post_init__(self) -> None:
        if self.on_mismatch not in ("refuse", "redo"):
            raise ValueError(f"on_mismatch must be 'refuse' or 'redo', got {self.on_mismatch!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        if not self.batch_seconds > 0:
            raise ValueError(f"batch_seconds must be > 0, got {self.batch_seconds!r}")

    def argv(self) -> list[str]:
        d = EmbedConfig(self.model, self.data, self.out)
        return ["embed", "--model", self.model, "--data", self.data, "--out", self.out, *_options([
            ("--split", self.split, d.split), ("--batch-seconds", self.batch_seconds, d.batch_seconds),
            ("--actors", self.actors, d.actors), ("--executor", self.executor, d.executor),
            ("--address", self.address, d.address), ("--metrics-port", self.metrics_port, d.metrics_port),
            ("--metrics-linger", self.metrics_linger_s, d.metrics_linger_s),
            ("--on-mismatch", self.on_mismatch, d.on_mismatch),
        ])] + ([] if self.progress else ["--no-progress"])

    def command(self) -> str:
        return shlex.join(["weaksound", *self.argv()])


@dataclass(frozen=True)
class TagConfig:
    """One `weaksound tag` run: clip tags and a segment timeline for each of ``files``.

    Attributes:
        model: exported model folder/URL.
        files: audio files (local paths or s3:// URLs).
        top_k: clip labels reported per file (and classes drawn in the timeline PNG).
        threshold: segment score at or above which a timeline event is reported.
        chunk_seconds: audio scored per forward pass; bounds memory for long files.
        out: folder for <stem>.tags.json/.timeline.csv/.timeline.png; None = report only.
    """

    model: str
    files: tuple[str, ...]
    top_k: int = 5
    threshold: float = 0.5
    chunk_seconds: float = 60.0
    out: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.files, str):
            raise TypeError("files must be a sequence of paths, not one string")
        object.__setattr__(self, "files", tuple(self.files))
        if not self.files:
            raise ValueError("no audio file to tag")
        if not self.chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {self.chunk_seconds!r}")

    def argv(self) -> list[str]:
        d = TagConfig(self.model, self.files)
        return ["tag", "--model", self.model, *_options([
            ("--top-k", self.top_k, d.top_k), ("--threshold", self.threshold, d.threshold),
            ("--chunk-seconds", self.chunk_seconds, d.chunk_seconds), ("--out", self.out, d.out),
        ]), "--", *self.files]

    def command(self) -> str:
        return shlex.join(["weaksound", *self.argv()])
