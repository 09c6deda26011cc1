"""`miniglm plot`: training curves of one or more runs, and Rouge-L/flag charts of eval reports, as PNG.

    miniglm plot runs/small                                  # -> runs/small/plots/*.png
    miniglm plot runs/small runs/sft --out figures           # overlaid; pretrain -> SFT view
    miniglm plot runs/sft --report runs/sft/eval/report.json

Figures: loss.png (train/val loss vs step and vs tokens), lr.png, throughput.png, val_metrics.png
(val perplexity and bits/char), stages.png (when pretrain and SFT runs are both given), and from
reports rouge_l.png (per-answer Rouge-L histogram) and flags.png (quality-flag counts).
"""

from __future__ import annotations

from pathlib import Path

from miniglm.cli.common import Parser
from miniglm.errors import UserError
from miniglm.extras import require
from miniglm.io import check_output_dir


def build_parser() -> Parser:
    p = Parser(prog="miniglm plot", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run directories (each with metrics.jsonl)")
    p.add_argument("--report", nargs="+", default=[], metavar="FILE",
                   help="report.json files written by `miniglm eval` (or directories holding one)")
    p.add_argument("--out", metavar="DIR",
                   help="where the PNGs go (default: FIRST_RUN/plots, or the first report's directory)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require("matplotlib", "eval")  # before reading anything: a missing extra is a one-line hint
    if not args.runs and not args.report:
        raise UserError("nothing to plot: give RUN_DIR(s) and/or --report FILE(s)")
    from miniglm.evaluate.plot import plot_runs
    from miniglm.evaluate.report import load_report

    reports = [load_report(r) for r in args.report]
    if args.out:
        out = Path(args.out)
    elif args.runs:
        out = Path(args.runs[0]) / "plots"
    else:
        first = Path(args.report[0])
        out = first if first.is_dir() else first.parent
    check_output_dir(out)  # before reading and drawing
    paths = plot_runs(args.runs, out, reports)
    if not paths:
        raise UserError("the given reports hold no Q&A results to plot")
    for path in paths:
        print(path)
    return 0
