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


def test_ray_start_up_notices_go_to_the_log_and_only_our_lines_reach_the_terminal(tmp_path):
    """A local Ray started as the demo starts it (token auth by default) says nothing on the terminal."""
    import os

    log = tmp_path / "logs" / "ray-native.log"
    script = textwrap.dedent(f"""
        import sys
        from app.quiet import native_stderr_to, ray_logs_to
        from runtime.ray_cluster import ensure_ray
        assert "ray" not in sys.modules  # as in the demo, Ray is first imported by these blocks
        with ray_logs_to({str(log)!r}), native_stderr_to({str(log)!r}):
            ensure_ray(num_cpus=1, log_to_driver=False)
            import ray
            print("ours: ray is up", file=sys.stderr)
            ray.shutdown()
        print("ours: done")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_AUTH_TOKEN",
                                                            "RAY_AUTH_TOKEN_PATH")}
    env["HOME"] = str(tmp_path / "home")  # the token Ray generates lands here, not in the user's home
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env,
                          timeout=300)
    assert done.stderr.strip() == "ours: ray is up"
    assert done.stdout.strip() == "ours: done"
    assert "Token authentication is enabled" in log.read_text()
