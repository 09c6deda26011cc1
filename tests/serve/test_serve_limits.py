"""Queue limits and disconnects on a server with one batch slot and one queue place (`small_server`):
a full server answers 429 at once, and a client that goes away frees its slot at the next step."""

from __future__ import annotations

import json
import socket
import time

import openai
import pytest

LONG = {"model": "long", "prompt": "天地", "max_tokens": 4000, "temperature": 0}  # seconds of decoding


def wait_until(predicate, timeout: float = 5.0) -> float:
    """Seconds until predicate() held (fails the test after `timeout`)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(0.02)
    return time.monotonic() - start


def first_text_chunk(lines) -> dict:
    """Read up to the first chunk with text. Keep `lines` referenced while the stream should stay open:
    a line iterator that is garbage collected makes httpx close the connection (a disconnect)."""
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["text"]:
                return chunk
    raise AssertionError("the stream ended without text")


def test_full_server_answers_429_and_the_queued_request_runs_when_the_slot_frees(small_server):
    with small_server.http() as http:
        with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as running:
            running_lines = running.iter_lines()
            first_text_chunk(running_lines)  # it holds the only batch slot
            with http.stream("POST", "/v1/completions", json={**LONG, "max_tokens": 5, "stream": True}) as queued:
                assert queued.status_code == 200
                wait_until(lambda: small_server.stats("long")["waiting"] == 1)
                with pytest.raises(openai.RateLimitError, match="busy") as e:
                    small_server.client().completions.create(model="long", prompt="天地", max_tokens=5)
                assert e.value.code == "rate_limit_exceeded" and e.value.status_code == 429
                assert small_server.stats("long")["running"] == 1
                running.close()  # the running client leaves: the queued one gets the slot
                del running_lines
                data = [line for line in queued.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    assert json.loads(data[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_a_streaming_client_that_disconnects_frees_its_batch_slot(small_server):
    before = small_server.stats("long")
    with small_server.http() as http:
        with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as r:
            lines = r.iter_lines()
            first_text_chunk(lines)
            time.sleep(0.3)
            assert small_server.stats("long")["running"] == 1  # still generating while we are connected
    freed = wait_until(lambda: small_server.stats("long")["running"] == 0)
    after = small_server.stats("long")
    assert after["cancelled"] == before["cancelled"] + 1 and after["completed"] == before["completed"]
    assert freed < 2.0  # 4000 tokens would take far longer
    r = small_server.client().completions.create(model="long", prompt="天地", max_tokens=5)
    assert r.choices[0].finish_reason == "length"


def test_a_waiting_client_that_disconnects_never_runs(small_server):
    with small_server.http() as http:
        with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as running:
            lines = running.iter_lines()
            first_text_chunk(lines)
            before = small_server.stats("long")
            with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as queued:
                assert queued.status_code == 200
                wait_until(lambda: small_server.stats("long")["waiting"] == 1)
            running.close()
    wait_until(lambda: small_server.stats("long")["running"] == 0 and small_server.stats("long")["waiting"] == 0)
    after = small_server.stats("long")
    assert after["cancelled"] == before["cancelled"] + 2 and after["completed"] == before["completed"]


def test_a_non_streaming_client_that_disconnects_stops_its_generation(small_server):
    before = small_server.stats("long")
    host, port = small_server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(LONG).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: small_server.stats("long")["running"] == 1)
    wait_until(lambda: small_server.stats("long")["running"] == 0, timeout=2.0)
    assert small_server.stats("long")["cancelled"] == before["cancelled"] + 1
