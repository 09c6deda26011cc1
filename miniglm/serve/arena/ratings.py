"""Ratings from pairwise battles: Bradley–Terry maximum likelihood on the Elo scale, bootstrap
intervals, ranks, online Elo, and the comparison graph's connected groups. Numbers only (numpy);
which votes become battles is `leaderboard.py`'s business.

    result = rate([("alice", "bob", 1.0), ("bob", "carol", 0.5), ...], rounds=1000, seed=0)
    result.ratings["alice"].rating, .lower, .upper, .rank, .online_elo, .group

A battle is (a, b, score of a): 1 a won, 0 b won, 0.5 a tie (a tie counts half a win to each
side, the usual Bradley–Terry treatment of ties).

- Model: P(a beats b) = p_a / (p_a + p_b). log p is fitted by Newton's method on the log-likelihood
  (logistic regression), on all bootstrap samples at once as arrays; Hunter's (2004) MM iteration
  is kept as the slow reference it is tested against.
- Prior: each model also plays `prior` virtual tied games against a fixed virtual player of strength
  1. Without it a model that never lost (or never won) has no finite maximum; with it that model
  gets a large but finite rating and a wide interval. One virtual game moves a model with tens of
  real battles by a few Elo points.
- Elo scale: rating = 400 * log10(p), shifted so that the mean rating of each group is 1000 (the
  baseline), or so that `anchor` is exactly 1000 when given. A 400-point gap means 10:1 odds;
  100 points means the stronger model wins 64% of the time.
- Intervals: percentile bootstrap. The battles are resampled with replacement `rounds` times
  (seeded, so a leaderboard is reproducible), refitted and re-anchored each time; the 95% interval
  is the 2.5th..97.5th percentile of a model's ratings.
- Rank: 1 + the number of models (in its group) whose lower bound is above this model's upper bound,
  so models whose intervals overlap share a rank.
- Online Elo: the classic sequential update with k=4 from 1000, in battle order; shown beside the
  MLE for comparison (it depends on the order of the battles; the MLE does not).
- Groups: the connected components of the graph whose edges are pairs with at least one battle.
  Ratings in different groups share no comparison, so each group is fitted and anchored on its own
  and the result lists the groups; comparing numbers across groups is meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BASELINE = 1000.0  # Elo-scale rating of the anchor (the group mean, or the named anchor model)
ELO_PER_NAT = 400 / math.log(10)  # rating points per unit of natural-log strength
ONLINE_K = 4.0  # online Elo step size (as in the LMSYS arena's online Elo)
PRIOR_GAMES = 1.0  # virtual tied games per model against a strength-1 player (see module docstring)

Battle = tuple[str, str, float]


@dataclass
class Rating:
    model: str
    rating: float  # Bradley–Terry MLE on the Elo scale
    lower: float  # 95% bootstrap interval
    upper: float
    rank: int  # 1 + models in the group whose lower bound > this upper bound
    online_elo: float  # sequential Elo, k=4, for comparison
    group: int  # index into RatingResult.groups


@dataclass
class RatingResult:
    ratings: dict[str, Rating] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)  # connected components, biggest first

    @property
    def is_connected(self) -> bool:
        return len(self.groups) <= 1


def groups_of(battles: Sequence[Battle]) -> list[list[str]]:
    """Connected components of the comparison graph (union-find), biggest first, names sorted."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps the trees flat
            x = parent[x]
        return x

    for a, b, _ in battles:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        parent[root(a)] = root(b)
    comps: dict[str, list[str]] = {}
    for name in parent:
        comps.setdefault(root(name), []).append(name)
    return sorted((sorted(c) for c in comps.values()), key=lambda c: (-len(c), c))


def fit_strengths(wins: np.ndarray, games: np.ndarray, prior: float = PRIOR_GAMES, tol: float = 1e-10,
                  max_iter: int = 200) -> np.ndarray:
    """Log-strengths (natural log) maximising the Bradley–Terry likelihood plus the prior, by Newton's
    method (logistic regression's IRLS); steps are capped at 1 nat so a lopsided sample cannot overshoot.

    wins[..., i, j]: wins of i over j (ties as 0.5 each); games[..., i, j]: battles between i and j
    (symmetric). Leading dimensions are independent problems (bootstrap samples). -> (..., K)
    """
    won = wins.sum(-1) + prior / 2  # (..., K) the virtual games are ties: half a win each
    theta = np.zeros(won.shape)
    eye = np.eye(won.shape[-1])
    for _ in range(max_iter):
        p = np.exp(theta)
        sig = p[..., :, None] / (p[..., :, None] + p[..., None, :])  # (..., K, K) P(i beats j)
        sig0 = p / (p + 1)  # (..., K) P(i beats the virtual player)
        grad = won - (games * sig).sum(-1) - prior * sig0
        info = games * sig * sig.swapaxes(-1, -2)  # Fisher information: -Hessian off the diagonal is -info
        info = eye * (info.sum(-1) + prior * sig0 * (1 - sig0))[..., None] - info
        step = np.linalg.solve(info, grad[..., None])[..., 0]
        size = np.abs(step).max(-1, keepdims=True)
        theta = theta + step / np.maximum(size, 1.0)
        if size.max(initial=0.0) < tol:
            break
    return theta


def fit_strengths_mm(wins: np.ndarray, games: np.ndarray, prior: float = PRIOR_GAMES, tol: float = 1e-12,
                     max_iter: int = 200000) -> np.ndarray:
    """The same fit by Hunter's (2004) MM iteration, p_i <- W_i / (sum_j n_ij / (p_i + p_j) + prior / (p_i + 1)):
    slow (thousands of steps) but obviously right; the reference `fit_strengths` is tested against."""
    won = wins.sum(-1) + prior / 2
    p = np.ones(won.shape)
    for _ in range(max_iter):
        p_new = won / ((games / (p[..., :, None] + p[..., None, :])).sum(-1) + prior / (p + 1))
        done = np.abs(np.log(p_new) - np.log(p)).max(initial=0.0) < tol
        p = p_new
        if done:
            break
    return np.log(p)


def _to_elo(log_p: np.ndarray, anchor_index: int | None) -> np.ndarray:
    """Elo-scale ratings, shifted to the baseline (the anchor model's, or the mean's). (..., K)"""
    elo = log_p * ELO_PER_NAT
    ref = elo[..., [anchor_index]] if anchor_index is not None else elo.mean(-1, keepdims=True)
    return elo - ref + BASELINE


def _cells(battles: Sequence[Battle], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (winner-side, loser-side, score) cells and their counts, for fast resampling."""
    counts: dict[tuple[int, int, float], int] = {}
    for a, b, s in battles:
        i, j = index[a], index[b]
        key = (i, j, s) if i < j else (j, i, 1.0 - s)  # one orientation per pair
        counts[key] = counts.get(key, 0) + 1
    keys = list(counts)
    ij = np.array([(i, j) for i, j, _ in keys], dtype=np.int64).reshape(-1, 2)
    score = np.array([s for _, _, s in keys], dtype=float)
    return ij, score, np.array([counts[k] for k in keys], dtype=np.int64)


def _matrices(ij: np.ndarray, score: np.ndarray, counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(wins, games) as (B, K, K) from cell counts (B, C)."""
    b = counts.shape[0]
    wins, games = np.zeros((b, k, k)), np.zeros((b, k, k))
    for c, (i, j) in enumerate(ij):
        n = counts[:, c]
        wins[:, i, j] += n * score[c]
        wins[:, j, i] += n * (1 - score[c])
        games[:, i, j] += n
        games[:, j, i] += n
    return wins, games


def online_elo(battles: Sequence[Battle], k: float = ONLINE_K) -> dict[str, float]:
    """Sequential Elo from BASELINE, in the given order."""
    elo: dict[str, float] = {}
    for a, b, s in battles:
        ra, rb = elo.setdefault(a, BASELINE), elo.setdefault(b, BASELINE)
        expected = 1 / (1 + 10 ** ((rb - ra) / 400))
        elo[a], elo[b] = ra + k * (s - expected), rb - k * (s - expected)
    return elo


def ranks(lower: Sequence[float], upper: Sequence[float]) -> list[int]:
    """1 + how many models have a lower bound above this model's upper bound."""
    return [1 + sum(lo > up for lo in lower) for up in upper]


def _rate_group(battles: Sequence[Battle], names: list[str], rounds: int, rng: np.random.Generator,
                anchor: str | None, prior: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rating, lower, upper) per name of one connected group."""
    index = {n: i for i, n in enumerate(names)}
    anchor_index = index.get(anchor) if anchor is not None else None
    ij, score, counts = _cells(battles, index)
    wins, games = _matrices(ij, score, counts[None, :], len(names))
    point = _to_elo(fit_strengths(wins[0], games[0], prior), anchor_index)
    if rounds <= 0 or len(names) < 2:
        return point, point.copy(), point.copy()
    # Resampling battles with replacement = drawing cell counts from a multinomial.
    draws = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=rounds)
    boot = _to_elo(fit_strengths(*_matrices(ij, score, draws, len(names)), prior), anchor_index)
    lower, upper = np.percentile(boot, [2.5, 97.5], axis=0)
    return point, lower, upper


def rate(battles: Sequence[Battle], rounds: int = 1000, seed: int = 0, anchor: str | None = None,
         prior: float = PRIOR_GAMES) -> RatingResult:
    """Ratings, intervals, ranks and online Elo of every model in `battles` (see module docstring)."""
    for a, b, s in battles:
        if a == b or s not in (0.0, 0.5, 1.0):
            raise ValueError(f"bad battle {(a, b, s)}: two different models and a score of 0, 0.5 or 1")
    result = RatingResult(groups=groups_of(battles))
    elo = online_elo(battles)
    rng = np.random.default_rng(seed)
    for g, names in enumerate(result.groups):
        members = set(names)
        mine = [bt for bt in battles if bt[0] in members]
        point, lower, upper = _rate_group(mine, names, rounds, rng, anchor, prior)
        for name, r, lo, up, rk in zip(names, point, lower, upper, ranks(lower, upper)):
            result.ratings[name] = Rating(name, float(r), float(lo), float(up), int(rk), elo[name], g)
    return result
