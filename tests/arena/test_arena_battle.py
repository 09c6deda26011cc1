"""Battles: fair paced streaming, failures shown and not counted, multi-turn, votes, pair drawing."""

from __future__ import annotations

from collections import Counter

import pytest
from arena_fakes import ScriptedContestant

from miniglm.serve.arena.battle import Arena, RoundError, paced, stream_pair
from miniglm.serve.arena.contestants import Settings
from miniglm.serve.arena.votes import VoteLog, make_vote, read_votes


def arena_of(tmp_path, *contestants, **kw) -> Arena:
    return Arena(list(contestants), VoteLog(tmp_path / "votes.jsonl"), seed=kw.pop("seed", 0), tick=0.01, **kw)


def test_paced_cuts_both_to_the_slower_live_answer():
    assert paced(["abcdef", "ab"], [False, False]) == ["ab", "ab"]
    assert paced(["abcdef", "ab"], [False, True]) == ["abcdef", "ab"]  # a finished answer holds nothing back
    assert paced(["abc", "abcdef"], [True, False]) == ["abc", "abcdef"]
    assert paced(["abcdef", "abcd"], [True, False]) == ["abcd", "abcd"]
    assert paced(["xy", "z"], [True, True]) == ["xy", "z"]


def test_a_fast_model_is_shown_at_the_pace_of_the_slow_one():
    fast = ScriptedContestant("fast", ["快"] * 10)
    slow = ScriptedContestant("slow", ["慢"] * 10, delay=0.02, first_delay=0.2)
    frames = list(stream_pair(lambda: fast.stream([], "q", Settings()), lambda: slow.stream([], "q", Settings()),
                              tick=0.005))
    texts = [f[0] for f in frames]
    assert texts[-1] == ["快" * 10, "慢" * 10] and frames[-1][1] == [None, None]
    assert len(texts) > 3  # streamed, not shown at once at the end
    # the fast answer was complete after ~0 s, the slow one took 0.4 s: still they grew together
    assert all(len(a) == len(b) for a, b in texts)


def test_a_failing_contestant_shows_its_error_and_the_round_cannot_be_voted(tmp_path):
    good, bad = ScriptedContestant("good", ["好", "的"]), ScriptedContestant("bad", ["坏", "了"], fail_after=1)
    arena = arena_of(tmp_path, good, bad)
    rnd = arena.new_round("named", "good", "bad")
    *_, last = arena.ask(rnd, "你好", Settings())
    assert last == ("好的", "坏") and rnd.errors == {"left": [None], "right": ["bad broke down"]}
    assert rnd.messages("right")[-1]["content"] == "坏\n\n⚠️ error: bad broke down"
    with pytest.raises(RoundError, match="not counted: a contestant failed \\(right: bad broke down\\)"):
        arena.vote(rnd, "left")
    assert not (tmp_path / "votes.jsonl").exists() or read_votes(tmp_path / "votes.jsonl").votes == []
    bad.fail_after = None
    list(arena.regenerate(rnd, Settings()))  # the retry replaces the failed turn, and can be voted on
    assert rnd.answers == {"left": ["好的"], "right": ["坏了"]} and rnd.failed == []
    assert arena.vote(rnd, "left")["vote"] == "left"


def test_follow_ups_go_to_both_with_their_own_history_and_the_vote_logs_the_round(tmp_path):
    a, b = ScriptedContestant("a", ["甲"]), ScriptedContestant("b", ["乙"])
    arena = arena_of(tmp_path, a, b)
    rnd = arena.new_round("anonymous", session="sess")
    list(arena.ask(rnd, "第一问", Settings(temperature=0.5)))
    list(arena.ask(rnd, " 第二问 ", Settings(temperature=0.5)))
    left = a if rnd.left == "a" else b
    assert [c[:2] for c in left.calls] == [([], "第一问"), ([("第一问", left.pieces[0])], "第二问")]
    with pytest.raises(RoundError, match="unknown vote"):
        arena.vote(rnd, "A")
    rec = arena.vote(rnd, "right")
    assert rec["mode"] == "anonymous" and rec["anonymous"] is True and rec["session"] == "sess"
    assert rec["conversation"] == [{"role": "user", "content": "第一问"}, {"role": "user", "content": "第二问"}]
    assert rec["answers"] == {"left": left.pieces[0], "right": ({"甲", "乙"} - {left.pieces[0]}).pop()}
    assert rec["earlier_answers"] == {"left": [rec["answers"]["left"]], "right": [rec["answers"]["right"]]}
    assert rec["settings"]["temperature"] == 0.5 and isinstance(rec["settings"]["seed"], int)
    assert read_votes(tmp_path / "votes.jsonl").votes == [rec]
    for action in (lambda: arena.vote(rnd, "tie"), lambda: list(arena.ask(rnd, "再问", Settings()))):
        with pytest.raises(RoundError):
            action()
    assert arena.pair_counts == {frozenset({"a", "b"}): 1}


def test_an_answer_naming_a_model_keeps_the_vote_but_not_as_anonymous(tmp_path):
    arena = arena_of(tmp_path, ScriptedContestant("alice", ["我是 alice。"]), ScriptedContestant("bob", ["你好"]))
    rnd = arena.new_round("anonymous")
    list(arena.ask(rnd, "你是谁？", Settings()))
    rec = arena.vote(rnd, "tie")
    assert rec["anonymous"] is False and rec["revealed_by"] == [
        f"{'left' if rnd.left == 'alice' else 'right'} answer names 'alice' (contestant alice)"]
    assert read_votes(tmp_path / "votes.jsonl").votes == [rec] and arena.pair_counts == {}


def test_votes_need_complete_answers_and_an_abandoned_turn_keeps_the_round_aligned(tmp_path):
    slow = ScriptedContestant("slow", ["一", "二", "三"], delay=0.05)
    arena = arena_of(tmp_path, slow, ScriptedContestant("b", ["乙"]))
    rnd = arena.new_round("named", "slow", "b")
    with pytest.raises(RoundError, match="wait for both answers"):
        arena.vote(rnd, "left")
    turn = arena.ask(rnd, "问", Settings())
    next(turn)
    turn.close()  # the page moved on (new round, closed tab) mid-stream
    assert len(rnd.answers["left"]) == len(rnd.questions) == 1 and rnd.errors["left"] == [
        "stopped before the answer was complete"]
    with pytest.raises(RoundError, match="not counted"):
        arena.vote(rnd, "left")


def test_named_rounds_need_two_different_contestants(tmp_path):
    arena = arena_of(tmp_path, ScriptedContestant("a", ["x"]), ScriptedContestant("b", ["y"]))
    for left, right in (("a", "a"), ("a", "zzz")):
        with pytest.raises(RoundError, match="pick two different contestants"):
            arena.new_round("named", left, right)
    rnd = arena.new_round("named", "b", "a")
    list(arena.ask(rnd, "q", Settings()))
    rec = arena.vote(rnd, "both_bad")
    assert (rec["left"], rec["right"], rec["mode"], rec["anonymous"]) == ("b", "a", "named", False)
    with pytest.raises(Exception, match="at least two contestants"):
        arena_of(tmp_path, ScriptedContestant("a", ["x"]))


def test_pairs_are_uniform_or_balanced_toward_pairs_with_few_votes(tmp_path):
    names = ["a", "b", "c", "d"]
    log = VoteLog(tmp_path / "votes.jsonl")
    old = dict(session="s", mode="anonymous", vote="left", conversation=[], answers={"left": "", "right": ""},
               settings={}, anonymous=True)
    log.extend([make_vote(left="a", right="b", **old)] * 99)  # a-b already has 99 votes
    contestants = [ScriptedContestant(n, ["x"]) for n in names]
    balanced = Arena(contestants, log, seed=1)
    uniform = Arena(contestants, log, pairing="uniform", seed=1)
    draws = {"balanced": Counter(), "uniform": Counter()}
    sides = Counter()
    for _ in range(3000):
        left, right = balanced.draw_pair()
        draws["balanced"][frozenset((left, right))] += 1
        sides[left < right] += 1
        draws["uniform"][frozenset(uniform.draw_pair())] += 1
    ab = frozenset("ab")
    assert len(draws["uniform"]) == len(draws["balanced"]) == 6
    assert 400 < draws["uniform"][ab] < 600  # 1/6 of 3000
    assert draws["balanced"][ab] < 150  # weight 1/10 of the others'
    assert 1350 < sides[True] < 1650  # sides are a coin flip
