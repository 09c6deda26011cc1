"""Bad input: malformed and random request bodies each get a 4xx OpenAI-style JSON error, never a 500,
while other clients' streams run on undisturbed; the server answers normally afterwards."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 2}
COMPLETION = {"model": "alpha", "prompt": "天地", "max_tokens": 2}
ROUTES = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETION}
FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# (route, body or raw bytes, status, words the message must contain)
CASES = [
    ("/v1/chat/completions", b"", 400, "not valid JSON"),
    ("/v1/chat/completions", b"{", 400, "not valid JSON"),
    ("/v1/chat/completions", b'{"model": "alpha", "messages": [}', 400, "not valid JSON"),
    ("/v1/chat/completions", b"\xff\xfe", 400, "not valid JSON"),
    ("/v1/chat/completions", [CHAT], 400, "object"),
    ("/v1/chat/completions", {"model": "alpha"}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "model": 5}, 400, "model"),
    ("/v1/chat/completions", {**CHAT, "model": "gamma"}, 404, "not served here"),
    ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "bot", "content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user"}]}, 400, "content"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "only text"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "assistant", "content": "x"}]}, 400, "expected a user"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "a"}] * 2}, 400, "alternate"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "a"},
                                                   {"role": "assistant", "content": "b"}]}, 400, "end with a user"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "a"},
                                                   {"role": "system", "content": "b"}]}, 400, "before the first user"),
    ("/v1/chat/completions", {**CHAT, "temperature": -1}, 400, "temperature"),
    ("/v1/chat/completions", {**CHAT, "temperature": 2.5}, 400, "temperature"),
    ("/v1/chat/completions", {**CHAT, "temperature": "0.5"}, 400, "temperature"),
    ("/v1/chat/completions", {**CHAT, "top_p": 0}, 400, "top_p"),
    ("/v1/chat/completions", {**CHAT, "top_k": 1.5}, 400, "top_k"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": True}, 400, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 10 ** 9}, 400, "does not fit"),
    ("/v1/chat/completions", {**CHAT, "stop": 5}, 400, "stop"),
    ("/v1/chat/completions", {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
    ("/v1/chat/completions", {**CHAT, "seed": 2 ** 70}, 400, "seed"),
    ("/v1/chat/completions", {**CHAT, "stream": "yes"}, 400, "stream"),
    ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": 1}}, 400, "include_usage"),
    ("/v1/chat/completions", {**CHAT, "n": 2}, 400, "only n=1"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True}, 400, "logprobs"),
    ("/v1/chat/completions", {**CHAT, "presence_penalty": 0.5}, 400, "repetition_penalty"),
    ("/v1/chat/completions", {**CHAT, "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("/v1/completions", {"model": "alpha"}, 200, ""),  # no prompt: generation starts from the end-of-text token
    ("/v1/completions", {**COMPLETION, "prompt": 5}, 400, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": ["a", "b"]}, 400, "one prompt per request"),
    ("/v1/completions", {**COMPLETION, "prompt": [1.5]}, 400, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": [True]}, 400, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": [99999]}, 400, "outside the vocabulary"),
    ("/v1/completions", {**COMPLETION, "prompt": "天" * 200}, 400, "takes at most 64 tokens"),
    ("/v1/completions", {**COMPLETION, "echo": True}, 400, "echo"),
    ("/v1/completions", {**COMPLETION, "suffix": "x"}, 400, "suffix"),
]


def check_error(r: httpx.Response, statuses=(400, 404)) -> dict:
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"] and error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize("route,body,status,words", CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_malformed_requests_get_the_right_error(main_server, route, body, status, words):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with main_server.http() as http:
        r = http.post(route, content=raw, headers={"Content-Type": "application/json"})
    if status == 200:
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 1
        return
    error = check_error(r, (status,))
    assert words in error["message"], error["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
not_number = st.text(max_size=5) | st.booleans() | st.lists(json_values, max_size=2) | st.dictionaries(
    st.text(max_size=4), json_values, max_size=2)
not_int = not_number | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
# field -> values it must refuse
INVALID = {
    "model": st.integers() | st.booleans() | st.just("") | st.lists(st.text(), max_size=2),
    "temperature": not_number | st.floats(min_value=2, exclude_min=True, allow_infinity=False) | st.floats(
        max_value=0, exclude_max=True, allow_infinity=False),
    "top_p": not_number | st.floats(max_value=0, allow_infinity=False) | st.floats(min_value=1, exclude_min=True,
                                                                                   allow_infinity=False),
    "top_k": not_int | st.integers(max_value=-1),
    "max_tokens": not_int | st.integers(max_value=0) | st.integers(min_value=65),
    "repetition_penalty": not_number | st.floats(max_value=0, allow_infinity=False),
    "seed": not_int | st.integers(min_value=2 ** 64) | st.integers(max_value=-(2 ** 63) - 1),
    "stop": st.integers() | st.lists(st.text(max_size=3), min_size=5, max_size=8) | st.lists(st.integers(), min_size=1),
    "stream": st.integers() | st.text(max_size=3) | st.lists(st.booleans(), max_size=2),
    "n": st.integers().filter(lambda n: n != 1) | st.text(max_size=3),
    "messages": st.lists(json_values.filter(lambda v: not isinstance(v, dict)), max_size=3) | st.lists(
        st.fixed_dictionaries({"role": st.text(max_size=8).filter(
            lambda r: r not in ("system", "developer", "user", "assistant")), "content": st.text(max_size=5)}),
        min_size=1, max_size=3) | st.integers() | st.text(max_size=5),
    "prompt": st.integers() | st.booleans() | st.lists(st.floats(allow_nan=False).filter(
        lambda f: not f.is_integer()), min_size=1, max_size=3) | st.lists(st.text(max_size=3), min_size=2, max_size=3)
    | st.lists(st.integers(min_value=300), min_size=1, max_size=3),
}


@st.composite
def bad_bodies(draw) -> tuple[str, bytes]:
    """One field of a valid request made invalid, or raw garbage, or a random JSON value."""
    kind = draw(st.sampled_from(["field", "field", "field", "bytes", "json"]))
    route = draw(st.sampled_from(sorted(ROUTES)))
    if kind == "bytes":
        return route, draw(st.binary(max_size=64))
    if kind == "json":
        return route, json.dumps(draw(json_values)).encode()
    fields = [f for f in INVALID if f not in ("messages", "prompt")] + (
        ["messages"] if route == "/v1/chat/completions" else ["prompt"])
    name = draw(st.sampled_from(fields))
    return route, json.dumps({**ROUTES[route], name: draw(INVALID[name])}).encode()


class Background:
    """Streams the same greedy completion over and over in a thread, noting any that differ or fail."""

    def __init__(self, server, expected: str):
        self.server, self.expected, self.runs, self.failures = server, expected, 0, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with self.server.http() as http:
            while not self.done.is_set():
                body = {"model": "beta", "prompt": "秋收冬藏", "max_tokens": 30, "stream": True}
                with http.stream("POST", "/v1/completions", json=body) as r:
                    data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
                text = "".join(json.loads(d)["choices"][0]["text"] for d in data[:-1]) if r.status_code == 200 else ""
                if r.status_code != 200 or data[-1] != "[DONE]" or text != self.expected:
                    self.failures.append((r.status_code, text))
                self.runs += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(timeout=60)


def test_random_bodies_get_4xx_json_and_never_disturb_other_streams(main_server):
    client = main_server.client()
    expected = client.completions.create(model="beta", prompt="秋收冬藏", max_tokens=30).choices[0].text
    with main_server.http() as http, Background(main_server, expected) as background:
        statuses = []

        @FUZZ
        @given(case=bad_bodies())
        def check(case):
            route, raw = case
            r = http.post(route, content=raw, headers={"Content-Type": "application/json"})
            error = check_error(r)
            if r.status_code == 404:
                assert error["code"] == "model_not_found"
            statuses.append(r.status_code)

        check()
    assert len(statuses) >= 250 and set(statuses) <= {400, 404}
    assert background.runs >= 1 and background.failures == []
    r = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "你好"}])
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0
