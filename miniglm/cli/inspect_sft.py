"""`miniglm inspect-sft DIR`: show prepared SFT rows as text with the trained tokens marked.

Trained tokens (targets whose loss mask is 1: answers and their end tokens) are shown in color on a
terminal and between ⟦ and ⟧ otherwise (or with --no-color); each row also gets its counts.
"""

from __future__ import annotations

import os
import sys

from miniglm.cli.common import Parser
from miniglm.data import store
from miniglm.data.sft import MARK_PLAIN, SPLITS, SFTDataError, format_row, row_stats


def build_parser() -> Parser:
    p = Parser(prog="miniglm inspect-sft",
               description="Print prepared SFT rows decoded to text, with the tokens the loss is computed on "
                           f"highlighted (color on a terminal, {MARK_PLAIN[0]}…{MARK_PLAIN[1]} otherwise).")
    p.add_argument("dir", metavar="DIR", help="directory made by `miniglm prepare-sft`")
    p.add_argument("--split", choices=SPLITS, default="train", help="which split to show (default: train)")
    p.add_argument("-n", type=int, default=3, metavar="N", help="show the first N rows (default: 3)")
    p.add_argument("--rows", type=int, nargs="+", metavar="I", help="show these row indices instead")
    p.add_argument("--no-color", action="store_true", help="mark trained tokens with ⟦…⟧ even on a terminal")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 0:
        raise SFTDataError(f"-n {args.n}: the number of rows to show must be 0 or more")
    meta = store.read_meta(args.dir, "sft", SFTDataError)
    ids, mask = store.open_rows(args.dir, args.split, meta, SFTDataError)
    tok = store.load_tokenizer(args.dir, meta, SFTDataError)
    color = sys.stdout.isatty() and not args.no_color and "NO_COLOR" not in os.environ
    rows = args.rows if args.rows is not None else range(min(args.n, len(ids)))
    for r in rows:
        if not 0 <= r < len(ids):
            raise SFTDataError(f"row {r} is out of range: the {args.split} split has {len(ids)} rows")
    c = meta["counts"]
    print(f"{args.dir}: block_size {meta['block_size']}, {c['train_rows']} train / {c['val_rows']} val rows, "
          f"{c['truncated']} truncated, {c['skipped']} skipped; trained tokens are "
          + ("highlighted" if color else f"between {MARK_PLAIN[0]} and {MARK_PLAIN[1]}"))
    if len(ids) == 0:
        print(f"the {args.split} split is empty")
    for r in rows:
        s = row_stats(ids[r], mask[r], meta["pad_id"])
        print(f"\n--- {args.split} row {r}: {s['tokens']} tokens, {s['content']} content, "
              f"{s['trained']} trained, {s['padding']} padding")
        print(format_row(tok, ids[r], mask[r], color=color))
    return 0
