"""The one registry of sources: a typed spec per dataset layout, ``SOURCES[name]`` -> its spec class.

A spec holds a source's options (the ``weaksound prep SOURCE`` options, field for field), lists the
layout (``listings``) and renders itself back as command-line arguments (``argv``), so a prep run
built in code can be repeated from the shell. The prep job dispatches through ``SOURCES``; adding
a source means adding one spec class here.

Example:
    >>> spec = SOURCES["esc50"](root="ESC-50-master")
    >>> spec.argv()
    ['esc50', '--root', 'ESC-50-master']
    >>> SOURCES["synthetic"](task="events", seed=3).argv()
    ['synthetic', '--task', 'events', '--seed', '3']
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from collections.abc import Iterator
from dataclasses import MISSING, dataclass, fields
from typing import ClassVar

from data_prep.records import SourceListing
from data_prep.sources.audioset import load_audioset
from data_prep.sources.dcase2016 import load_dcase2016
from data_prep.sources.esc50 import load_esc50
from data_prep.sources.folder import load_folder
from data_prep.sources.synthetic import SYNTHETIC_TASKS, load_synthetic

__all__ = ["SOURCES", "AudiosetSource", "Dcase2016Source", "Esc50Source", "FolderSource", "SourceSpec",
           "SyntheticSource"]


@dataclass(frozen=True)
class SourceSpec(ABC):
    """Base of every source spec: ``name`` is the ``weaksound prep`` sub-command."""

    name: ClassVar[str] = ""

    @abstractmethod
    def listings(self, out: str) -> Iterator[tuple[SourceListing, str]]:
        """``(listing, output URL)`` for every dataset this source writes under ``out``."""

    def argv(self) -> list[str]:
        """``[name, --option, value, ...]``: every required option, and every other one not at its default."""
        argv = [self.name]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.default is not MISSING and value == f.default:
                continue
            argv += [f"--{f.name.replace('_', '-')}", str(value)]
        return argv


@dataclass(frozen=True)
class SyntheticSource(SourceSpec):
    """The embedded corpus; ``task="all"`` writes OUT/source, OUT/events and OUT/scenes."""

    name: ClassVar[str] = "synthetic"
    task: str = "all"
    num_clips: int | None = None  # clips per task; None = each task's built-in size
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task != "all" and self.task not in SYNTHETIC_TASKS:
            raise ValueError(f"synthetic task {self.task!r} is not one of all, {', '.join(SYNTHETIC_TASKS)}")

    def listings(self, out: str) -> Iterator[tuple[SourceListing, str]]:
        for task in (tuple(SYNTHETIC_TASKS) if self.task == "all" else (self.task,)):
            task_out = f"{out.rstrip('/')}/{task}" if self.task == "all" else out
            yield load_synthetic(task, num_clips=self.num_clips, seed=self.seed), task_out


@dataclass(frozen=True)
class Esc50Source(SourceSpec):
    name: ClassVar[str] = "esc50"
    root: str

    def listings(self, out: str) -> Iterator[tuple[SourceListing, str]]:
        yield load_esc50(self.root), out


@dataclass(frozen=True)
class Dcase2016Source(SourceSpec):
    name: ClassVar[str] = "dcase2016"
    root: str

    def listings(self, out: str) -> Iterator[tuple[SourceListing, str]]:
        yield load_dcase2016(self.root), out


@dataclass(frozen=True)
class AudiosetSource(SourceSpec):
    name: ClassVar[str] = "audioset"
    root: str
    split: str
    audio: str | None = None  # None: the first existing of ROOT/audio/SPLIT, ROOT/SPLIT, ROOT/audio, ROOT

    def listings(self, out: str) -> Iterator[tuple[SourceListing, str]]:
        yield load_audioset(self.root, self.split, audio_dir=self.audio), out


@dataclass(frozen=True)
class FolderSource(SourceSpec):
    name: ClassVar[str] = "folder"
    root: str
    csv: str

    def listings(self, out: str) -> Iterator[tuple[SourceListing, str]]:
        yield load_folder(self.root, self.csv), out


SOURCES: dict[str, type[SourceSpec]] = {cls.name: cls for cls in (
    SyntheticSource, Esc50Source, Dcase2016Source, AudiosetSource, FolderSource)}
