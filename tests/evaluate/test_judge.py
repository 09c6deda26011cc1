"""The LLM judge over real HTTP: verdict parsing, retries, timeouts, cache, swap logic, aggregation, votes."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("httpx")

from judge_server import FakeJudge  # noqa: E402

from miniglm.errors import UserError  # noqa: E402
from miniglm.evaluate import judge  # noqa: E402
from miniglm.evaluate.judge_client import Endpoint, JudgeClient, JudgeError, ReplyCache  # noqa: E402
from miniglm.evaluate.judge_prompts import grade_prompt, pair_prompt, parse_grade, parse_pair  # noqa: E402
from miniglm.serve.arena.votes import read_votes  # noqa: E402

DIMS = ("事实正确性", "满足用户需求", "逻辑连贯性", "完备性")


def scores_json(**override) -> str:
    s = {**dict.fromkeys(DIMS, 7), "综合得分": 7, **override}
    return json.dumps(s, ensure_ascii=False)


def rows(*answers: str) -> list[dict]:
    return [{"index": i, "question": f"问题{i}是什么？", "reference": f"参考答案{i}。", "answer": a}
            for i, a in enumerate(answers)]


def client(server: FakeJudge, cache_dir=None, **kw) -> JudgeClient:
    kw = {"timeout": 5.0, "retries": 2, "backoff": 0.01, "concurrency": 4, **kw}
    return JudgeClient(Endpoint(server.url, "fake-judge", **kw), ReplyCache(cache_dir))


# --------------------------------------------------------------------------- prompts and parsing


def test_grade_prompt_puts_reference_before_answer_and_spells_out_bands():
    p = grade_prompt("长江有多长？", "约6300公里。", "很长。")
    assert p.index("约6300公里。") < p.index("很长。")
    assert all(d in p for d in DIMS) and "综合得分" in p
    assert "1到2分" in p and "9到10分" in p and "参考答案本身可以得到8分" in p


def test_parse_grade_accepts_the_fixed_format_only():
    g = parse_grade("与参考答案相比，缺少细节。\n" + scores_json(完备性=4, 综合得分=5))
    assert g.problem is None and g.scores["完备性"] == 4 and g.scores["综合得分"] == 5
    assert g.reason == "与参考答案相比，缺少细节。"
    fenced = parse_grade("理由。\n```json\n" + scores_json() + "\n```\n")
    assert fenced.scores is not None and fenced.reason == "理由。"
    bad = {
        "no scores": "回答不错，给七分。",
        "text after": scores_json() + "\n以上。",
        "missing key": json.dumps(dict.fromkeys(DIMS, 7), ensure_ascii=False),
        "extra key": scores_json(创造性=5),
        "above 10": scores_json(综合得分=11),
        "below 1": scores_json(事实正确性=0),
        "not integer": scores_json(综合得分=7.5),
        "string": scores_json(综合得分="7"),
        "bool": scores_json(综合得分=True),
        "single quotes": "{'事实正确性': 7}",
        "empty": "",
    }
    for case, text in bad.items():
        g = parse_grade(text)
        assert g.scores is None and g.problem, case


def test_parse_pair_reads_only_the_last_line():
    assert parse_pair("A更准确。\n[[A]]").winner == "A"
    assert parse_pair("分析……\n结论：[[B]]\n").winner == "B"
    v = parse_pair("两者相当。\n[[C]]")
    assert v.winner == "tie" and v.reason == "两者相当。"
    for text in ("[[A]] 因为A更好", "[[A]]\n补充说明", "[[D]]", "", "A更好", "[[A]][[B]]"):
        assert parse_pair(text).winner is None and parse_pair(text).problem, text
    p = pair_prompt("问？", "参考。", "甲答", "乙答")
    assert p.index("参考。") < p.index("甲答") < p.index("乙答") and "[[C]]" in p


def test_bootstrap_interval_is_seeded_and_sane():
    assert judge.bootstrap_ci([]) is None
    assert judge.bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    values = [1.0] * 30 + [0.0] * 10
    lo, hi = judge.bootstrap_ci(values, seed=3)
    assert (lo, hi) == judge.bootstrap_ci(values, seed=3)
    assert lo < 0.75 < hi and 0.55 < lo and hi < 0.9  # mean 0.75, standard error ~0.07


# --------------------------------------------------------------------------- grading over HTTP


def test_grading_counts_unparseable_and_failed_never_scores_them(tmp_path):
    with FakeJudge() as server:
        g = judge.grade_answers(client(server, retries=1), rows("好的回答", "差的回答", "乱说一通", "拒绝", "崩溃"))
    status = [it["status"] for it in g["items"]]
    assert status == ["ok", "ok", "unparseable", "failed", "failed"]
    s = g["summary"]
    assert (s["items"], s["graded"], s["unparseable"], s["failed"]) == (5, 2, 1, 2)
    assert s["means"]["综合得分"] == 5.0 and s["means"]["事实正确性"] == 5.0  # (8 + 2) / 2: nothing else counted
    lo, hi = s["overall_ci"]
    assert 2 <= lo <= hi <= 8
    bad = g["items"][2]
    assert bad["scores"] is None and bad["reply"] == "两个回答都还行吧，我给七分。" and "JSON" in bad["problem"]
    assert "HTTP 400" in g["items"][3]["problem"] and "after 2 attempts" in g["items"][4]["problem"]
    assert g["items"][0]["reason"].startswith("与参考答案相比")
    # 400 is not retried; 500 is retried once (retries=1)
    per_prompt = {p[-40:]: n for p, n in server.seen.items()}
    assert sorted(per_prompt.values()) == [1, 1, 1, 1, 2]


def test_request_shape_and_key(tmp_path):
    with FakeJudge(key="sk-test-123") as server:
        c = JudgeClient(Endpoint(server.url + "/chat/completions", "judge-x", key="sk-test-123", max_tokens=77),
                        ReplyCache(tmp_path / "cache"))
        [reply] = c.ask_many(["你好"])
        req = server.requests[0]
        assert req["path"] == "/v1/chat/completions" and req["headers"]["Authorization"] == "Bearer sk-test-123"
        assert req["body"] == {"model": "judge-x", "messages": [{"role": "user", "content": "你好"}],
                               "temperature": 0, "max_tokens": 77, "stream": False}
        assert reply.error is None and reply.content
        with pytest.raises(JudgeError, match="401.*judge-key"):
            JudgeClient(Endpoint(server.url, "judge-x", key="wrong"), ReplyCache(None)).ask_many(["你好"])
    assert all("sk-test-123" not in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_429_waits_for_retry_after_then_succeeds():
    with FakeJudge() as server:
        c = client(server)
        t0 = time.perf_counter()
        g = judge.grade_answers(c, rows("忙但是好"))
        elapsed = time.perf_counter() - t0
    assert g["items"][0]["status"] == "ok" and g["items"][0]["scores"]["综合得分"] == 8
    assert elapsed >= 1.0  # Retry-After: 1 honoured, not the 0.01 s backoff
    assert c.stats["requests"] == 2 and c.stats["retries"] == 1 and c.stats["failed"] == 0


def test_timeout_is_retried_and_exhausted_retries_fail_the_item():
    with FakeJudge(slow_seconds=1.0) as server:
        c = client(server, timeout=0.3)
        g = judge.grade_answers(c, rows("慢而好"))
        assert g["items"][0]["status"] == "ok" and c.stats["retries"] == 1
    with FakeJudge(delay=0.5) as server:  # every reply too slow
        c = client(server, timeout=0.2, retries=1)
        g = judge.grade_answers(c, rows("好"))
    assert g["items"][0]["status"] == "failed" and "no answer within 0.2 s" in g["items"][0]["problem"]
    assert c.stats["requests"] == 2 and c.stats["failed"] == 1
    with pytest.raises(JudgeError, match="answered none of 1"):
        judge.check_answered([g], None, "url")


def test_cache_makes_a_rerun_free_and_survives_a_corrupt_entry(tmp_path):
    cache = tmp_path / "cache"
    answers = rows("好", "差", "乱", "随便答答")
    with FakeJudge() as server:
        c1 = client(server, cache)
        first = judge.grade_answers(c1, answers)
        sent = len(server.requests)
        assert sent == 4 and c1.stats["prompt_tokens"] > 0 and c1.stats["cache_hits"] == 0
        c2 = client(server, cache)
        second = judge.grade_answers(c2, answers)
        assert len(server.requests) == sent  # zero requests
        assert c2.stats["requests"] == 0 and c2.stats["cache_hits"] == 4 and c2.stats["prompt_tokens"] == 0
        assert c2.stats["cached_prompt_tokens"] == c1.stats["prompt_tokens"]
        strip = [{k: v for k, v in it.items() if k != "cached"} for it in first["items"]]
        assert strip == [{k: v for k, v in it.items() if k != "cached"} for it in second["items"]]
        assert all(it["cached"] for it in second["items"])
        files = sorted(cache.rglob("*"))
        assert len([f for f in files if f.suffix == ".json"]) == 4 and not [f for f in files if f.suffix == ".tmp"]
        for f in cache.rglob("*.json"):
            f.write_text("{torn")
        judge.grade_answers(client(server, cache), answers)
        assert len(server.requests) == sent + 4  # unreadable entries are asked again
        # another judge model is another cache key
        JudgeClient(Endpoint(server.url, "other-judge"), ReplyCache(cache)).ask_many([grade_prompt("q", "r", "a")])
        assert len(server.requests) == sent + 5


def test_concurrency_limit_and_duplicate_prompts_sent_once():
    with FakeJudge(delay=0.1) as server:
        c = client(server, concurrency=2)
        replies = c.ask_many([grade_prompt("q", "r", f"答{i % 4}") for i in range(8)])
    assert len(server.requests) == 4 and server.in_flight_max == 2
    assert [r.content for r in replies[:4]] == [r.content for r in replies[4:]]


# --------------------------------------------------------------------------- pairwise


def test_pairwise_both_orders_swap_and_tie_on_disagreement():
    a = rows("差一", "好二", "偏三", "乱四", "差五", "崩六")
    b = rows("好一", "差二", "偏三b", "好四", "好五", "好六")
    with FakeJudge() as server:
        p = judge.compare_answers(client(server, retries=0), a, b, ("base", "sft"), seed=1)
    items = p["items"]
    assert [it["status"] for it in items] == ["ok", "ok", "ok", "unparseable", "ok", "failed"]
    assert [it["winner"] for it in items] == ["b", "a", "tie", None, "b", None]
    assert [o["verdict"] for o in items[0]["orders"]] == ["B", "A"]  # b first in the second order
    assert [o["verdict"] for o in items[2]["orders"]] == ["A", "A"] and items[2]["consistent"] is False
    s = p["summary"]
    assert (s["wins"], s["ties"], s["losses"], s["scored"], s["unparseable"], s["failed"]) == (2, 1, 1, 4, 1, 1)
    assert s["win_rate"] == pytest.approx(2.5 / 4) and s["orders_agreed"] == 3
    lo, hi = s["win_rate_ci"]
    assert 0 <= lo <= 2.5 / 4 <= hi <= 1
    assert s["first_position_preferred"] == pytest.approx(5 / 8)  # 8 parsed decisive verdicts, 5 for "A"
    prompts = [r["body"]["messages"][0]["content"] for r in server.requests]
    first, second = (pair_prompt("问题0是什么？", "参考答案0。", x, y) for x, y in (("差一", "好一"), ("好一", "差一")))
    assert first in prompts and second in prompts
    with pytest.raises(UserError, match="different questions"):
        judge.compare_answers(client(server), a[:1], rows("x", "y")[1:], ("a", "b"))
    with pytest.raises(UserError, match="answered 2 and 1 questions"):
        judge.compare_answers(client(server), a[:2], b[:1], ("a", "b"))


def test_votes_in_the_arena_format(tmp_path):
    a, b = rows("差一", "好二", "偏三", "乱四"), rows("好一", "差二", "偏三b", "好四")
    with FakeJudge() as server:
        c = client(server)
        p = judge.compare_answers(c, a, b, ("base", "sft"))
    votes = judge.pair_votes(p, c.endpoint, session="judge-test")
    path = tmp_path / "arena" / "votes.jsonl"
    judge.write_votes(path, votes)
    read = read_votes(path)
    assert read.warnings == [] and len(read.votes) == 3  # the unparseable pair casts no vote
    v = read.votes[0]
    assert (v["mode"], v["left"], v["right"], v["vote"], v["anonymous"]) == ("judge", "base", "sft", "right", True)
    assert v["conversation"] == [{"role": "user", "content": "问题0是什么？"}]
    assert v["answers"] == {"left": "差一", "right": "好一"} and v["session"] == "judge-test"
    assert v["settings"]["orders"] == ["right", "right"] and v["settings"]["judge"]["model"] == "fake-judge"
    assert [x["vote"] for x in read.votes] == ["right", "left", "tie"]
    assert read.votes[2]["settings"]["orders"] == ["left", "right"]


def test_contestant_names_are_made_distinct():
    runs = [{"name": "a", "checkpoint": "runs/a/checkpoints/step_1"}, {"name": "a", "checkpoint": "runs/a/checkpoints/step_2"}]
    assert judge.contestant_names(runs) == ["a@step_1", "a@step_2"]
    assert judge.contestant_names([{"name": "x", "checkpoint": "c"}, {"name": "y", "checkpoint": "c"}]) == ["x", "y"]


def test_retry_after_header_forms():
    from email.utils import formatdate

    from miniglm.evaluate.judge_client import _retry_after

    assert _retry_after("2") == 2.0 and _retry_after("0.5") == 0.5 and _retry_after("-3") == 0.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert 25 < _retry_after(formatdate(time.time() + 30, usegmt=True)) <= 30
