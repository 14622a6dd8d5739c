"""The clip log: an audit of which clips every rank trained on at every step (``--clip-log``).

Each rank appends one JSON line per optimizer step to ``<run_dir>/clip_log/rank<r>.jsonl``::

    {"epoch": 1, "step_in_epoch": 7, "start": 0, "rank": 1, "clip_ids": ["clip0042", ...]}

``start`` counts worker-group starts (0, then 1 after the first restart, ...). Steps trained
after a run's last checkpoint and before a failure stay in the log, and the restart logs those
steps again under the next ``start``: :func:`effective_steps` keeps, for every (epoch, rank,
step), the record of the latest start, i.e. what the finished run's weights actually learned
from. A line torn by a kill mid-write is ended by the next start and skipped on reading.

Local run folders only (each node's ranks write to that node's disk): on ``s3://`` appending
is not an operation, and an object per step would cost a request per step.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from runtime import storage

__all__ = ["ClipLog", "CLIP_LOG_DIR", "read_clip_log", "effective_steps"]

CLIP_LOG_DIR = "clip_log"


class ClipLog:
    """One rank's appender (line-buffered: a killed rank loses at most the line being written)."""

    def __init__(self, run_dir: str, *, rank: int, start: int):
        if storage.is_remote(run_dir):
            raise ValueError(f"clip_log needs a local run folder, not {run_dir}: run with a local --out, "
                             "or without --clip-log")
        folder = Path(storage.local_path(run_dir)) / CLIP_LOG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"rank{rank}.jsonl"
        self.rank, self.start = rank, start
        torn = False
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")
        if torn:  # a kill mid-write left a partial line: end it, so this start's first record stands alone
            self._file.write("\n")

    def write(self, *, epoch: int, step_in_epoch: int, clip_ids: list[str]) -> None:
        """Step ``step_in_epoch`` (0-based) of ``epoch`` trained on ``clip_ids``."""
        self._file.write(json.dumps({"epoch": epoch, "step_in_epoch": step_in_epoch, "start": self.start,
                                     "rank": self.rank, "clip_ids": list(clip_ids)}) + "\n")

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def read_clip_log(run_dir: str) -> list[dict]:
    """Every record of every rank, in file order per rank; lines torn by a kill mid-write (not
    JSON objects) are skipped."""
    folder = Path(storage.local_path(run_dir)) / CLIP_LOG_DIR
    records = []
    for path in sorted(folder.glob("rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn by a kill; the step it described was redone after the restart
    return records


def effective_steps(records: list[dict]) -> dict[tuple[int, int, int], dict]:
    """``(epoch, rank, step_in_epoch) -> record`` of the latest start that ran that step."""
    out: dict[tuple[int, int, int], dict] = {}
    for r in records:
        key = (r["epoch"], r["rank"], r["step_in_epoch"])
        if key not in out or r["start"] >= out[key]["start"]:
            out[key] = r
    return out
