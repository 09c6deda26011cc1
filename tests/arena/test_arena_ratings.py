"""Ratings: Bradley–Terry recovers known strengths, intervals cover the truth at about 95%, and
ties, a single pair, a disconnected graph and an empty log behave as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest

from miniglm.serve.arena.leaderboard import battles_of, build_leaderboard, format_table, summary
from miniglm.serve.arena.ratings import fit_strengths, fit_strengths_mm, online_elo, ranks, rate

TRUE = {"m0": 1150.0, "m1": 1070.0, "m2": 1000.0, "m3": 930.0, "m4": 850.0}  # mean 1000, as rated


def synthetic_battles(true: dict[str, float], n: int, rng: np.random.Generator) -> list[tuple[str, str, float]]:
    """n battles between uniform random pairs, won with the Bradley–Terry probability on the Elo scale."""
    names = list(true)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        p_a = 1 / (1 + 10 ** ((true[b] - true[a]) / 400))
        out.append((a, b, float(rng.random() < p_a)))
    return out


def test_known_strengths_are_recovered_in_order():
    battles = synthetic_battles(TRUE, 4000, np.random.default_rng(0))
    result = rate(battles, rounds=200, seed=0)
    fitted = sorted(result.ratings, key=lambda m: -result.ratings[m].rating)
    assert fitted == list(TRUE)
    for m, r in result.ratings.items():
        assert abs(r.rating - TRUE[m]) < 25 and r.lower < r.rating < r.upper
    assert [result.ratings[m].rank for m in TRUE] == [1, 2, 3, 4, 5]  # 4000 battles separate 70-point gaps
    assert result.is_connected and np.mean([r.rating for r in result.ratings.values()]) == pytest.approx(1000)


def test_intervals_cover_the_truth_at_about_95_percent():
    rng = np.random.default_rng(1)
    covered = total = 0
    widths = []
    for experiment in range(40):
        result = rate(synthetic_battles(TRUE, 400, rng), rounds=200, seed=experiment)
        for m, truth in TRUE.items():
            r = result.ratings[m]
            covered += r.lower <= truth <= r.upper
            total += 1
            widths.append(r.upper - r.lower)
    assert 0.88 <= covered / total <= 0.99, covered / total  # 200 intervals: 0.95 +- 0.03 (two s.d.)
    assert 60 < np.mean(widths) < 200  # 400 battles over 5 models: about +-55 Elo


def test_newton_fit_matches_hunters_mm_reference():
    rng = np.random.default_rng(2)
    wins = rng.integers(0, 12, (6, 6)).astype(float)
    np.fill_diagonal(wins, 0)
    wins[0, :] = 0  # model 0 never won, model 1 never lost: only the prior keeps them finite
    wins[:, 1] = 0
    games = wins + wins.T
    fast, slow = fit_strengths(wins, games), fit_strengths_mm(wins, games)
    assert np.all(np.isfinite(fast)) and np.allclose(fast, slow, atol=1e-7)
    assert fast.argmin() == 0 and fast.argmax() == 1
    batch = fit_strengths(np.stack([wins, wins.T]), np.stack([games, games]))  # bootstrap-style batch
    assert np.allclose(batch[0], fast) and np.allclose(batch[1], -fast, atol=1e-7)


def test_only_ties_rate_everyone_equal():
    battles = [("a", "b", 0.5), ("b", "c", 0.5), ("c", "a", 0.5)] * 5
    result = rate(battles, rounds=100, seed=0)
    assert all(r.rating == pytest.approx(1000) and r.rank == 1 for r in result.ratings.values())
    assert all(r.online_elo == pytest.approx(1000) for r in result.ratings.values())
    board = build_leaderboard([vote("a", "b", "tie"), vote("a", "b", "both_bad")], rounds=50)
    assert [(row.wins, row.ties, row.losses, row.win_rate) for row in board.rows] == [(0, 2, 0, 0.5)] * 2


def test_a_single_pair_is_symmetric_and_shrunk_by_the_prior():
    battles = [("a", "b", 1.0)] * 7 + [("a", "b", 0.0)] * 3
    result = rate(battles, rounds=300, seed=0)
    a, b = result.ratings["a"], result.ratings["b"]
    assert a.rating + b.rating == pytest.approx(2000) and a.rating > b.rating
    unregularised = 400 * math.log10(7 / 3)  # 147 points: the prior pulls the gap a little toward 0
    assert 0.6 * unregularised < a.rating - b.rating < unregularised
    assert a.lower < b.upper and a.rank == b.rank == 1  # 10 battles cannot separate them
    assert a.online_elo > 1000 > b.online_elo


def test_a_model_that_never_lost_gets_a_finite_rating_and_a_wide_interval():
    battles = [("top", "x", 1.0)] * 5 + [("x", "y", 1.0), ("y", "x", 1.0)] * 5
    r = rate(battles, rounds=200, seed=0).ratings
    assert all(math.isfinite(v.rating) and math.isfinite(v.upper) for v in r.values())
    assert r["top"].rating > r["x"].rating and r["top"].rank == 1
    assert r["top"].upper - r["top"].lower > r["x"].upper - r["x"].lower  # x played 15 battles, top 5


def test_a_disconnected_graph_is_reported_and_each_group_rated_alone():
    battles = [("a", "b", 1.0), ("a", "b", 1.0), ("b", "a", 1.0)] + [("c", "d", 1.0), ("d", "c", 0.5)] + [("e", "c", 0.0)]
    result = rate(battles, rounds=100, seed=0)
    assert result.groups == [["c", "d", "e"], ["a", "b"]] and not result.is_connected
    for g, names in enumerate(result.groups):
        assert np.mean([result.ratings[n].rating for n in names]) == pytest.approx(1000)
        assert {result.ratings[n].group for n in names} == {g}
    votes = [vote(a, b, "left" if s == 1 else "right" if s == 0 else "tie") for a, b, s in battles]
    board = build_leaderboard(votes, rounds=100)
    text = format_table(board)
    assert not board.is_connected and "disconnected (2 groups: {c, d, e} | {a, b})" in text
    assert "a [group 2]" in text and "c [group 1]" in text


def test_an_empty_log_gives_an_empty_board():
    assert rate([]).ratings == {} and rate([]).groups == []
    board = build_leaderboard([], rounds=10)
    assert board.rows == [] and board.is_connected
    assert format_table(board) == "0 votes counted (none); 0 not counted (named, or an answer named a model)\nno battles to rate yet"


def test_rank_is_one_plus_models_clearly_above():
    assert ranks([1100, 1040, 900, 890], [1200, 1120, 1000, 950]) == [1, 1, 3, 3]
    assert ranks([990, 990], [1010, 1010]) == [1, 1]


def test_online_elo_uses_k_4_in_order():
    elo = online_elo([("a", "b", 1.0)])
    assert elo == {"a": 1002.0, "b": 998.0}
    elo = online_elo([("a", "b", 1.0), ("a", "b", 1.0)])
    assert elo["a"] == pytest.approx(1002 + 4 * (1 - 1 / (1 + 10 ** (-4 / 400))))


def test_anchor_and_seed():
    battles = synthetic_battles(TRUE, 300, np.random.default_rng(3))
    anchored = rate(battles, rounds=100, seed=5, anchor="m2").ratings
    assert anchored["m2"].rating == 1000 and anchored["m2"].lower == anchored["m2"].upper == 1000
    again, other = rate(battles, rounds=100, seed=5).ratings, rate(battles, rounds=100, seed=6).ratings
    assert again == rate(battles, rounds=100, seed=5).ratings and again["m0"].lower != other["m0"].lower
    with pytest.raises(ValueError):
        rate([("a", "a", 1.0)])


def vote(left: str, right: str, choice: str, anonymous: bool = True, mode: str = "anonymous") -> dict:
    return {"left": left, "right": right, "vote": choice, "anonymous": anonymous, "mode": mode}


def test_which_votes_count():
    votes = [vote("a", "b", "left"), vote("a", "b", "right", anonymous=False, mode="named"),
             vote("b", "a", "both_bad", anonymous=False), vote("a", "b", "left", mode="judge")]
    assert battles_of(votes) == [("a", "b", 1.0), ("a", "b", 1.0)]
    assert battles_of(votes, include_named=True) == [("a", "b", 1.0), ("a", "b", 0.0), ("b", "a", 0.5), ("a", "b", 1.0)]
    board = build_leaderboard(votes, rounds=20)
    assert board.counted == {"anonymous": 1, "judge": 1} and board.not_counted == 2
    assert summary(board)[0].startswith("2 votes counted (1 anonymous, 1 judge); 2 not counted")
    assert build_leaderboard(votes, include_named=True, rounds=20).rows[0].battles == 4
