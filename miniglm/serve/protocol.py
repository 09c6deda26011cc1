"""The OpenAI wire format: request bodies checked field by field, and the responses and stream chunks.

Requests are validated strictly (pydantic, JSON types as sent: "0.5" is not a number); every
problem becomes `ApiError(400, "field: what is wrong")`. Unknown fields are ignored, as OpenAI's
own server does for fields it does not know; fields MiniGLM cannot honour with a non-default value
(`n` > 1, `echo`, `logprobs`, presence/frequency penalties) are errors rather than silently dropped.

Messages -> the one chat template (`Tokenizer.render_prompt`), by this rule: system (or developer)
messages may come only before the first user message; their texts, joined by newlines, are put in
front of the first question as "{system}\\n{question}" (the rule SFT data follows, see
`miniglm/data/sft_input.py`: the template has no system slot). Then user and assistant alternate,
starting and ending with user. Content is a string or a list of {"type": "text"} parts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from miniglm.tokenizer import with_system

MAX_STOP = 4  # stop strings per request, as OpenAI


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: {"error": {"message", "type", "code", "param"}}."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
             413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.TYPES.get(self.status, "server_error"), self.code, self.param)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        """A string, or a list of {"type": "text", "text": ...} parts (joined)."""
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError('content parts must be {"type": "text", "text": "..."} (only text is supported)')
            texts.append(part["text"])
        return "".join(texts)


class _Sampling(_Strict):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0, le=10, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2 ** 63), lt=2 ** 64)  # what torch.Generator.manual_seed takes
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    logprobs: bool | int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValueError("must be a string or a list of strings")
        if len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        return value

    @field_validator("n")
    @classmethod
    def _one(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError("logprobs are not supported")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value not in (None, 0, 0.0):
            raise ValueError("not supported; use repetition_penalty")
        return value

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]  # an empty stop string would end every answer before it starts

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens

    @property
    def answer_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[int] = ""  # text, or token ids; a list holding exactly one of them is accepted too
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(p, (str, list)) for p in value):
            if len(value) != 1:
                raise ValueError("one prompt per request (send several requests; they are batched)")
            return value[0]
        if isinstance(value, list) and not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            raise ValueError("must be a string, a list of token ids, or a list holding one of those")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (insertion) is not supported")
        return value

    @property
    def answer_limit(self) -> int | None:
        return self.max_tokens


def parse_request(cls: type[_Sampling], body: bytes) -> Any:
    """Validate a JSON body; ApiError(400) with "field: problem" (the first problem) otherwise."""
    try:
        return cls.model_validate_json(body)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        if err["type"] == "json_invalid":
            raise ApiError(400, f"the request body is not valid JSON ({err['msg'].removeprefix('Invalid JSON: ')})",
                           "invalid_json") from None
        where = ".".join(str(p) for p in err["loc"]) or "request body"
        message = err["msg"].removeprefix("Value error, ")
        raise ApiError(400, f"{where}: {message}", "invalid_value", where if err["loc"] else None) from None


def messages_to_turns(messages: list[Message]) -> tuple[list[tuple[str, str]], str]:
    """(history [(question, answer), ...], question) by the rule in the module docstring."""
    system: list[str] = []
    texts: list[str] = []
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            if texts:
                raise ApiError(400, f"messages.{i}: a {m.role} message must come before the first user message",
                               "invalid_value", f"messages.{i}.role")
            system.append(m.content)
            continue
        expected = "user" if len(texts) % 2 == 0 else "assistant"
        if m.role != expected:
            raise ApiError(400, f"messages.{i}: expected a {expected} message (user and assistant alternate, "
                           f"starting with user), got {m.role}", "invalid_value", f"messages.{i}.role")
        texts.append(m.content)
    if len(texts) % 2 == 0:
        raise ApiError(400, "messages must end with a user message", "invalid_value", "messages")
    if system:
        texts[0] = with_system("\n".join(system), texts[0])
    return list(zip(texts[0:-1:2], texts[1::2])), texts[-1]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ChatFormat:
    """Shapes of /v1/chat/completions: the response and the stream chunks (all with one id)."""

    prefix, object = "chatcmpl-", "chat.completion"

    def __init__(self, request_id: str, created: int, model: str, include_usage: bool):
        self.head = {"id": request_id, "object": self.object + ".chunk", "created": created, "model": model}
        self.include_usage = include_usage

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        chunk = {**self.head, "choices": [{"index": 0, **choice, "logprobs": None}]}
        return chunk | {"usage": None} if self.include_usage else chunk

    def first(self) -> list[dict[str, Any]]:
        return [self._chunk({"delta": {"role": "assistant", "content": ""}, "finish_reason": None})]

    def piece(self, text: str) -> dict[str, Any]:
        return self._chunk({"delta": {"content": text}, "finish_reason": None})

    def last(self, reason: str) -> dict[str, Any]:
        return self._chunk({"delta": {}, "finish_reason": reason})

    def usage_chunk(self, used: dict[str, int]) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": used}

    def response(self, text: str, reason: str, used: dict[str, int]) -> dict[str, Any]:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                  "logprobs": None}
        return {**self.head, "object": self.object, "choices": [choice], "usage": used}


class CompletionFormat(ChatFormat):
    """Shapes of /v1/completions (legacy text completions)."""

    prefix, object = "cmpl-", "text_completion"

    def __init__(self, request_id: str, created: int, model: str, include_usage: bool):
        super().__init__(request_id, created, model, include_usage)
        self.head["object"] = self.object  # completion chunks keep the object name

    def first(self) -> list[dict[str, Any]]:
        return []

    def piece(self, text: str) -> dict[str, Any]:
        return self._chunk({"text": text, "finish_reason": None})

    def last(self, reason: str) -> dict[str, Any]:
        return self._chunk({"text": "", "finish_reason": reason})

    def response(self, text: str, reason: str, used: dict[str, int]) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        return {**self.head, "choices": [choice], "usage": used}
