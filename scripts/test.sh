#!/usr/bin/env bash
# Quick start, command 2: set up .venv/ (with test extras and Debian's prometheus) and run the test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the end-to-end tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" test
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing Debian's prometheus (monitoring tests scrape real /metrics endpoints)"
        (apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
          || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends prometheus >/dev/null; }) \
          || echo "[setup] could not install prometheus; monitoring tests will be skipped with a reason"
    else
        echo "[setup] prometheus missing and not root: monitoring tests will be skipped with a reason"
    fi
fi
cd "$root"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
exec .venv/bin/python -m pytest "$@"
