"""LAN mode and the command line: every route with no, a wrong and the right key; body size limits;
the refusals `miniglm serve` makes before it starts (one line, exit 2)."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest
from serve_helpers import KEY

from miniglm.__main__ import main
from miniglm.cli.serve import build_parser, check_args, is_loopback

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 2}
# (method, path, body, status with the right key)
ROUTES = [("GET", "/v1/models", None, 200), ("GET", "/v1/models/alpha", None, 200),
          ("GET", "/v1/models/nosuch", None, 404), ("POST", "/v1/chat/completions", CHAT, 200),
          ("POST", "/v1/completions", {"model": "beta", "prompt": "天", "max_tokens": 2}, 200),
          ("GET", "/nosuch", None, 404), ("DELETE", "/v1/models", None, 405)]


@pytest.mark.parametrize("method,path,body,status", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
@pytest.mark.parametrize("key", [None, "wrong-key", KEY, "Bearer-less"], ids=["no_key", "wrong", "right", "scheme"])
def test_every_route_needs_the_key(main_server, method, path, body, status, key):
    headers = {}
    if key == "Bearer-less":
        headers["Authorization"] = KEY  # the key without the "Bearer" scheme
    elif key is not None:
        headers["Authorization"] = f"Bearer {key}"
    r = httpx.request(method, main_server.url + path, json=body, headers=headers, timeout=30)
    want = status if key == KEY else 401
    assert r.status_code == want, r.text
    if want != 200:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "code", "param"} and error["message"]
    if want == 401:
        assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
        assert ("missing" in r.json()["error"]["message"]) == (key is None)


def test_health_needs_no_key_and_the_page_asks_for_it(main_server):
    health = httpx.get(main_server.url + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ready"
    assert set(health.json()["models"]) == {"alpha", "beta"}
    assert httpx.get(main_server.url + "/", timeout=10).headers["location"] == "/ui/"
    page = httpx.get(main_server.url + "/ui/", timeout=30)
    assert page.status_code == 200 and '"auth_required":true' in page.text  # Gradio's login form
    assert httpx.get(main_server.url + "/ui/config", timeout=30).status_code == 401  # nothing before login


def test_openai_client_with_a_wrong_key_gets_an_authentication_error(main_server):
    client = openai.OpenAI(base_url=main_server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        client.models.list()


def test_bodies_over_the_limit_are_413(main_server):
    big = b'{"model": "alpha", "prompt": "' + b"x" * (1 << 20) + b'"}'
    with main_server.http() as http:
        r = http.post("/v1/completions", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

        def chunked():  # no Content-Length: the limit is enforced while reading
            for i in range(0, len(big), 1 << 16):
                yield big[i:i + (1 << 16)]

        r = http.post("/v1/completions", content=chunked(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert http.post("/v1/completions", json={"model": "alpha", "prompt": "天", "max_tokens": 1}).status_code == 200


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.com"]))


def run_serve(argv, capsys) -> tuple[int, str]:
    rc = main(["serve", *argv])
    return rc, capsys.readouterr().err


def test_a_lan_address_without_a_key_is_refused(serve_runs, capsys):
    rc, err = run_serve([str(serve_runs["alpha"]), "--host", "0.0.0.0"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("miniglm serve: error: refusing to listen on 0.0.0.0 without an API key")
    args = build_parser().parse_args([str(serve_runs["alpha"]), "--host", "0.0.0.0", "--no-auth"])
    check_args(args, None)  # explicitly allowed
    check_args(build_parser().parse_args(["x", "--host", "192.168.1.5"]), "a-key")


@pytest.mark.parametrize("case", ["missing_run", "empty_key_file", "missing_key_file", "duplicate_id", "bad_id",
                                  "port_taken", "bad_limit", "bad_sampling", "missing_extra"])
def test_refusals_are_one_line_exit_2(case, serve_runs, tmp_path, capsys, monkeypatch):
    run = str(serve_runs["alpha"])
    argv, expected = {
        "missing_run": ([str(tmp_path / "nope")], "not found"),
        "empty_key_file": ([run, "--api-key-file", str(tmp_path / "empty.txt")], "is empty"),
        "missing_key_file": ([run, "--api-key-file", str(tmp_path / "missing.txt")], "cannot read the API key file"),
        "duplicate_id": ([f"a={run}", f"a={serve_runs['beta']}"], "used twice"),
        "bad_id": ([f"bad id={run}"], "bad model id"),
        "port_taken": ([run, "--port", "PORT"], "cannot listen on 127.0.0.1"),
        "bad_limit": ([run, "--max-batch", "0"], "--max-batch must be >= 1"),
        "bad_sampling": ([run, "--top_p", "0"], "top_p"),
        "missing_extra": ([run], 'pip install "miniglm[serve]"'),
    }[case]
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    if case == "missing_extra":
        import importlib

        real = importlib.import_module

        def fake(name, *a, **kw):
            if name == "sse_starlette":
                raise ImportError("No module named 'sse_starlette'", name="sse_starlette")
            return real(name, *a, **kw)

        monkeypatch.setattr("miniglm.extras.importlib.import_module", fake)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        argv = [str(taken.getsockname()[1]) if a == "PORT" else a for a in argv]
        rc, err = run_serve(argv, capsys)
    assert rc == 2 and err.startswith("miniglm serve: error: ") and err.count("\n") == 1, err
    assert expected in err
