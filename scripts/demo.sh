#!/usr/bin/env bash
# Quick start, command 1: set up .venv/ and run the main job end to end on the embedded synthetic corpus.
# Extra arguments go to `weaksound demo` (see `weaksound demo --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
# The local Ray the demo starts uses token authentication (the token is created in ~/.ray/auth_token).
exec .venv/bin/weaksound demo "$@"
