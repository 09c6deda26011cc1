#!/usr/bin/env bash
# Install MiniGLM and everything its tests need, on a fresh machine or an existing one (idempotent).
# torch is pinned to the CPU wheel first when missing: an unpinned `torch` would pull a multi-GB CUDA
# build. On a GPU machine, install the torch build you want before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e ".[dev]"
# A CJK font makes Chinese text in plots legible (optional; plots still work without it).
if ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK" && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq fonts-noto-cjk) >/dev/null 2>&1 \
    || echo "note: could not install fonts-noto-cjk; Chinese labels in plots may render as boxes" >&2
fi
