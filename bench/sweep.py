"""Held-out bits/char against training minutes for a few model shapes: the sweep behind the budget recipe.

    python bench/sweep.py --minutes 2,6 --out /tmp/sweep                  # every shape of SHAPES
    python bench/sweep.py --minutes 10 --shapes m --out /tmp/sweep         # add points; done ones are kept
    python bench/sweep.py --out /tmp/sweep --report-only --plot sweep.png  # table + plot of what is there

The shapes are the rungs of the budget recipe's ladder (`miniglm.train.recipe.LADDER`). Each point
is one `bench/quality.py --only miniglm` run (the same held-out split of the Four Classic Novels,
the real `miniglm prepare` + `miniglm train --max_minutes N`), in a subprocess, with the rung's
model, vocabulary, batch and learning rate given as overrides; its JSON lands in
OUT/points/SHAPE-MINUTES.json and a point already there is not run again, so a sweep can be
extended or resumed. Prepared data is shared by the shapes with the same vocabulary
(OUT/prepared-VOCAB). Run it on an otherwise idle machine: a point's quality is what its minutes
bought, and a second process halves that.

Printed: one row per point (shape, parameters, minutes, steps, tokens seen, tokens per parameter,
held-out bits/char) and, per budget, the best shape. --plot writes bits/char against minutes, one
line per shape (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from miniglm.train.recipe import LADDER  # noqa: E402  (the rungs the recipe chooses from)

SHAPES = {r.name: r for r in LADDER}


def point_args(name: str, minutes: float, out: Path) -> list[str]:
    vocab = SHAPES[name].vocab
    return ["--minutes", f"{minutes:g}", "--only", "miniglm", "--rung", name, "--prepared", str(out / f"prepared-{vocab}"),
            "--out", str(out / "work" / f"{name}-{minutes:g}"), "--json", str(point_file(out, name, minutes))]


def point_file(out: Path, name: str, minutes: float) -> Path:
    return out / "points" / f"{name}-{minutes:g}.json"


def load_points(out: Path) -> list[dict]:
    points = []
    for f in sorted((out / "points").glob("*.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        r = data["results"]["miniglm"]
        points.append({"shape": f.stem.rsplit("-", 1)[0], "minutes": data["minutes"], "params": r["params"],
                       "steps": r["steps"], "tokens": r["tokens_seen"], "vocab": r["vocab"], "bpc": r["bpc"]})
    return sorted(points, key=lambda p: (p["minutes"], p["params"]))


def report(points: list[dict]) -> None:
    print(f"\n{'shape':<6} {'params':>11} {'vocab':>6} {'minutes':>7} {'steps':>6} {'tokens':>11} "
          f"{'tokens/param':>12} {'bits/char':>9}")
    for p in points:
        print(f"{p['shape']:<6} {p['params']:>11,} {p['vocab']:>6} {p['minutes']:>7g} {p['steps']:>6,} "
              f"{p['tokens']:>11,} {p['tokens'] / p['params']:>12.3f} {p['bpc']:>9.3f}")
    for minutes in sorted({p["minutes"] for p in points}):
        at = [p for p in points if p["minutes"] == minutes]
        best = min(at, key=lambda p: p["bpc"])
        print(f"best at {minutes:g} min: {best['shape']} ({best['bpc']:.3f} bits/char, "
              f"{best['tokens'] / best['params']:.3f} tokens per parameter; {len(at)} rung(s) measured)")


def text_chart(points: list[dict], width: int = 56, height: int = 14) -> str:
    """bits/char against log(minutes) in characters, one letter per rung (its name's first), for a README."""
    import math

    xs = [math.log(p["minutes"]) for p in points]
    ys = [p["bpc"] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    grid = [[" "] * width for _ in range(height)]
    for p, x, y in zip(points, xs, ys):
        col = round((x - x0) / ((x1 - x0) or 1) * (width - 1))
        row = round((y1 - y) / ((y1 - y0) or 1) * (height - 1))
        grid[row][col] = p["shape"][0]
    lines = [f"{y1 - (y1 - y0) * r / (height - 1):6.2f} |{''.join(row)}".rstrip() for r, row in enumerate(grid)]
    ticks = sorted({p["minutes"] for p in points})
    axis = [" "] * width
    for m in ticks:
        label = f"{m:g}"
        col = round((math.log(m) - x0) / ((x1 - x0) or 1) * (width - 1))
        col = min(col, width - len(label))
        axis[col:col + len(label)] = label
    names = sorted({p["shape"] for p in points}, key=lambda n: min(p["params"] for p in points if p["shape"] == n))
    legend = ", ".join(f"{n[0]} = {n}" for n in names)
    return "\n".join(["bits/char", *lines, "       +" + "-" * width, "        " + "".join(axis) + "  minutes (log)",
                      f"        {legend}"])


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name in sorted({p["shape"] for p in points}, key=lambda n: min(p["params"] for p in points if p["shape"] == n)):
        pts = [p for p in points if p["shape"] == name]
        ax.plot([p["minutes"] for p in pts], [p["bpc"] for p in pts], marker="o",
                label=f"{name}: {pts[0]['params'] / 1e6:.2f}M params, vocab {pts[0]['vocab']}")
    ax.set_xscale("log")
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("held-out bits/char")
    ax.set_title("Four Classic Novels, last 5 chapters of each held out")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", default="2,6", help="comma-separated training minutes per point (default 2,6)")
    p.add_argument("--shapes", default="xs,s,m", help=f"comma-separated rungs of {', '.join(SHAPES)} (default xs,s,m)")
    p.add_argument("--out", required=True, help="sweep directory (points, prepared data, work directories)")
    p.add_argument("--plot", metavar="PNG", help="write bits/char against minutes")
    p.add_argument("--report-only", action="store_true", help="run nothing; report the points in --out")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    shapes = args.shapes.split(",")
    if unknown := [s for s in shapes if s not in SHAPES]:
        p.error(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    try:
        minutes = [float(m) for m in args.minutes.split(",")]
    except ValueError:
        p.error(f"--minutes: comma-separated numbers, got {args.minutes!r}")
    if not args.report_only:
        (out / "points").mkdir(parents=True, exist_ok=True)
        for m in minutes:
            for name in shapes:
                if point_file(out, name, m).is_file():
                    continue
                print(f"\n=== {name} for {m:g} min", flush=True)
                code = subprocess.run([sys.executable, str(BENCH / "quality.py"), *point_args(name, m, out)]).returncode
                if code != 0:
                    print(f"point {name}-{m:g} failed (exit {code})", file=sys.stderr)
                    return code
    points = load_points(out)
    if not points:
        print(f"no points in {out / 'points'}", file=sys.stderr)
        return 1
    report(points)
    print("\n" + text_chart(points))
    if args.plot:
        plot(points, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
