"""The leaderboard: which votes count, the table, the heatmaps. Used by the arena page's Leaderboard
tab and by `miniglm arena leaderboard VOTES.jsonl`, so both always show the same numbers.

    board = build_leaderboard(read_votes("votes.jsonl").votes, include_named=False, seed=0)
    print(format_table(board)); write_leaderboard(board, "arena_out/")

Which votes count: those with "anonymous": true (blind battles whose answers did not name a model,
and judge votes); with include_named, every vote. A vote becomes one battle between its left and
right contestants: "left"/"right" a win, "tie" half a win each, and "both_bad" also a tie (both
models failed the question equally, which says nothing about which one is better; counting it as a
tie keeps the evidence that they are close, as the LMSYS arena does).

Per model: Bradley–Terry rating with its 95% interval and rank (`ratings.py`), online Elo, battles,
wins / ties / losses and win rate, where ties count half (the same scoring the ratings use).
Heatmaps: the pairwise win rate of the row model against the column model, and the battle count per
pair, models ordered by rating.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miniglm.serve.arena.ratings import BASELINE, rate

SCORES = {"left": 1.0, "right": 0.0, "tie": 0.5, "both_bad": 0.5}  # score of the left contestant


@dataclass
class Row:
    model: str
    rating: float
    lower: float
    upper: float
    rank: int
    online_elo: float
    battles: int
    wins: int
    ties: int  # ties and both-bad votes
    losses: int
    win_rate: float  # (wins + ties / 2) / battles
    group: int


@dataclass
class Leaderboard:
    rows: list[Row] = field(default_factory=list)  # by group, then rating, best first
    models: list[str] = field(default_factory=list)  # heatmap order (the rows' order)
    win_rate: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (K, K) row vs column; nan: never met
    battles: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=int))  # (K, K)
    groups: list[list[str]] = field(default_factory=list)
    counted: Counter = field(default_factory=Counter)  # counted votes per mode
    not_counted: int = 0  # votes left out because they are not anonymous
    include_named: bool = False

    @property
    def is_connected(self) -> bool:
        return len(self.groups) <= 1


def is_counted(vote: dict[str, Any], include_named: bool) -> bool:
    return include_named or vote["anonymous"] is True


def battles_of(votes: Sequence[dict[str, Any]], include_named: bool = False) -> list[tuple[str, str, float]]:
    return [(v["left"], v["right"], SCORES[v["vote"]]) for v in votes if is_counted(v, include_named)]


def _pair_tables(battles: list[tuple[str, str, float]], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {m: i for i, m in enumerate(models)}
    score, games = np.zeros((len(models),) * 2), np.zeros((len(models),) * 2, dtype=int)
    for a, b, s in battles:
        i, j = index[a], index[b]
        score[i, j] += s
        score[j, i] += 1 - s
        games[i, j] += 1
        games[j, i] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, score / games, np.nan), games


def build_leaderboard(votes: Sequence[dict[str, Any]], include_named: bool = False, rounds: int = 1000,
                      seed: int = 0, anchor: str | None = None) -> Leaderboard:
    """The leaderboard of `votes` (records as `votes.read_votes` returns them)."""
    battles = battles_of(votes, include_named)
    board = Leaderboard(include_named=include_named,
                        counted=Counter(v["mode"] for v in votes if is_counted(v, include_named)))
    board.not_counted = len(votes) - sum(board.counted.values())
    if not battles:
        return board
    result = rate(battles, rounds=rounds, seed=seed, anchor=anchor)
    board.groups = result.groups
    record: dict[str, Counter] = {m: Counter() for m in result.ratings}
    for a, b, s in battles:
        record[a][{1.0: "wins", 0.0: "losses", 0.5: "ties"}[s]] += 1
        record[b][{0.0: "wins", 1.0: "losses", 0.5: "ties"}[s]] += 1
    for r in result.ratings.values():
        c = record[r.model]
        n = c["wins"] + c["ties"] + c["losses"]
        board.rows.append(Row(r.model, r.rating, r.lower, r.upper, r.rank, r.online_elo, n, c["wins"],
                              c["ties"], c["losses"], (c["wins"] + c["ties"] / 2) / n, r.group))
    board.rows.sort(key=lambda row: (row.group, -row.rating, row.model))
    board.models = [row.model for row in board.rows]
    board.win_rate, board.battles = _pair_tables(battles, board.models)
    return board


def summary(board: Leaderboard) -> list[str]:
    """Lines saying what was counted and anything the reader must know before trusting the numbers."""
    modes = ", ".join(f"{n} {mode}" for mode, n in sorted(board.counted.items()))
    lines = [f"{sum(board.counted.values())} votes counted ({modes or 'none'}); "
             f"{board.not_counted} not counted (named, or an answer named a model)"
             + (" [--include-named: all votes counted]" if board.include_named else "")]
    if not board.rows:
        lines.append("no battles to rate yet")
    if not board.is_connected:
        parts = " | ".join("{" + ", ".join(g) + "}" for g in board.groups)
        lines.append(f"WARNING: the comparison graph is disconnected ({len(board.groups)} groups: {parts}); no battle "
                     f"links the groups, so each group is rated on its own (mean {BASELINE:.0f}) and ratings and "
                     f"ranks compare only within a group. Battles between the groups would join them.")
    return lines


COLUMNS = ("rank", "model", "rating", "95% CI", "online Elo", "battles", "W-T-L", "win rate")


def _cells(row: Row, groups: int) -> list[str]:
    cells = [str(row.rank), row.model + (f" [group {row.group + 1}]" if groups > 1 else ""), f"{row.rating:.0f}",
             f"{row.lower:.0f}..{row.upper:.0f}", f"{row.online_elo:.0f}", str(row.battles),
             f"{row.wins}-{row.ties}-{row.losses}", f"{row.win_rate:.0%}"]
    return cells


def format_table(board: Leaderboard) -> str:
    """The leaderboard as aligned plain text, summary lines first."""
    table = [list(COLUMNS)] + [_cells(r, len(board.groups)) for r in board.rows]
    widths = [max(len(r[c]) for r in table) for c in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if c == 1 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
             for r in table] if board.rows else []
    return "\n".join(summary(board) + [""] * bool(lines) + lines)


def format_markdown(board: Leaderboard) -> str:
    lines = [f"> {line}" for line in summary(board)]
    if board.rows:
        lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_cells(r, len(board.groups))) + " |" for r in board.rows]
    return "\n".join(lines)


def _heatmap(board: Leaderboard, values: np.ndarray, title: str, fmt: str, cmap: str, vmax: float):
    from miniglm.evaluate.plot import new_figure, style

    k = len(board.models)
    with style():
        fig = new_figure(width=max(4.0, 1.0 + 0.8 * k), height=max(3.5, 0.8 + 0.7 * k))
        ax = fig.axes[0]
        ax.grid(False)
        image = ax.imshow(np.ma.masked_invalid(values.astype(float)), cmap=cmap, vmin=0, vmax=vmax)
        fig.colorbar(image, ax=ax, shrink=0.8)
        for i in range(k):
            for j in range(k):
                if i != j and not np.isnan(values[i, j]):
                    r, g, b, _ = image.cmap(image.norm(values[i, j]))
                    ink = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"  # readable on any cell
                    ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize="small", color=ink)
        ax.set_xticks(range(k), board.models, rotation=45, ha="right")
        ax.set_yticks(range(k), board.models)
        ax.set_xlabel("opponent")
        ax.set_ylabel("model")
        ax.set_title(title)
    return fig


def plot_win_rates(board: Leaderboard):
    """Heatmap: share of battles the row model won against the column model (ties half); blank: never met."""
    return _heatmap(board, board.win_rate, "win rate of model (row) vs opponent (column)", ".0%", "RdBu", 1.0)


def plot_battle_counts(board: Leaderboard):
    counts = np.where(board.battles > 0, board.battles, np.nan)
    return _heatmap(board, counts, "battles per pair", ".0f", "Blues", max(1, int(board.battles.max(initial=0))))


def write_leaderboard(board: Leaderboard, out: str | Path) -> list[Path]:
    """leaderboard.json, leaderboard.md and, when there are battles, win_rate.png and battles.png in `out`."""
    from miniglm.evaluate.plot import save_figure
    from miniglm.io import atomic_write, atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"baseline": BASELINE, "include_named": board.include_named, "counted": dict(board.counted),
            "not_counted": board.not_counted, "groups": board.groups, "rows": [asdict(r) for r in board.rows],
            "battles": {a: {b: int(board.battles[i, j]) for j, b in enumerate(board.models) if board.battles[i, j]}
                        for i, a in enumerate(board.models)}}
    written = [out / "leaderboard.json", out / "leaderboard.md"]
    atomic_write_json(written[0], data)
    atomic_write(written[1], format_markdown(board) + "\n")
    if board.rows:
        written.append(save_figure(plot_win_rates(board), out / "win_rate.png"))
        written.append(save_figure(plot_battle_counts(board), out / "battles.png"))
    return written
