"""The judge's HTTP side: one OpenAI-compatible chat endpoint, asked many prompts, robustly and once.

    client = JudgeClient(Endpoint("http://127.0.0.1:8080/v1", "glm-4-flash", key=...), ReplyCache(dir))
    replies = client.ask_many(prompts)          # -> [Reply], in the order of `prompts`

Owns:
- the request: POST {url}/chat/completions, one user message, temperature 0, `max_tokens`,
  `Authorization: Bearer KEY` when a key is given (the key is never stored or printed);
- concurrency: at most `concurrency` requests in flight (threads over one httpx.Client); the same
  prompt asked twice in one call is sent once;
- failures: a request that times out, cannot connect, or gets 408/429/5xx is retried up to
  `retries` times, waiting `backoff * 2**attempt` seconds (plus up to 25% jitter) or what the
  server's Retry-After says, at most `max_wait`. 401/403/404 mean a wrong key, URL or model and
  stop the whole run (JudgeError); another 4xx, a malformed body, or retries exhausted fail only
  that prompt (Reply.error), which the caller counts and shows;
- the cache: one JSON file per reply under `cache/<k[:2]>/<k>.json`, k = sha256 of (URL, model,
  request body), written to a temporary file and renamed, so a rerun with the same judge and
  prompts sends nothing and a killed run keeps every reply it finished;
- usage: requests sent, cache hits, retries, failures, and the `usage` tokens the judge reported,
  separately for replies paid for in this run and replies read from the cache.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from miniglm.errors import UserError
from miniglm.extras import require
from miniglm.io import atomic_write

RETRY_STATUS = {408, 429}  # plus every 5xx
FATAL_STATUS = {401: "check the key (--judge-key-env / --judge-key-file)",
                403: "check the key and its permissions", 404: "check --judge-url and --judge-model"}


class JudgeError(UserError, RuntimeError):
    """The judge cannot be used at all (bad URL, key or model): the run stops with one line."""


def chat_url(url: str) -> str:
    """`.../v1` or `.../v1/chat/completions` -> the chat-completions URL."""
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise JudgeError(f"--judge-url must start with http:// or https://, got {url!r}")
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


@dataclass
class Endpoint:
    url: str  # base URL (…/v1) or the full chat-completions URL
    model: str  # the judge's model id on that server
    key: str | None = field(default=None, repr=False)
    max_tokens: int = 1024  # room for the reasoning before the verdict
    timeout: float = 120.0  # seconds per request
    retries: int = 4  # extra attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubled each time
    max_wait: float = 60.0  # longest single wait, Retry-After included
    concurrency: int = 4  # requests in flight at once

    def __post_init__(self) -> None:
        self.url = chat_url(self.url)
        if not self.model.strip():
            raise JudgeError("--judge-model must name the judge's model")
        for name in ("max_tokens", "timeout", "concurrency"):
            if getattr(self, name) <= 0:
                raise JudgeError(f"judge {name} must be > 0, got {getattr(self, name)}")
        if self.retries < 0 or self.backoff < 0 or self.max_wait < 0:
            raise JudgeError("judge retries, backoff and max_wait must be >= 0")

    def body(self, prompt: str) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": self.max_tokens, "stream": False}


@dataclass
class Reply:
    content: str | None  # the judge's text; None when the request failed
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cached: bool = False


class ReplyCache:
    """Replies on disk, one file per key; `root=None` caches nothing."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    @staticmethod
    def key(url: str, body: dict[str, Any]) -> str:
        blob = json.dumps({"url": url, "body": body}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        try:
            record = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent, or unreadable: ask again and overwrite it
            return None
        return record if isinstance(record, dict) and isinstance(record.get("content"), str) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(record, ensure_ascii=False))  # a kill never leaves half an entry


class _Failed(Exception):
    """One prompt failed for good; the message goes into its Reply."""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content(response: Any) -> tuple[str, dict[str, int]]:
    """choices[0].message.content and usage of a chat-completions body; _Failed if it is not one."""
    try:
        data = response.json()
        message = data["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Failed(f"HTTP 200 but not a chat completion: {response.text[:200]!r}") from None
    content = message.get("content") if isinstance(message, dict) else None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    tokens = {k: int(usage[k]) for k in ("prompt_tokens", "completion_tokens")
              if isinstance(usage.get(k), (int, float))}
    return content if isinstance(content, str) else "", tokens


class JudgeClient:
    def __init__(self, endpoint: Endpoint, cache: ReplyCache, progress: bool = False):
        self.endpoint = endpoint
        self.cache = cache
        self.progress = progress
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "failed": 0,
                      "prompt_tokens": 0, "completion_tokens": 0,
                      "cached_prompt_tokens": 0, "cached_completion_tokens": 0}

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                self.stats[k] += v

    def ask_many(self, prompts: list[str], desc: str = "judging") -> list[Reply]:
        """Replies to `prompts`, in order; each distinct prompt is asked (or read from the cache) once."""
        ep = self.endpoint
        keys = [ReplyCache.key(ep.url, ep.body(p)) for p in prompts]
        unique = dict(zip(keys, prompts))
        replies: dict[str, Reply] = {}
        httpx = require("httpx", "serve")
        headers = {"Authorization": f"Bearer {ep.key}"} if ep.key else {}
        timeout = httpx.Timeout(ep.timeout, connect=min(ep.timeout, 10.0))
        with httpx.Client(timeout=timeout, headers=headers) as http, \
                ThreadPoolExecutor(max_workers=ep.concurrency) as pool:
            futures = {pool.submit(self._ask, http, key, prompt): key for key, prompt in unique.items()}
            try:
                for fut in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not self.progress):
                    replies[futures[fut]] = fut.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # a fatal answer: send nothing more
                raise
        return [replies[k] for k in keys]

    def _ask(self, http: Any, key: str, prompt: str) -> Reply:
        hit = self.cache.get(key)
        if hit is not None:
            usage = {k: int(v) for k, v in (hit.get("usage") or {}).items() if isinstance(v, int)}
            self._count(cache_hits=1, cached_prompt_tokens=usage.get("prompt_tokens", 0),
                        cached_completion_tokens=usage.get("completion_tokens", 0))
            return Reply(hit["content"], usage=usage, cached=True)
        body = self.endpoint.body(prompt)
        try:
            content, usage = self._post(http, body)
        except _Failed as e:
            self._count(failed=1)
            return Reply(None, error=str(e))
        self._count(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0))
        self.cache.put(key, {"url": self.endpoint.url, "model": self.endpoint.model, "prompt": prompt,
                             "content": content, "usage": usage, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return Reply(content, usage=usage)

    def _post(self, http: Any, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        """One prompt's request with its retries: (content, usage), or _Failed / JudgeError."""
        httpx = require("httpx", "serve")
        ep = self.endpoint
        problem = ""
        for attempt in range(ep.retries + 1):
            wait = None
            try:
                self._count(requests=1)
                r = http.post(ep.url, json=body)
            except httpx.TimeoutException:
                problem = f"no answer within {ep.timeout:g} s"
            except httpx.TransportError as e:
                problem = f"cannot reach {ep.url} ({type(e).__name__}: {e})"
            else:
                if r.status_code == 200:
                    return _content(r)
                excerpt = f"HTTP {r.status_code}: {r.text[:200]!r}"
                if r.status_code in FATAL_STATUS:
                    raise JudgeError(f"the judge at {ep.url} answered {excerpt}; {FATAL_STATUS[r.status_code]}")
                if r.status_code not in RETRY_STATUS and r.status_code < 500:
                    raise _Failed(excerpt)  # the server refused this prompt: asking again changes nothing
                problem, wait = excerpt, _retry_after(r.headers.get("retry-after"))
            if attempt < ep.retries:
                if wait is None:
                    wait = ep.backoff * 2 ** attempt * (1 + 0.25 * random.random())
                self._count(retries=1)
                time.sleep(min(wait, ep.max_wait))
        n = ep.retries + 1
        raise _Failed(f"{problem} (after {n} attempt{'s' if n > 1 else ''})")
