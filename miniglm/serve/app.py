"""The OpenAI-compatible HTTP API over the batch schedulers of the served models.

    app = create_app(registry, ServerSettings(api_key="..."))     # run with uvicorn (miniglm serve)

Routes: GET /health (503 while loading, 200 when ready; per-model counters), GET /v1/models,
GET /v1/models/{id}, POST /v1/chat/completions, POST /v1/completions (`stream: true` answers as
server-sent events: every chunk has the request's id, the first chat chunk carries the role, the
last one the finish_reason, an optional usage chunk follows, then `data: [DONE]`).

Guarding (`Guard`, one ASGI middleware in front of everything): with an API key, every route but
/health needs `Authorization: Bearer KEY` (compared in constant time; the web page under its own
path asks for the same key on a login form instead, since a browser cannot send the header); a
body over `max_body_bytes` is refused with 413 before it is read. Errors are OpenAI-style JSON
(`protocol.ApiError`), bad input is a 4xx and never reaches the model; nothing is served from disk.

Defaults for the sampling fields a request leaves out come from `ServerSettings.defaults` (the
`SampleConfig` of `miniglm serve`, as for `miniglm sample`); a request without `seed` gets a fresh
random one (as OpenAI: two such requests differ). Without `max_tokens` an answer is bounded by the
default max_new_tokens and by the room left in the context; an explicit `max_tokens` that does not
fit next to the prompt is a 400, as is a prompt that leaves no room at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from miniglm.config import SampleConfig
from miniglm.serve import protocol
from miniglm.serve.models import Registry, ServedModel
from miniglm.serve.protocol import ApiError, ChatFormat, CompletionFormat
from miniglm.serve.scheduler import Failed, Finished, Job, Piece, QueueFull


@dataclass
class ServerSettings:
    api_key: str | None = None  # None: no key asked (only allowed on 127.0.0.1 unless --no-auth)
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    defaults: SampleConfig = field(default_factory=SampleConfig)  # for fields a request leaves out
    ui_path: str | None = None  # where the web page is mounted (it asks for the key itself)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: API key and body size, before any route runs."""

    def __init__(self, app, settings: ServerSettings):
        self.app, self.settings = app, settings
        self.key = settings.api_key.encode() if settings.api_key else None

    def _exempt(self, path: str) -> bool:
        ui = self.settings.ui_path
        return path == "/health" or bool(ui and (path == "/" or path == ui or path.startswith(ui + "/")))

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key is not None and not self._exempt(scope["path"]) and not self._authorized(headers):
            given = b"authorization" in headers
            error = ApiError(401, "invalid API key" if given else
                             "missing API key: send the header 'Authorization: Bearer <key>'", "invalid_api_key")
            response = _json(401, error.body(), {"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.settings.max_body_bytes:
            error = ApiError(413, f"request body over {self.settings.max_body_bytes} bytes" if length.isdigit()
                             else "bad Content-Length header", "body_too_large")
            return await _json(413 if length.isdigit() else 400, error.body())(scope, receive, send)
        return await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (a chunked body has no Content-Length to check first)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over {limit} bytes", "body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(registry: Registry, settings: ServerSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(registry.close)  # open streams end with an error event

    # no /docs, /redoc or /openapi.json: they would load scripts from a CDN and add routes to guard
    app = FastAPI(title="MiniGLM", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, settings=settings)
    _add_error_handlers(app)
    api = _Api(registry, settings)
    app.add_api_route("/health", api.health, methods=["GET"])
    app.add_api_route("/v1/models", api.list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", api.get_model, methods=["GET"])
    app.add_api_route("/v1/chat/completions", api.chat, methods=["POST"])
    app.add_api_route("/v1/completions", api.complete, methods=["POST"])
    if settings.ui_path:
        app.add_api_route("/", lambda: RedirectResponse(settings.ui_path + "/"), methods=["GET"])
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return _json(e.status, e.body())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        message = "no such route" if e.status_code == 404 else str(e.detail)
        body = protocol.error_body(f"{message}: {request.method} {request.url.path}", "invalid_request_error",
                                   "not_found" if e.status_code == 404 else None)
        return _json(e.status_code, body, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):  # Starlette re-raises it: uvicorn logs the traceback
        return _json(500, protocol.error_body(f"internal error: {type(e).__name__}", "server_error"))


class _Api:
    """The route handlers, bound to one registry and its settings."""

    def __init__(self, registry: Registry, settings: ServerSettings):
        self.registry, self.settings = registry, settings

    async def health(self) -> JSONResponse:
        r = self.registry  # no key needed here: counts only, no paths or error details
        body = {"status": r.state, "models": {m.id: m.scheduler.stats() for m in list(r.models.values())}}
        return _json(200 if r.state == "ready" else 503, body)

    def _ready(self) -> None:
        r = self.registry
        if r.state != "ready":
            raise ApiError(503, "the models are still loading; try again shortly" if r.state == "loading"
                           else f"the models failed to load: {r.error}", "not_ready")

    def _model(self, model_id: str) -> ServedModel:
        r = self.registry
        self._ready()
        try:
            return r.get(model_id)
        except KeyError:
            raise ApiError(404, f"model {model_id!r} is not served here (models: {', '.join(r.ids)})",
                           "model_not_found", "model") from None

    @staticmethod
    def _card(m: ServedModel) -> dict[str, Any]:
        return {"id": m.id, "object": "model", "created": m.created, "owned_by": "miniglm",
                "context_length": m.context}

    async def list_models(self) -> JSONResponse:
        self._ready()
        return _json(200, {"object": "list", "data": [self._card(m) for m in list(self.registry.models.values())]})

    async def get_model(self, model_id: str) -> JSONResponse:
        return _json(200, self._card(self._model(model_id)))

    async def chat(self, request: Request) -> Response:
        req = protocol.parse_request(protocol.ChatRequest, await read_body(request, self.settings.max_body_bytes))
        served = self._model(req.model)
        history, question = protocol.messages_to_turns(req.messages)
        ids = served.tokenizer.render_prompt(history, question)
        return await self._run(request, served, ids, req, ChatFormat, "messages")

    async def complete(self, request: Request) -> Response:
        req = protocol.parse_request(protocol.CompletionRequest,
                                     await read_body(request, self.settings.max_body_bytes))
        served = self._model(req.model)
        ids = served.tokenizer.encode(req.prompt) if isinstance(req.prompt, str) else list(req.prompt)
        return await self._run(request, served, ids, req, CompletionFormat, "prompt")

    def _job(self, served: ServedModel, ids: list[int], req, prompt_field: str) -> Job:
        room = served.context - max(1, len(ids))
        if room < 1:
            raise ApiError(400, f"the prompt is {len(ids)} tokens; model {served.id!r} takes at most "
                           f"{served.context} tokens of prompt and answer together", "context_length_exceeded",
                           prompt_field)
        limit = req.answer_limit
        if limit is not None and limit > room:
            raise ApiError(400, f"max_tokens={limit} does not fit: the prompt is {len(ids)} tokens and model "
                           f"{served.id!r} takes {served.context} in all (at most {room} new tokens)",
                           "context_length_exceeded", "max_tokens")
        d = self.settings.defaults
        chosen = {k: getattr(req, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty")}
        cfg = dataclasses.replace(d, max_new_tokens=limit or min(d.max_new_tokens, room),
                                  **{k: v for k, v in chosen.items() if v is not None})
        seed = req.seed if req.seed is not None else secrets.randbits(63)
        return Job(ids, cfg, seed, req.stop_strings())

    async def _run(self, request: Request, served: ServedModel, ids: list[int], req, fmt_cls,
                   prompt_field: str) -> Response:
        job = self._job(served, ids, req, prompt_field)
        try:
            handle = served.scheduler.submit(job)
        except QueueFull as e:
            raise ApiError(429, f"model {served.id!r} is busy ({e}); retry later", "rate_limit_exceeded") from None
        except ValueError as e:  # e.g. a token id outside the vocabulary
            raise ApiError(400, str(e), "invalid_value", prompt_field) from None
        fmt = fmt_cls(fmt_cls.prefix + uuid.uuid4().hex, int(time.time()), served.id, req.include_usage)
        if req.stream:
            return EventSourceResponse(_stream(handle, fmt), ping=15, sep="\n")
        return await _collect(request, handle, fmt)


async def _stream(handle, fmt: ChatFormat):
    """SSE data lines of one streamed generation; the generation stops if the client goes away."""
    try:
        for chunk in fmt.first():
            yield _dumps(chunk)
        async for event in handle:
            if isinstance(event, Piece):
                yield _dumps(fmt.piece(event.text))
            elif isinstance(event, Finished):
                yield _dumps(fmt.last(event.reason))
                if fmt.include_usage:
                    yield _dumps(fmt.usage_chunk(protocol.usage(event.prompt_tokens, event.completion_tokens)))
            elif isinstance(event, Failed):
                yield _dumps(protocol.error_body(event.message, "server_error"))
                return  # no [DONE]: the stream did not complete
        yield "[DONE]"
    finally:
        if not handle.done:  # the client disconnected (the task was cancelled) or the server stops
            handle.cancel()


async def _collect(request: Request, handle, fmt: ChatFormat) -> Response:
    """The whole answer as one JSON response; cancelled at once if the client disconnects meanwhile."""

    async def gather() -> tuple[str, Finished | Failed]:
        parts = []
        async for event in handle:
            if isinstance(event, Piece):
                parts.append(event.text)
            else:
                return "".join(parts), event
        raise RuntimeError("generation ended without a final event")

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    result, gone = asyncio.ensure_future(gather()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not result.done():
            result.cancel()
            handle.cancel()
    if not result.done() or result.cancelled():
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    text, final = result.result()
    if isinstance(final, Failed):
        return _json(500, protocol.error_body(final.message, "server_error"))
    return _json(200, fmt.response(text, final.reason, protocol.usage(final.prompt_tokens, final.completion_tokens)))


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
