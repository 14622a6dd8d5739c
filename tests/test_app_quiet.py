"""app.quiet: native writes to descriptor 2 land in the log file, Python's stderr still reaches the terminal."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_native_stderr_goes_to_the_log_and_python_stderr_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "ray.log"
    script = textwrap.dedent(f"""
        import os, sys
        from app.quiet import native_stderr_to
        with native_stderr_to({str(log)!r}):
            os.write(2, b"core_worker.cc: native chatter\\n")
            print("ours: progress", file=sys.stderr)
        os.write(2, b"after: native again on the terminal\\n")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "ours: progress" in done.stderr
    assert "after: native again on the terminal" in done.stderr
    assert "core_worker.cc" not in done.stderr
    assert log.read_text() == "core_worker.cc: native chatter\n"
