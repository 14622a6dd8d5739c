"""Keep Ray's own chatter out of the terminal: one line per event of ours, Ray's lines in a log file.

Ray's C++ core writes warnings and errors straight to file descriptor 2 (e.g. the harmless
``core_worker.cc ... PreemptionWatcher`` line), which a newcomer reads as a failure. Inside
:func:`native_stderr_to`, descriptor 2 goes to a log file while Python's ``sys.stderr`` (progress bars,
our own messages) keeps writing to the terminal. Worker output is kept out with
``ensure_ray(log_to_driver=False)``; it stays in Ray's session logs.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["native_stderr_to"]


@contextlib.contextmanager
def native_stderr_to(log_path: str) -> Iterator[str]:
    """Send descriptor 2 (native code's stderr) to ``log_path`` (appended) for the block's duration."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    sys.stderr.flush()
    terminal = os.dup(2)
    log = open(log_path, "ab", buffering=0)
    python_stderr = sys.stderr
    try:
        os.dup2(log.fileno(), 2)
        sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=python_stderr.encoding or "utf-8",
                               errors="backslashreplace")
        yield log_path
    finally:
        sys.stderr.flush()
        replaced, sys.stderr = sys.stderr, python_stderr
        os.dup2(terminal, 2)
        os.close(terminal)
        replaced.close()
        log.close()
