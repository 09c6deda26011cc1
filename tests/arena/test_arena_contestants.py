"""Contestants: spec parsing, the remote client against a fake SSE server (errors and timeouts
included), a local checkpoint through the engine, and real `miniglm serve` processes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from arena_fakes import FakeChatServer, free_port, make_checkpoint

from miniglm.config import SampleConfig
from miniglm.generate import text as textgen
from miniglm.serve.arena.battle import Arena
from miniglm.serve.arena.contestants import (
    ContestantError,
    ContestantSpecError,
    LocalContestant,
    RemoteContestant,
    Settings,
    load_contestants,
    parse_contestant,
)
from miniglm.serve.arena.votes import VoteLog, read_votes

REPO = Path(__file__).resolve().parents[2]
CPU = SampleConfig(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {name: make_checkpoint(root, name, seed) for name, seed in (("alpha", 0), ("beta", 1), ("gamma", 2))}


def test_contestant_specs():
    assert parse_contestant("mine=runs/sft") == parse_contestant("mine=runs/sft")
    spec = parse_contestant("mine=runs/sft")
    assert (spec.name, spec.target, spec.is_remote) == ("mine", "runs/sft", False)
    assert parse_contestant("runs/sft").name == "sft"
    spec = parse_contestant("bob=http://10.0.0.7:8000/v1,model=sft,key-env=BOB_KEY")
    assert (spec.name, spec.target, spec.model, spec.key_env, spec.is_remote) == (
        "bob", "http://10.0.0.7:8000/v1", "sft", "BOB_KEY", True)
    assert parse_contestant("http://10.0.0.7:8000,model=sft").name == "sft"
    assert parse_contestant("https://api.example.com/v1").name == "api.example.com"
    for bad, message in (("bob=http://x,colour=red", "unknown option"), ("mine=runs/sft,model=a", "URLs only"),
                         ("bob=", "expected"), ("bob=http://", "not a URL with a host")):
        with pytest.raises(ContestantSpecError, match=message):
            parse_contestant(bad)


def test_keys_come_from_env_or_file_and_names_must_differ(tmp_path, monkeypatch, runs):
    monkeypatch.setenv("ARENA_TEST_KEY", "k-env")
    (tmp_path / "key").write_text("k-file\n")
    a, b = load_contestants(["a=http://h:1,key-env=ARENA_TEST_KEY", f"b=http://h:1,key-file={tmp_path / 'key'}"], CPU)
    assert (a.api_key, b.api_key) == ("k-env", "k-file")
    with pytest.raises(ContestantSpecError, match="NOPE_KEY is not set"):
        load_contestants(["a=http://h:1,key-env=NOPE_KEY"], CPU)
    with pytest.raises(ContestantSpecError, match="two contestants are named alpha"):
        load_contestants([str(runs["alpha"]), "alpha=http://h:1"], CPU)
    one, two = load_contestants([f"x={runs['alpha']}", f"y={runs['alpha']}"], CPU)
    assert one.loaded is two.loaded  # a checkpoint is loaded once however many names it has


def test_remote_streams_chat_with_history_and_settings():
    with FakeChatServer(key="sesame") as server:
        c = RemoteContestant("r", server.url + "/v1/", api_key="sesame")
        settings = Settings(temperature=0.3, top_p=0.5, max_new_tokens=17, seed=9)
        pieces = list(c.stream([("一", "二")], "三", settings))
        assert pieces == ["你", "好", "三"] and c.model == "fake-model"  # the first listed model
        path, headers, body = server.requests[-1]
        assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sesame"
        assert body == {"model": "fake-model", "stream": True, "temperature": 0.3, "top_p": 0.5, "max_tokens": 17,
                        "seed": 9, "messages": [{"role": "user", "content": "一"}, {"role": "assistant", "content": "二"},
                                                {"role": "user", "content": "三"}]}


@pytest.mark.parametrize("question, kwargs, message", [
    ("hi", {"api_key": "wrong"}, r"HTTP 401 from .*/v1/chat/completions: invalid api key"),
    ("boom", {}, "HTTP 500 .*model exploded"),
    ("garbage", {}, "malformed stream from .*not json"),
    ("cut", {}, "closed the stream before \\[DONE\\]"),
    ("slow", {"timeout": 0.5}, "timed out \\(ReadTimeout\\)"),
    ("hi", {"model": None, "base": "/nothing"}, "HTTP 404 from .*/nothing/v1/models: no such route"),
])
def test_remote_failures_are_one_line_errors(question, kwargs, message):
    with FakeChatServer(key="sesame") as server:
        base = server.url + kwargs.pop("base", "")
        c = RemoteContestant("r", base, **({"model": "m", "api_key": "sesame"} | kwargs))
        start = time.monotonic()
        with pytest.raises(ContestantError, match=message):
            list(c.stream([], question, Settings()))
        assert time.monotonic() - start < 1.9  # the slow stream is abandoned at the timeout


def test_remote_unreachable_and_too_slow_overall():
    c = RemoteContestant("r", f"http://127.0.0.1:{free_port()}", model="m", connect_timeout=1)
    with pytest.raises(ContestantError, match="cannot reach http://127.0.0.1"):
        list(c.stream([], "hi", Settings()))
    with FakeChatServer() as server:
        c = RemoteContestant("r", server.url, model="m", answer_timeout=0.5)
        with pytest.raises(ContestantError, match="answer took longer than 0.5 s"):
            list(c.stream([], "slow", Settings()))


def test_local_contestant_streams_what_the_engine_answers(runs):
    loaded = textgen.load_for_generation(runs["alpha"], CPU)
    c = LocalContestant("alpha", loaded, CPU)
    settings = Settings(temperature=0.0, top_p=1.0, max_new_tokens=10, seed=3)
    history = [("你好", "你好！")]
    got = "".join(c.stream(history, "天地", settings))
    cfg = SampleConfig(device="cpu", dtype="float32", temperature=0.0, top_p=1.0, max_new_tokens=10)
    assert got == textgen.answer(loaded.model, loaded.tokenizer, "天地", cfg, history=history).text
    with pytest.raises(ContestantError, match="top_p"):
        list(c.stream([], "天地", Settings(top_p=0.0)))


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"miniglm serve exited with {proc.returncode}: {proc.stderr.read()}"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not healthy after {seconds} s")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("miniglm.cli.serve") is None,
                    reason="miniglm/cli/serve.py (issue 10, `miniglm serve`) is not written yet")
def test_two_real_servers_and_a_local_checkpoint_battle(runs, tmp_path):
    procs, urls = [], []
    try:
        for name in ("beta", "gamma"):
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "miniglm", "serve", f"{name}={runs[name]}", "--port", str(port),
                 "--device", "cpu", "--dtype", "float32"],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}))
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, procs):
            wait_healthy(url, proc)
        contestants = load_contestants([f"alpha={runs['alpha']}", f"beta={urls[0]}", f"gamma={urls[1]},model=gamma"], CPU)
        arena = Arena(contestants, VoteLog(tmp_path / "votes.jsonl"), seed=0, tick=0.01)
        greedy = Settings(temperature=0.0, top_p=1.0, max_new_tokens=8)
        for left, right in (("alpha", "beta"), ("beta", "gamma"), ("gamma", "alpha")):
            rnd = arena.new_round("named", left, right)
            *_, final = arena.ask(rnd, "天地", greedy)
            assert rnd.failed == [], rnd.failed
            for side, text in zip(("left", "right"), final):  # a served model answers as it does locally
                loaded = textgen.load_for_generation(runs[getattr(rnd, side)], CPU)
                cfg = SampleConfig(device="cpu", dtype="float32", temperature=0.0, top_p=1.0, max_new_tokens=8)
                assert text == textgen.answer(loaded.model, loaded.tokenizer, "天地", cfg).text
            arena.vote(rnd, "tie")
        assert len(read_votes(tmp_path / "votes.jsonl").votes) == 3
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
            proc.stderr.close()
