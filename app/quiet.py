"""Keep Ray's own chatter out of the terminal: one line per event of ours, Ray's lines in a log file.

Ray's C++ core writes warnings and errors straight to file descriptor 2 (e.g. the harmless
``core_worker.cc ... PreemptionWatcher`` line), which a newcomer reads as a failure. Inside
:func:`native_stderr_to`, descriptor 2 goes to a log file while Python's ``sys.stderr`` (progress bars,
our own messages) keeps writing to the terminal. Ray's Python log records in this process (the
``ray`` logger, whose handler writes to whatever ``sys.stderr`` is, e.g. ``ray.init``'s "Token
authentication is enabled" notice) go to the same log file inside :func:`ray_logs_to`. Worker output
is kept out with ``ensure_ray(log_to_driver=False)``; it stays in Ray's session logs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

__all__ = ["native_stderr_to", "ray_logs_to"]

RAY_LOG_FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"  # Ray's own


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


@contextlib.contextmanager
def ray_logs_to(log_path: str) -> Iterator[str]:
    """Append the records of Ray's ``ray`` logger in this process to ``log_path`` instead of the
    terminal for the block's duration (its handlers are put back afterwards).

    Enter it before :func:`native_stderr_to`: Ray's handler keeps the ``sys.stderr`` of the moment
    Ray is first imported, which must not be the stand-in that block closes at its end.
    """
    import ray  # noqa: F401 - importing Ray installs the handler replaced here

    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    ray_logger = logging.getLogger("ray")
    saved = list(ray_logger.handlers)
    with open(log_path, "a", buffering=1, encoding="utf-8", errors="backslashreplace") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter(RAY_LOG_FORMAT))
        ray_logger.handlers = [handler]
        try:
            yield log_path
        finally:
            ray_logger.handlers = saved
