"""Helpers for the serve tests: tiny checkpoints, and real `miniglm serve` processes with a client
for each (the session fixtures in conftest.py start them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from miniglm.checkpoint import save_checkpoint
from miniglm.config import ModelConfig
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer, train_tokenizer

CORPUS = ["天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。", "问：你好\n答：你好！", "寒来暑往，秋收冬藏。"] * 3
KEY = "sk-test-0123456789"
GREEDY_FLAGS = ["--temperature", "0", "--max_new_tokens", "12", "--device", "cpu", "--dtype", "float32",
                "--threads", "1"]


def make_checkpoint(root: Path, name: str, seed: int = 0, context: int = 64, never_ends: bool = False) -> Path:
    """A run directory holding one random tiny checkpoint (2 layers, hidden 32) and its tokenizer.

    never_ends: zero the end-of-text embedding row; the head is tied, so that token's logit is 0
    while some of the other ~300 random logits is positive at every step: greedy never ends early.
    """
    tok = train_tokenizer(CORPUS, vocab_size=300, min_frequency=2, show_progress=False)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=context, initializer_range=0.3)
    model = MiniGLM(cfg)
    if never_ends:
        with torch.no_grad():
            model.model.embed_tokens.weight[tok.eot_id].zero_()
    run = root / name
    save_checkpoint(run / "checkpoints" / "step_0000001", model, tok, step=1, extra={"mode": "sft"})
    return run


def tokenizer_of(run: Path) -> Tokenizer:
    return Tokenizer.from_file(run / "checkpoints" / "step_0000001" / "tokenizer.json")


@dataclass
class Server:
    proc: subprocess.Popen
    key: str | None
    runs: dict[str, Path]
    output: list[str] = field(default_factory=list)  # what the process printed so far
    url: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.key or "unused", max_retries=0, timeout=60, **kw)

    def async_client(self, **kw):
        import openai

        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=self.key or "unused", max_retries=0,
                                  timeout=60, **kw)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60)

    def stats(self, model: str) -> dict[str, int]:
        return httpx.get(self.url + "/health", timeout=10).json()["models"][model]

    def log(self) -> str:
        return "".join(self.output)


def start(args: list[str], key: str | None, runs: dict[str, Path]) -> Server:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "miniglm", "serve", *args, "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8")
    server = Server(proc, key, runs)

    def drain() -> None:  # keep reading, so a chatty server never blocks on a full pipe
        for line in proc.stdout:
            server.output.append(line)

    threading.Thread(target=drain, daemon=True).start()
    return server


def wait_ready(server: Server, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"miniglm serve exited with {server.proc.returncode}:\n{server.log()}")
        found = re.search(r"listening on (http://\S+:\d+)", server.log())
        if found and not server.url:
            server.url = found.group(1)
        if server.url:
            try:
                if httpx.get(server.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"miniglm serve not ready after {timeout} s:\n{server.log()}")


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


