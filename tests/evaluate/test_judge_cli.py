"""`miniglm judge` end to end: tiny checkpoints answer, a fake judge over HTTP grades, report and votes
are written; a rerun asks nothing; bad input is one line and exit 2; `miniglm serve` as the judge."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

pytest.importorskip("httpx")

from judge_server import FakeJudge  # noqa: E402

from miniglm.__main__ import main  # noqa: E402
from miniglm.checkpoint import save_checkpoint  # noqa: E402
from miniglm.config import ModelConfig  # noqa: E402
from miniglm.evaluate import report as rep  # noqa: E402
from miniglm.model.model import MiniGLM  # noqa: E402
from miniglm.serve.arena.votes import read_votes  # noqa: E402
from miniglm.tokenizer import train_tokenizer  # noqa: E402

FLAGS = ["--device", "cpu", "--dtype", "float32", "--max_new_tokens", "8", "--no-progress"]
QUESTIONS = [("天地是什么？", "天地玄黄。"), ("宇宙如何？", "宇宙洪荒。"), ("日月怎样？", "日月盈昃。")]


def make_run(root: Path, name: str, seed: int, context: int = 64) -> Path:
    corpus = ["天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。", "问：你好\n答：你好！", "寒来暑往，秋收冬藏。"] * 3
    tok = train_tokenizer(corpus, vocab_size=300, min_frequency=2, show_progress=False)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=context, initializer_range=0.3)
    run = root / name
    save_checkpoint(run / "checkpoints" / "step_0000001", MiniGLM(cfg), tok, step=1, extra={"mode": "sft"})
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("judge_runs")
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a in QUESTIONS),
                  encoding="utf-8")
    return make_run(root, "base", 0), make_run(root, "sft", 1), qa


def judge_argv(server: FakeJudge, cache: Path, *extra: str) -> list[str]:
    return ["judge", "--judge-url", server.url, "--judge-model", "fake", "--cache", str(cache), *extra]


def test_two_runs_report_comparison_votes_and_a_free_rerun(runs, tmp_path, capsys, monkeypatch):
    base, sft, qa = runs
    monkeypatch.setenv("MINIGLM_JUDGE_KEY", "sk-secret-key")
    out, votes, cache = tmp_path / "out", tmp_path / "votes.jsonl", tmp_path / "cache"
    with FakeJudge(key="sk-secret-key") as server:
        argv = judge_argv(server, cache, str(base), f"student={sft}", "--qa", str(qa), "--out", str(out),
                          "--votes", str(votes), *FLAGS)
        assert main(argv) == 0
        sent = len(server.requests)
        assert sent == 3 * 2 + 3 * 2  # 3 grades per run, 3 pairs in two orders
        printed = capsys.readouterr().out
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        assert [r["name"] for r in report["runs"]] == ["base", "student"]
        for r in report["runs"]:
            s = r["judge"]["summary"]
            assert s["items"] == 3 and s["graded"] + s["unparseable"] + s["failed"] == 3
            assert r["summary"]["judge 综合得分 (1-10)"] == pytest.approx(s["means"]["综合得分"])
        comp = report["comparison"]["judge 综合得分 (1-10)"]
        assert comp["delta"] == pytest.approx(comp["b"] - comp["a"])
        p = report["judge"]["pairwise"]
        assert (p["a"], p["b"]) == ("base", "student") and p["summary"]["pairs"] == 3
        assert report["judge"]["usage"]["requests"] == sent and report["settings"]["judge_qa_file"] == str(qa)
        md = (out / "report.md").read_text(encoding="utf-8")
        assert "## LLM judge" in md and "worst-graded answers" in md and "### Pairwise: student against base" in md
        assert "base: 综合得分" in printed and f"appended {p['summary']['scored']} judge votes" in printed
        recorded = read_votes(votes).votes
        assert len(recorded) == p["summary"]["scored"] and {v["mode"] for v in recorded} == {"judge"}
        assert all("sk-secret-key" not in f.read_text(encoding="utf-8") for f in [*out.iterdir(), votes])

        # the same command again: answers regenerate identically (greedy), every verdict from the cache
        assert main(argv) == 0
        assert len(server.requests) == sent
        again = json.loads((out / "report.json").read_text(encoding="utf-8"))
        assert again["judge"]["usage"]["cache_hits"] == 12 and again["judge"]["usage"]["requests"] == 0
        assert again["judge"]["pairwise"]["summary"] == p["summary"]

        # the judge report's answers judged again by another judge model: new cache keys, no generation
        argv = judge_argv(server, cache, "--report", str(out)).copy()
        argv[argv.index("fake")] = "fake-2"
        assert main([*argv, "--no-progress"]) == 0
        assert len(server.requests) == 2 * sent
        other = json.loads((out / "report.json").read_text(encoding="utf-8"))
        assert other["judge"]["settings"]["model"] == "fake-2" and other["judge"]["usage"]["requests"] == sent
        assert [it["answer"] for it in other["runs"][1]["judge"]["items"]] == \
            [it["answer"] for it in report["runs"][1]["judge"]["items"]]
        capsys.readouterr()


def eval_report(answers: list[str]) -> dict:
    """A one-run report made by the eval code itself (score_items, summarize_qa, build_report) from
    chosen answers, so the judge's verdicts on them are known."""
    pytest.importorskip("sacrebleu")
    from miniglm.evaluate import qa as qamod
    from miniglm.generate.text import Generation

    items = [qamod.QAItem(q, a, [a], i + 1) for i, (q, a) in enumerate(QUESTIONS)]
    gens = [Generation(ans, [5, 6], 4, "eot", 0.1, 0.01) for ans in answers]
    seen = frozenset("".join(answers + [a for _, a in QUESTIONS]))
    rows = qamod.score_items(items, gens, [(1.0, 2)] * len(items), seen)
    run = {"name": "sft", "run": "runs/sft", "checkpoint": "runs/sft/checkpoints/best", "step": 5, "params": 10,
           "device": "cpu", "dtype": "float32", "heldout": [],
           "qa": {"summary": qamod.summarize_qa(rows, 0.3, 8), "items": rows}}
    run["summary"] = rep.summary_metrics(run)
    return rep.build_report([run], {"qa_file": "qa.jsonl", "sample": {"temperature": 0.0}})


def test_judging_an_eval_report_in_place(tmp_path, capsys):
    rep.write_report(eval_report(["好答案", "差答案", "乱答"]), tmp_path / "eval")
    with FakeJudge() as server:
        assert main(judge_argv(server, tmp_path / "cache", "--report", str(tmp_path / "eval"), "--no-progress")) == 0
    report = rep.load_report(tmp_path / "eval")  # still a valid eval report, now with the judge
    [r] = report["runs"]
    assert [it["status"] for it in r["judge"]["items"]] == ["ok", "ok", "unparseable"]
    assert r["summary"]["Rouge-L F"] is not None and r["summary"]["judge 综合得分 (1-10)"] == 5.0
    assert r["summary"]["judge unparseable"] == 1 and report["judge"]["pairwise"] is None
    md = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "1 unparseable verdicts (not scored)" in md and "两个回答都还行吧" in md
    assert "#1** 综合得分 2" in md  # the worst-graded answer first, with the judge's reason
    capsys.readouterr()


@pytest.mark.parametrize("extra, message", [
    ([], "nothing to judge"),
    (["RUN"], "--qa FILE is needed"),
    (["--report", "x", "--qa", "q.jsonl"], "not both"),
    (["a", "b", "c", "--qa", "QA"], "at most two"),
    (["RUN", "--qa", "QA", "--votes", "v.jsonl"], "--votes needs two runs"),
    (["RUN", "--qa", "QA", "--judge-key-env", "MINIGLM_TEST_UNSET_VAR"], "MINIGLM_TEST_UNSET_VAR"),
    (["RUN", "--qa", "QA", "--judge-key-file", "EMPTY"], "key file is empty"),
    (["RUN", "--qa", "QA", "--judge-concurrency", "0"], "--judge-concurrency must be > 0"),
    (["--report", "MISSING"], "report not found"),
])
def test_bad_input_is_one_line_exit_2(runs, tmp_path, capsys, extra, message):
    base, _, qa = runs
    (tmp_path / "empty").write_text("\n")
    subst = {"RUN": str(base), "QA": str(qa), "EMPTY": str(tmp_path / "empty"), "MISSING": str(tmp_path / "nope")}
    argv = ["judge", "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "m", "--cache", str(tmp_path / "c"),
            *[subst.get(x, x) for x in extra], *FLAGS]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("miniglm judge: error: ") and message in err and err.count("\n") == 1


def test_bad_url_and_bad_key_and_unreachable_judge(runs, tmp_path, capsys):
    base, _, qa = runs
    assert main(["judge", str(base), "--qa", str(qa), "--judge-url", "ftp://x", "--judge-model", "m"]) == 2
    assert "http:// or https://" in capsys.readouterr().err
    with FakeJudge(key="right") as server:
        (tmp_path / "key").write_text("wrong\n")
        argv = judge_argv(server, tmp_path / "c", str(base), "--qa", str(qa), "--judge-key-file", str(tmp_path / "key"))
        assert main([*argv, *FLAGS]) == 2
    assert "401" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["judge", str(base), "--qa", str(qa), "--judge-url", f"http://127.0.0.1:{port}/v1", "--judge-model", "m",
            "--no-cache", "--judge-retries", "0", "--limit", "1", *FLAGS]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after the progress line "answering 1 questions ..."
    assert last.startswith("miniglm judge: error: the judge at") and "answered none of 1 prompts" in last
    assert "cannot reach" in last and "Connection refused" in last


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(find_spec("miniglm.cli.serve") is None,
                    reason="miniglm/cli/serve.py (the serve engineer's `miniglm serve`) is not written yet")
def test_miniglm_serve_as_the_judge_gives_unparseable_verdicts(runs, tmp_path, capsys):
    """A tiny random checkpoint served by `miniglm serve` cannot follow the format: every verdict it
    gives must be counted as unparseable, none scored."""
    base, sft, qa = runs
    judge_run = make_run(tmp_path, "judge_model", 2, context=4096)  # room for the ~2,200-token prompts
    (tmp_path / "key").write_text("sk-serve-key\n")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "miniglm", "serve", f"judge={judge_run}", "--port", str(port),
                             "--api-key-file", str(tmp_path / "key"), "--device", "cpu", "--dtype", "float32"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, f"miniglm serve exited: {proc.stderr.read()[-2000:]}"
            time.sleep(0.5)
        out = tmp_path / "out"
        argv = ["judge", str(base), str(sft), "--qa", str(qa), "--judge-url", f"http://127.0.0.1:{port}/v1",
                "--judge-model", "judge", "--judge-max-tokens", "16", "--cache", str(tmp_path / "cache"),
                "--judge-key-file", str(tmp_path / "key"),
                "--out", str(out), *FLAGS]
        assert main(argv) == 0, capsys.readouterr().err
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    for r in report["runs"]:
        s = r["judge"]["summary"]
        assert (s["graded"], s["unparseable"], s["failed"]) == (0, 3, 0) and s["means"]["综合得分"] is None
        assert all(it["reply"] is not None and it["scores"] is None for it in r["judge"]["items"])
    p = report["judge"]["pairwise"]["summary"]
    assert (p["scored"], p["unparseable"], p["failed"], p["win_rate"]) == (0, 3, 0, None)
    usage = report["judge"]["usage"]
    # 12 prompts; on a loaded machine some may be retried (counted in both requests and retries)
    assert usage["requests"] - usage["retries"] == 12 and usage["failed"] == 0
    assert usage["prompt_tokens"] > 12 * 1000 and usage["completion_tokens"] > 0
    assert "unparseable verdicts (not scored)" in (out / "report.md").read_text(encoding="utf-8")
