#!/usr/bin/env bash
# Install MiniGLM on a fresh machine or an existing one (idempotent). Two profiles:
#   scripts/install.sh          the main job: every command of the pipeline, `miniglm demo` included
#                               (core + the `eval` extra for its report and plots); no test tools
#   scripts/install.sh dev      everything (all extras) plus the test and lint tools ([dev])
# torch is pinned to the CPU wheel first when missing: an unpinned `torch` would pull a multi-GB CUDA
# build. On a GPU machine, install the torch build you want before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
case "${1:-main}" in
  main) EXTRAS="eval" ;;
  dev) EXTRAS="dev" ;;
  *) echo "usage: scripts/install.sh [main|dev]   (main: run the pipeline; dev: also run the tests)" >&2; exit 2 ;;
esac
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e ".[$EXTRAS]"
# A CJK font makes Chinese text in plots legible (optional; plots still work without it).
if ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK" && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq fonts-noto-cjk) >/dev/null 2>&1 \
    || echo "note: could not install fonts-noto-cjk; Chinese labels in plots may render as boxes" >&2
fi
# The dev profile also needs a headless browser for the web-page tests (Playwright drives Debian's
# Chromium: `playwright install` would download a browser build, which offline machines cannot).
if [ "$EXTRAS" = dev ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser tests will be skipped" >&2
fi
echo "installed miniglm[$EXTRAS]; next: $([ "$EXTRAS" = dev ] && echo 'python3 -m pytest -q' || echo 'miniglm demo')"
