"""Real `miniglm serve` processes on tiny checkpoints, shared by the serve tests.

Two servers start together (in parallel: most of their start-up is importing torch and gradio):
- `main_server`: models "alpha" and "beta" (context 64), an API key, the web page, greedy by
  default (--temperature 0 --max_new_tokens 12, so answers equal `miniglm sample --temperature 0`);
- `small_server`: model "long" (context 4096, so one generation lasts seconds), no key,
  --max-batch 1 --max-queue 1: for the queue limit and client disconnects.
Each server process runs torch on one thread, like the tests themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import GREEDY_FLAGS, KEY, Server, make_checkpoint, start, stop, wait_ready


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve_runs")
    return {"alpha": make_checkpoint(root, "alpha", seed=0), "beta": make_checkpoint(root, "beta", seed=1),
            "long": make_checkpoint(root, "long", seed=2, context=4096, never_ends=True)}


@pytest.fixture(scope="session")
def servers(serve_runs, tmp_path_factory):
    keyfile = tmp_path_factory.mktemp("key") / "key.txt"
    keyfile.write_text(KEY + "\n", encoding="utf-8")
    runs = serve_runs
    main = start([f"alpha={runs['alpha']}", f"beta={runs['beta']}", "--api-key-file", str(keyfile), "--ui",
                  *GREEDY_FLAGS], KEY, {"alpha": runs["alpha"], "beta": runs["beta"]})
    small = start([f"long={runs['long']}", "--max-batch", "1", "--max-queue", "1", *GREEDY_FLAGS], None,
                  {"long": runs["long"]})
    try:
        wait_ready(main)
        wait_ready(small)
        yield {"main": main, "small": small}
    finally:
        stop(main)
        stop(small)


@pytest.fixture(scope="session")
def main_server(servers) -> Server:
    return servers["main"]


@pytest.fixture(scope="session")
def small_server(servers) -> Server:
    return servers["small"]
