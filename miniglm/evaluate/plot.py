"""Figures: training curves from runs' `metrics.jsonl`, and Rouge-L / quality-flag charts from eval reports.

Owns reading `metrics.jsonl` for plotting and drawing every figure `miniglm plot` writes:

    loss.png          train and val loss vs step and vs tokens seen
    lr.png            learning rate vs step
    throughput.png    training tokens/s vs step
    val_metrics.png   val perplexity and val bits per character vs step
    stages.png        pretrain followed by SFT on one step axis (only when runs of both modes are given)
    rouge_l.png       histogram of per-answer Rouge-L F (from report.json files)
    flags.png         quality-flag counts per checkpoint (from report.json files)

Several runs are overlaid, labeled by run directory name. Each `plot_*` function returns a
matplotlib `Figure` (so tests can read the plotted data back); `plot_runs` writes the PNGs.
matplotlib (the `eval` extra) is imported lazily and only its Agg canvas is used, so no display
is needed. A CJK font (Noto Sans CJK, from fonts-noto-cjk) is used when installed, so Chinese
labels are not drawn as boxes; without one the figures are still drawn.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miniglm.errors import UserError
from miniglm.extras import require
from miniglm.io import atomic_write
from miniglm.train.run import read_metrics as read_run_metrics

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "Noto Serif CJK SC", "SimHei")


class PlotError(UserError, ValueError):
    """A run directory without a readable metrics.jsonl, or an unusable report."""


@dataclass
class RunMetrics:
    """The records of one run's metrics.jsonl, split by type."""

    name: str
    path: Path
    mode: str = "pretrain"
    init_from: str | None = None
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        return max((r["step"] for r in self.train + self.evals), default=0)


def read_metrics(run_dir: str | Path) -> RunMetrics:
    """Parse a run's metrics.jsonl; a malformed line is an error naming file:line."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        what = "run directory not found" if not run_dir.exists() else "no metrics.jsonl (not a run directory made by `miniglm train`?)"
        raise PlotError(f"{run_dir}: {what}")
    run = RunMetrics(run_dir.resolve().name, run_dir)
    for rec in read_run_metrics(path, PlotError):  # the run directory's one reader
        if rec["type"] == "start":
            run.mode = rec.get("mode") or run.mode
            run.init_from = rec.get("init_from")
        elif rec["type"] == "train":
            run.train.append(rec)
        elif rec["type"] == "eval":
            run.evals.append(rec)
    if not run.train and not run.evals:
        raise PlotError(f"{path}: no train or eval records to plot")
    return run


def series(records: Sequence[dict[str, Any]], x: str, y: str, x_offset: float = 0) -> tuple[list, list]:
    """(xs, ys) of the records that have both keys with numbers."""
    pts = [(r[x] + x_offset, r[y]) for r in records
           if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


# --------------------------------------------------------------------------- matplotlib plumbing


def cjk_font() -> str | None:
    font_manager = require("matplotlib.font_manager", "eval")

    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for n in CJK_FONTS if n in names), None)


def style() -> contextlib.AbstractContextManager:
    """rcParams for every figure: a CJK-capable sans-serif font first when one is installed."""
    matplotlib = require("matplotlib", "eval")
    font = cjk_font()
    rc = {"axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100, "axes.unicode_minus": False}
    if font:
        # named fonts (not the "sans-serif" alias), so texts keep them whatever rcParams say at draw time
        rc |= {"font.family": [font, "DejaVu Sans"]}
    return matplotlib.rc_context(rc)


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2):
    """A Figure on the Agg canvas (no pyplot, no global figure state)."""
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "eval").FigureCanvasAgg
    Figure = require("matplotlib.figure", "eval").Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    fig.subplots(nrows, ncols, squeeze=False)
    return fig


def _finish(ax, title: str, xlabel: str, ylabel: str, log: bool = False) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if ax.get_lines() or ax.patches:
        ax.legend(fontsize="small")


def save_figure(fig, path: str | Path) -> Path:
    """Write a PNG atomically."""
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png")
    return atomic_write(path, buf.getvalue())


# --------------------------------------------------------------------------- training curves


def plot_loss(runs: Sequence[RunMetrics]):
    """Left: loss vs step; right: loss vs tokens. Train as lines, val as markers, per run."""
    with style():
        fig = new_figure(ncols=2)
        for ax, x, xlabel in zip(fig.axes, ("step", "tokens"), ("step", "tokens seen")):
            for run in runs:
                line = ax.plot(*series(run.train, x, "loss"), label=f"{run.name} train", lw=1)[0]
                ax.plot(*series(run.evals, x, "val_loss"), "o--", color=line.get_color(), ms=3,
                        label=f"{run.name} val")
            _finish(ax, f"loss vs {xlabel}", xlabel, "cross-entropy (nats/token)")
    return fig


def _per_step(runs: Sequence[RunMetrics], key: str, title: str, ylabel: str, log: bool = False):
    with style():
        fig = new_figure()
        ax = fig.axes[0]
        for run in runs:
            ax.plot(*series(run.train, "step", key), label=run.name, lw=1)
        _finish(ax, title, "step", ylabel, log)
    return fig


def plot_lr(runs: Sequence[RunMetrics]):
    return _per_step(runs, "lr", "learning rate", "learning rate")


def plot_throughput(runs: Sequence[RunMetrics]):
    return _per_step(runs, "tokens_per_sec", "training throughput", "tokens/s")


def plot_val_metrics(runs: Sequence[RunMetrics]):
    """Left: val perplexity (log scale); right: val bits per character (pretrain runs only)."""
    with style():
        fig = new_figure(ncols=2)
        for run in runs:
            fig.axes[0].plot(*series(run.evals, "step", "val_ppl"), "o-", ms=3, label=run.name)
            fig.axes[1].plot(*series(run.evals, "step", "val_bpc"), "o-", ms=3, label=run.name)
        _finish(fig.axes[0], "validation perplexity", "step", "perplexity", log=True)
        _finish(fig.axes[1], "validation bits per character", "step", "bits/char")
    return fig


def stage_offsets(runs: Sequence[RunMetrics]) -> list[int]:
    """Step offset of each SFT run: the last step of the pretrain run it started from.

    The SFT run's `init_from` is matched against the given pretrain runs (the run directory or a
    checkpoint inside it); when it matches none, the first pretrain run given is taken.
    """
    pre = [r for r in runs if r.mode != "sft"]
    out = []
    for r in runs:
        parent = None
        if r.mode == "sft" and pre:
            parent = pre[0]
            if r.init_from:
                init = Path(r.init_from).resolve()
                parent = next((p for p in pre if p.path.resolve() in (init, *init.parents)), parent)
        out.append(parent.last_step if parent else 0)
    return out


def plot_stages(runs: Sequence[RunMetrics]):
    """Pretraining then SFT on one axis: SFT steps continue after the pretrain run's last step."""
    offsets = stage_offsets(runs)
    with style():
        fig = new_figure(width=9)
        ax = fig.axes[0]
        for run, off in zip(runs, offsets):
            line = ax.plot(*series(run.train, "step", "loss", off), lw=1, label=f"{run.name} ({run.mode}) train")[0]
            ax.plot(*series(run.evals, "step", "val_loss", off), "o--", ms=3, color=line.get_color(),
                    label=f"{run.name} ({run.mode}) val")
            if run.mode == "sft":
                ax.axvline(off, color="gray", ls="--", lw=1)
        _finish(ax, "pretraining, then SFT (dashed line: SFT starts)", "step (pretrain steps, then SFT steps)",
                "loss (SFT: answer tokens only)")
    return fig


# --------------------------------------------------------------------------- eval reports


def _report_runs(reports: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, Q&A items) of every evaluated checkpoint that has Q&A results.

    The label is the run's name; when a name occurs more than once (one model evaluated on
    several Q&A files), the Q&A file's name (or the report's number) is added.
    """
    found = []
    for k, rep in enumerate(reports):
        qa_file = (rep.get("settings") or {}).get("qa_file")
        source = Path(qa_file).stem if qa_file else f"report {k + 1}"
        found += [(run["name"], source, run["qa"]["items"]) for run in rep["runs"] if run.get("qa")]
    names = [name for name, _, _ in found]
    return [(f"{name} · {source}" if names.count(name) > 1 else name, items) for name, source, items in found]


def plot_rouge_hist(reports: Sequence[dict[str, Any]], bins: int = 20):
    """Histogram of per-answer Rouge-L F, one step outline per checkpoint."""
    with style():
        fig = new_figure()
        ax = fig.axes[0]
        for label, items in _report_runs(reports):
            ax.hist([it["rouge_l"]["f"] for it in items], bins=bins, range=(0.0, 1.0),
                    histtype="step", lw=1.5, label=label)
        _finish(ax, "per-answer Rouge-L (characters)", "Rouge-L F", "answers")
    return fig


def plot_flags(reports: Sequence[dict[str, Any]]):
    """Grouped bars: how many answers carry each quality flag, per checkpoint."""
    MaxNLocator = require("matplotlib.ticker", "eval").MaxNLocator
    from miniglm.evaluate.metrics import FLAG_NAMES

    runs = _report_runs(reports)
    with style():
        fig = new_figure(width=7.5)
        ax = fig.axes[0]
        width = 0.8 / max(len(runs), 1)
        for j, (label, items) in enumerate(runs):
            counts = [sum(bool(it["flags"].get(f)) for it in items) for f in FLAG_NAMES]
            xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(FLAG_NAMES))]
            ax.bar(xs, counts, width=width, label=f"{label} ({len(items)} answers)")
        ax.set_xticks(range(len(FLAG_NAMES)), FLAG_NAMES)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _finish(ax, "answer quality flags", "flag", "answers flagged")
    return fig


# --------------------------------------------------------------------------- all at once


def plot_runs(run_dirs: Sequence[str | Path], out_dir: str | Path,
              reports: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Read the runs (and reports), draw every applicable figure, write PNGs into `out_dir`."""
    runs = [read_metrics(d) for d in run_dirs]
    figures: list[tuple[str, Callable[[], Any]]] = []
    if runs:
        figures += [("loss", lambda: plot_loss(runs)), ("lr", lambda: plot_lr(runs)),
                    ("throughput", lambda: plot_throughput(runs)),
                    ("val_metrics", lambda: plot_val_metrics(runs))]
        if {r.mode for r in runs} >= {"pretrain", "sft"}:
            figures.append(("stages", lambda: plot_stages(runs)))
    if _report_runs(reports):
        figures += [("rouge_l", lambda: plot_rouge_hist(reports)), ("flags", lambda: plot_flags(reports))]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [save_figure(make(), out / f"{name}.png") for name, make in figures]
