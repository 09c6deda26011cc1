"""`miniglm eval`: held-out loss/perplexity/bits-per-char and Q&A scores of one or two checkpoints.

    miniglm eval runs/small --data data/prepared                 # whole val.bin
    miniglm eval runs/sft --qa ../shared/data/eval/cmrc2018_trial_qa.jsonl --limit 100
    miniglm eval runs/sft runs/sft2 --qa qa.jsonl --text extra.txt   # two checkpoints side by side

Writes report.json and report.md into --out (default RUN_DIR/eval/). Answers are decoded the way
`miniglm chat` answers (temperature 0.8, top-k 50, top-p 0.95, repetition penalty 1.1), so the
report scores what a user gets; each question draws from its own generator seeded with --seed, so
the same checkpoint, seed and question give the same answer, batched or not, and a report is
reproducible. `--temperature 0` decodes greedily: a small model then tends to answer many
different questions with one sentence (bench/README.md, "Answers after SFT"). With no
--data/--text/--qa, the run's own training data (config.json `data`) is evaluated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from miniglm.cli.common import Parser
from miniglm.config import SampleConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.errors import UserError
from miniglm.extras import require
from miniglm.io import check_output_dir


def build_parser() -> Parser:
    p = Parser(prog="miniglm eval", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directory (its best checkpoint) or checkpoint directory; give two to compare")
    p.add_argument("--data", metavar="DIR",
                   help="prepared directory: val.bin of `miniglm prepare`, or val rows of `miniglm prepare-sft`")
    p.add_argument("--text", nargs="+", metavar="FILE", default=[],
                   help="raw UTF-8 text files, tokenized with the checkpoint's tokenizer")
    p.add_argument("--qa", metavar="FILE",
                   help='Q&A JSONL: {"question", "answer", optional "references": [...]} per line')
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N Q&A items")
    p.add_argument("--out", metavar="DIR", help="where report.json/report.md go (default: RUN_DIR/eval)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="sequences per forward pass and questions per generation batch (default: 8)")
    p.add_argument("--speed-probe", type=int, default=3, metavar="N",
                   help="answer the first N questions again one at a time to measure single-stream "
                        "speed, as in chat (default: 3; 0 = off)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="which checkpoint of a run directory (default: best)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_arguments(p, SampleConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.qa:  # BLEU/chrF of the answers; checked before any model is loaded
        require("sacrebleu", "eval")
    from miniglm.evaluate import report as rep
    from miniglm.evaluate.heldout import check_inputs
    from miniglm.evaluate.qa import load_qa

    if len(args.runs) > 2:
        raise UserError(f"at most two checkpoints can be compared, got {len(args.runs)}")
    if args.limit is not None and args.limit <= 0:
        raise UserError(f"--limit must be > 0, got {args.limit}")
    if args.speed_probe < 0:
        raise UserError(f"--speed-probe must be >= 0, got {args.speed_probe}")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be > 0, got {args.batch_size}")
    cfg = load_config(SampleConfig, overrides=overrides_from_args(args))
    out = Path(args.out) if args.out else rep.default_out(args.runs[0])
    check_output_dir(out)  # now, not after the whole evaluation
    items = load_qa(args.qa, args.limit) if args.qa else None
    data = args.data
    if data is None and not args.text and items is None:
        data = rep.default_data(args.runs[0])
    check_inputs(data, args.text)
    results = []
    for run in args.runs:
        print(f"evaluating {run} ...", file=sys.stderr)
        results.append(rep.evaluate_run(run, data, args.text, items, cfg, args.batch_size, args.checkpoint,
                                        progress=not args.no_progress, speed_probe=args.speed_probe))
    settings = {"sample": vars(cfg), "batch_size": args.batch_size, "speed_probe": args.speed_probe,
                "checkpoint": args.checkpoint,
                "data": str(data) if data else None, "text": list(args.text), "qa_file": args.qa,
                "limit": args.limit}
    report = rep.build_report(results, settings)
    js, md = rep.write_report(report, out)
    print("\n".join(rep.summary_table(report)))
    print(f"wrote {js} and {md}")
    return 0
