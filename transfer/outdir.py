"""The results folder of one `weaksound transfer` run: local, or staged locally and uploaded to S3.

Every writer in ``transfer/`` (``results.write_results``, ``plots.*``) writes local files, each
atomically (temporary name + rename). For an ``s3://`` destination the files are written into a
temporary local folder and ``publish()`` uploads each one with a single PUT
(``runtime.storage.write_bytes_atomic``), so a reader of the bucket never sees half a file::

    with ResultsDir("s3://bucket/runs/esc50") as out:
        write_results(out.path, rows, command)        # out.path is a local folder
        out.write_text("notes.md", "...")
    # on a clean exit every file is uploaded; the staging folder is removed
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from runtime import storage

__all__ = ["ResultsDir"]


class ResultsDir:
    """A local working folder for results, mirrored to ``url`` when that is remote.

    Args:
        url: a local folder or ``s3://bucket/prefix``.
    """

    def __init__(self, url: str):
        self.url = url
        self.remote = storage.is_remote(url)
        if self.remote:
            self._staging = tempfile.mkdtemp(prefix="weaksound-transfer-")
            self.path = Path(self._staging)
        else:
            self._staging = None
            self.path = Path(storage.local_path(url))
            self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        """Local path of ``name`` (parent folders created)."""
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` to ``name`` atomically (temporary name, then rename)."""
        p = self.file(name)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        return p

    def files(self) -> list[str]:
        """Relative names of every finished file (temporary files excluded), sorted."""
        out = []
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                out.append(p.relative_to(self.path).as_posix())
        return out

    def publish(self) -> list[str]:
        """Upload every file to ``url`` (remote only); returns the destination URLs."""
        if not self.remote:
            return [str(self.path / n) for n in self.files()]
        urls = []
        for name in self.files():
            dest = storage.join(self.url, *name.split("/"))
            storage.write_bytes_atomic(dest, (self.path / name).read_bytes())
            urls.append(dest)
        return urls

    def close(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def __enter__(self) -> ResultsDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.publish()
        finally:
            self.close()
