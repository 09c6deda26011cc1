"""Helpers for the arena tests: tiny checkpoints, scripted contestants, a stdlib fake SSE server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from miniglm.checkpoint import save_checkpoint
from miniglm.config import ModelConfig
from miniglm.model.model import MiniGLM
from miniglm.serve.arena.contestants import Contestant, ContestantError, Settings
from miniglm.tokenizer import train_tokenizer

CORPUS = ["天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。", "问：你好\n答：你好！", "寒来暑往，秋收冬藏。"] * 3


def make_checkpoint(root: Path, name: str, seed: int) -> Path:
    """A run directory holding one random tiny checkpoint (2 layers, hidden 32)."""
    tok = train_tokenizer(CORPUS, vocab_size=300, min_frequency=2, show_progress=False)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, initializer_range=0.3)
    run = root / name
    save_checkpoint(run / "checkpoints" / "step_0000001", MiniGLM(cfg), tok, step=1, extra={"mode": "sft"})
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedContestant(Contestant):
    """Answers with fixed pieces, `delay` seconds apart; fails after `fail_after` pieces if set."""

    def __init__(self, name: str, pieces: Sequence[str], delay: float = 0.0, fail_after: int | None = None,
                 first_delay: float = 0.0):
        self.name, self.pieces, self.delay, self.fail_after, self.first_delay = name, list(pieces), delay, fail_after, first_delay
        self.calls: list[tuple[list, str, Settings]] = []

    def describe(self) -> str:
        return f"{self.name}: scripted"

    def stream(self, history, question, settings) -> Iterator[str]:
        self.calls.append((list(history), question, settings))
        time.sleep(self.first_delay)
        for i, piece in enumerate(self.pieces):
            if self.fail_after is not None and i == self.fail_after:
                raise ContestantError(f"{self.name} broke down")
            time.sleep(self.delay)
            yield piece


class _ChatHandler(BaseHTTPRequestHandler):
    """Serves FakeChatServer's routes; `self.server.owner` is the FakeChatServer."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        owner = self.server.owner
        owner.requests.append((self.path, dict(self.headers), None))
        if self.path == "/v1/models":
            return self._json(200, {"object": "list", "data": [{"id": owner.model, "object": "model"}]})
        self._json(404, {"error": {"message": "no such route", "type": "not_found"}})

    def do_POST(self):
        owner = self.server.owner
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        owner.requests.append((self.path, dict(self.headers), body))
        if owner.key and self.headers.get("Authorization") != f"Bearer {owner.key}":
            return self._json(401, {"error": {"message": "invalid api key", "type": "auth"}})
        question = body["messages"][-1]["content"]
        if question == "boom":
            return self._json(500, {"error": {"message": "model exploded", "type": "server_error"}})
        self._stream(question)

    def _stream(self, question: str):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, piece in enumerate(["你", "好", question]):
            chunk = {"id": "c1", "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(b": keep-alive\n\n" if i == 1 else b"")  # an SSE comment, to be ignored
            self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
            self.wfile.flush()
            if question == "slow" and i == 0:
                time.sleep(2.0)
        if question == "garbage":
            self.wfile.write(b"data: {not json\n\n")
        if question != "cut":
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _json(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeChatServer:
    """An OpenAI-style chat server on 127.0.0.1 whose behaviour depends on the last user message:
    "slow" pauses 2 s mid-stream, "boom" answers 500 with a JSON error, "garbage" sends a malformed
    chunk, "cut" ends without [DONE]; anything else streams "你", "好" and the question.
    Requests (path, headers, body) are kept in `requests`. `key`: the only Bearer key accepted."""

    def __init__(self, key: str | None = None, model: str = "fake-model"):
        self.key, self.model, self.requests = key, model, []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
        self.server.owner = self
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
