#!/usr/bin/env bash
# Idempotent set-up: creates .venv/ at the repository root and installs the project into it.
# Re-runs are cheap: the install is skipped while pyproject.toml is unchanged since the last one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${1:-}"   # "" for the main job, "test" for the test suite
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($python_bin --version)"
    "$python_bin" -m venv .venv
fi
stamp=".venv/.weaksound-installed${extras:+-$extras}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing weaksound${extras:+[$extras]} into .venv (first time: ~2 minutes)"
    # torch's CUDA wheels and (for the hear extra) TensorFlow make a full .venv about 9 GB; say so up front
    # rather than leave the reader with pip's bare "No space left on device" halfway through.
    free_gb=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1024 / 1024 ))
    if [ "$free_gb" -lt 9 ]; then
        echo "[setup] warning: $free_gb GB free on $(df -P . | awk 'NR==2 {print $6}'); a full .venv needs about 9 GB" >&2
    fi
    # Quiet, but never hide an error: drop only pip's notes about find-links folders that this machine's
    # pip config names and that do not exist, and setuptools' advisory about editable flat layouts.
    quiet_stderr() { grep -v "^WARNING: Location '.*' is ignored" >&2 || true; }
    export PYTHONWARNINGS="ignore::UserWarning"
    { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 1>&3 3>&- \
        | quiet_stderr; } 3>&1 >/dev/null
    { .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}" 2>&1 1>&3 3>&- \
        | quiet_stderr; } 3>&1
    echo "$want" > "$stamp"
fi
