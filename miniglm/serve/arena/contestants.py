"""Contestants: the models an arena pits against each other, each behind one streaming interface.

    [NAME=]RUN_OR_CHECKPOINT                       a local run/checkpoint, generated in this process
    [NAME=]URL[,model=ID][,key-env=VAR][,key-file=PATH]
                                                   an OpenAI-compatible server (`miniglm serve`,
                                                   llama.cpp, vLLM, ...): POST URL/v1/chat/completions
                                                   with "stream": true, read as server-sent events

    contestants = load_contestants(["alice=runs/sft", "bob=http://192.168.1.7:8000,model=sft"], cfg)
    for piece in contestants[0].stream(history=[(q1, a1)], question=q2, settings=Settings()): ...

The name defaults to the run directory's name, or to the remote model id, or to host:port. API keys
come from an environment variable or a file, never from the command line (it ends up in shell
history and `ps`). Without model=ID the first model the server lists at /v1/models is used.

Every failure of a contestant (refused connection, HTTP error, timeout, a malformed stream, a
missing checkpoint at generation time) is a `ContestantError` with a one-line message, which the
arena shows in that contestant's pane; it never takes the arena down.
Remote timeouts: `connect_timeout` to connect, `timeout` between two pieces of the stream, and
`answer_timeout` for the whole answer (a server that drips a byte a second cannot hold a battle).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from miniglm.config import SampleConfig
from miniglm.errors import UserError


class ContestantError(Exception):
    """A contestant could not answer; the message is shown in its pane."""


class ContestantSpecError(UserError, ValueError):
    """A contestant argument that cannot be understood."""


@dataclass
class Settings:
    """The shared sampling controls of a battle (both contestants get the same)."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 200
    seed: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ContestantSpec:
    name: str
    target: str  # a path, or a base URL
    model: str | None = None  # remote model id
    key_env: str | None = None
    key_file: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.target.startswith(("http://", "https://"))


def parse_contestant(spec: str) -> ContestantSpec:
    """`[NAME=]TARGET[,model=ID][,key-env=VAR][,key-file=PATH]` (options for URLs only)."""
    head, *opts = spec.split(",")
    name, sep, target = head.partition("=")
    if not sep or name.startswith(("http://", "https://")) or "/" in name:  # no NAME= given
        name, target = "", head
    if not target:
        raise ContestantSpecError(f"contestant {spec!r}: expected [NAME=]RUN_DIR or [NAME=]URL")
    out = ContestantSpec(name.strip(), target.strip())
    for opt in opts:
        key, _, value = opt.partition("=")
        field = {"model": "model", "key-env": "key_env", "key-file": "key_file"}.get(key.strip())
        if field is None or not value:
            raise ContestantSpecError(f"contestant {spec!r}: unknown option {opt!r} "
                                      "(options: model=ID, key-env=VAR, key-file=PATH)")
        setattr(out, field, value.strip())
    if opts and not out.is_remote:
        raise ContestantSpecError(f"contestant {spec!r}: model=/key-env=/key-file= apply to URLs only")
    if out.is_remote and not urlsplit(out.target).netloc:
        raise ContestantSpecError(f"contestant {spec!r}: {out.target!r} is not a URL with a host")
    if not out.name:
        out.name = out.model or (urlsplit(out.target).netloc if out.is_remote else Path(out.target).resolve().name)
    return out


class Contestant:
    """One model that answers a question after a history, streaming text pieces."""

    name: str

    def aliases(self) -> list[str]:
        """Names an answer could reveal this contestant by (for the anonymity check)."""
        return [self.name]

    def describe(self) -> str:
        raise NotImplementedError

    def stream(self, history: Sequence[tuple[str, str]], question: str, settings: Settings) -> Iterator[str]:
        raise NotImplementedError


class LocalContestant(Contestant):
    """A checkpoint generated in this process through `miniglm.generate.text` (the engine)."""

    def __init__(self, name: str, loaded, cfg: SampleConfig):
        self.name, self.loaded, self.cfg = name, loaded, cfg

    def describe(self) -> str:
        return f"{self.name}: local checkpoint {self.loaded.path} (step {self.loaded.meta.get('step')})"

    def stream(self, history: Sequence[tuple[str, str]], question: str, settings: Settings) -> Iterator[str]:
        from miniglm.generate.text import stream_answer

        try:
            cfg = dataclasses.replace(self.cfg, temperature=settings.temperature, top_p=settings.top_p,
                                      max_new_tokens=settings.max_new_tokens, seed=settings.seed)
        except UserError as e:  # a control out of range (the config checks it)
            raise ContestantError(str(e)) from None
        pieces = stream_answer(self.loaded.model, self.loaded.tokenizer, question, cfg, history=list(history))
        try:
            yield from pieces
        finally:
            pieces.close()  # the battle was abandoned: stop generating


class RemoteContestant(Contestant):
    """An OpenAI-compatible chat endpoint, streamed with httpx."""

    def __init__(self, name: str, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, connect_timeout: float = 5.0, answer_timeout: float = 120.0):
        base = base_url.rstrip("/")
        self.base = base[:-3] if base.endswith("/v1") else base  # accept .../v1 as clients write it
        self.name, self.model, self.api_key = name, model, api_key
        self.timeout, self.connect_timeout, self.answer_timeout = timeout, connect_timeout, answer_timeout

    def aliases(self) -> list[str]:
        return [self.name] + ([self.model] if self.model else [])

    def describe(self) -> str:
        return f"{self.name}: {self.base}/v1 (model {self.model or 'the first one it lists'})"

    def _client(self):
        httpx = _httpx()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout)
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def _model_id(self, client) -> str:
        if self.model is None:
            resp = client.get("/v1/models")
            _raise_for_status(resp)
            try:
                self.model = resp.json()["data"][0]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise ContestantError(f"{self.base}/v1/models lists no model; give one with model=ID") from None
        return self.model

    def stream(self, history: Sequence[tuple[str, str]], question: str, settings: Settings) -> Iterator[str]:
        httpx = _httpx()
        messages = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        messages.append({"role": "user", "content": question})
        try:
            with self._client() as client:
                body = {"model": self._model_id(client), "messages": messages, "stream": True,
                        "temperature": settings.temperature, "top_p": settings.top_p,
                        "max_tokens": settings.max_new_tokens, "seed": settings.seed}
                with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for_status(resp)
                    yield from self._pieces(resp.iter_lines(), time.monotonic() + self.answer_timeout)
        except httpx.TimeoutException as e:
            raise ContestantError(f"timed out ({type(e).__name__}) talking to {self.base}") from None
        except httpx.HTTPError as e:
            raise ContestantError(f"cannot reach {self.base}: {e or type(e).__name__}") from None

    def _pieces(self, lines: Iterator[str], deadline: float) -> Iterator[str]:
        """Text deltas of an SSE chat-completion stream, until [DONE]."""
        for line in lines:
            if time.monotonic() > deadline:
                raise ContestantError(f"answer took longer than {self.answer_timeout:g} s; stopped")
            if not line.startswith("data:"):
                continue  # blank separators, comments (": ping"), event:/id: fields
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
                if "error" in chunk:
                    raise ContestantError(f"server error mid-stream: {_message(chunk)}")
                choice = chunk["choices"][0] if chunk.get("choices") else {}
                piece = (choice.get("delta") or {}).get("content")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ContestantError(f"malformed stream from {self.base}: {data[:80]!r}") from None
            if piece:
                yield piece
        raise ContestantError(f"{self.base} closed the stream before [DONE]")


def _httpx():
    from miniglm.extras import require

    return require("httpx", "serve")


def _message(payload) -> str:
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err or payload.get("detail") or payload) if isinstance(payload, dict) else str(payload)


def _raise_for_status(resp) -> None:
    if resp.status_code < 400:
        return
    try:
        detail = _message(resp.json())
    except ValueError:
        detail = resp.text.strip()[:200] or resp.reason_phrase
    raise ContestantError(f"HTTP {resp.status_code} from {resp.request.url}: {detail}")


def _api_key(spec: ContestantSpec) -> str | None:
    if spec.key_env:
        if not os.environ.get(spec.key_env):
            raise ContestantSpecError(f"contestant {spec.name}: environment variable {spec.key_env} is not set")
        return os.environ[spec.key_env]
    if spec.key_file:
        try:
            return Path(spec.key_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ContestantSpecError(f"contestant {spec.name}: cannot read key file {spec.key_file} "
                                      f"({e.strerror})") from None
    return None


def load_contestants(specs: Sequence[str], cfg: SampleConfig, timeout: float = 30.0,
                     answer_timeout: float = 120.0) -> list[Contestant]:
    """Contestants for the command-line specs; local checkpoints are loaded now (once per path)."""
    from miniglm.generate.text import load_for_generation

    parsed = [parse_contestant(s) for s in specs]
    names = [p.name for p in parsed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ContestantSpecError(f"two contestants are named {', '.join(dupes)}; name them: NAME=RUN_DIR or NAME=URL")
    loaded: dict[Path, object] = {}
    out: list[Contestant] = []
    for p in parsed:
        if p.is_remote:
            out.append(RemoteContestant(p.name, p.target, p.model, _api_key(p), timeout=timeout,
                                        answer_timeout=answer_timeout))
            continue
        key = Path(p.target).resolve()
        if key not in loaded:
            loaded[key] = load_for_generation(p.target, cfg)
        out.append(LocalContestant(p.name, loaded[key], cfg))
    return out
