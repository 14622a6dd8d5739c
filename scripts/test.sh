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
# torchcodec (the FFmpeg fallback for m4a/aac, webm, mp4) loads the system's FFmpeg 5.1 shared libraries.
ffmpeg_libs="libavcodec59 libavformat59 libavutil57 libswresample4 libswscale6 libavfilter8 libavdevice59"
ldconfig_bin="$(command -v ldconfig || echo /sbin/ldconfig)"
if ! "$ldconfig_bin" -p 2>/dev/null | grep 'libavutil\.so\.57 ' >/dev/null; then  # no grep -q: pipefail + SIGPIPE
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing Debian's FFmpeg libraries (decoding m4a/aac, webm, mp4 through torchcodec)"
        # shellcheck disable=SC2086
        (apt-get install -y --no-install-recommends $ffmpeg_libs >/dev/null 2>&1 \
          || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends $ffmpeg_libs >/dev/null; }) \
          || echo "[setup] could not install FFmpeg libraries ($ffmpeg_libs); FFmpeg decoding tests will fail"
    else
        echo "[setup] FFmpeg libraries missing and not root (need: apt-get install $ffmpeg_libs):" \
             "FFmpeg decoding tests will be skipped with a reason"
    fi
fi
cd "$root"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
exec .venv/bin/python -m pytest "$@"
