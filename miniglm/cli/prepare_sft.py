"""`miniglm prepare-sft INPUT... --tokenizer FILE --out DIR`: Q&A files -> token rows + loss mask.

Thin over `miniglm.data.sft.prepare_sft`; prints a summary of what was kept, cut and skipped.
"""

from __future__ import annotations

import textwrap

from miniglm.cli.common import Parser
from miniglm.config import SFTDataConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.data.sft import RULE, SFTResult, load_tokenizer, prepare_sft
from miniglm.io import check_output_dir

DESCRIPTION = """\
Render question/answer examples with the chat template (问：{question}\\n答：{answer}<|endoftext|>)
into rows of block_size + 1 token ids plus a loss mask that is 1 only on answer tokens and the end
token, split them into train/val by example, and write DIR/{train,val}_{ids,mask}.npy, tokenizer.json,
config.json and meta.json (atomically).

Inputs: JSONL with {"question","answer"}, {"instruction","input","output"} or
{"messages":[{"role":"system"|"user"|"assistant","content":...}]} per line (a leading system
message is prepended to the first question), a .json array of such records, or a text file of
问：… / 答：… blocks. A bad line stops with file:line and the reason; --skip-bad counts and skips it.
"""


def build_parser() -> Parser:
    p = Parser(prog="miniglm prepare-sft", description=DESCRIPTION,
               epilog="Truncation and padding rule:\n" + textwrap.fill(RULE, 100))
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="Q&A files (.jsonl, .json, or 问/答 .txt)")
    p.add_argument("--tokenizer", required=True, metavar="FILE",
                   help="tokenizer.json, or a directory holding one (prepared data, a checkpoint or a run "
                        "directory); use the pretrained run's tokenizer so SFT can start from it")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (an existing prepared SFT directory there is replaced)")
    p.add_argument("--eval-file", metavar="FILE",
                   help="Q&A file used for evaluation: count the kept examples whose question also appears "
                        "there (meta.json counts.eval_overlap)")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file or preset name; its top-level SFTDataConfig keys (e.g. block_size) and "
                        "its [prepare_sft] table are used")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    add_config_arguments(p, SFTDataConfig)
    return p


def summary(result: SFTResult) -> str:
    meta, c = result.meta, result.meta["counts"]
    layout = "packed rows" if meta["pack"] else "one example per row"
    lines = [
        f"prepared SFT data in {result.out} (block_size {meta['block_size']}, {meta['dtype']}, {layout})",
        f"  examples: {c['examples_read']} read, {c['duplicates_removed']} duplicates removed, "
        f"{c['skipped']} skipped (no room for an answer), {c['truncated']} truncated, "
        f"{c['bad_lines']} bad lines skipped",
        f"  train: {c['train_examples']} examples in {c['train_rows']} rows; "
        f"val: {c['val_examples']} examples in {c['val_rows']} rows; {c['answer_tokens']:,} trained tokens",
    ]
    if c["eval_overlap"] is not None:
        lines.append(f"  eval overlap: {c['eval_overlap']} kept examples share a question with {meta['eval_file']}")
    if result.bad_messages:
        lines.append(f"  first bad lines ({len(result.bad_messages)} of {c['bad_lines']}):")
        lines += [f"    {m}" for m in result.bad_messages]
    lines.append(f"  see the trained tokens: miniglm inspect-sft {result.out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(SFTDataConfig, args.config, overrides_from_args(args), section="prepare_sft")
    check_output_dir(args.out)  # before reading and tokenizing the inputs
    tokenizer = load_tokenizer(args.tokenizer)
    result = prepare_sft(args.inputs, tokenizer, args.out, cfg, eval_file=args.eval_file,
                         progress=not args.no_progress)
    print(summary(result))
    return 0
