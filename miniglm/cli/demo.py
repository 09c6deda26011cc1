"""`miniglm demo`: the whole pipeline on the bundled data, in one command.

prepare (tokenizer + token files) -> pretrain (`small`) -> prepare-sft -> SFT -> sample answers ->
eval report -> plots. Each stage is the same `miniglm <command>` a user would type (printed before
it runs), so the demo doubles as a worked example. `--corpus` / `--sft-data` point it at your own
or fetched data; `--pretrain-steps` / `--sft-steps` trade time for quality.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from miniglm.cli.common import Parser
from miniglm.errors import UserError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Questions the bundled Q&A set does not contain, to show what the model does off its training set.
NEW_QUESTIONS = [
    "孙悟空和猪八戒谁更厉害？",
    "《红楼梦》里谁最喜欢读书？",
    "诸葛亮为什么要六出祁山？",
    "林冲是一个什么样的人？",
    "四大名著里你最喜欢哪一部？",
]


def build_parser() -> Parser:
    p = Parser(prog="miniglm demo", description=__doc__)
    p.add_argument("--out", default="out/demo", help="working directory for data, runs and reports [out/demo]")
    p.add_argument("--corpus", nargs="+", default=[str(ASSETS / "corpus")],
                   help="pretraining text: files or directories [the bundled corpus]")
    p.add_argument("--sft-data", nargs="+", default=[str(ASSETS / "qa.jsonl")],
                   help="Q&A files for SFT [the bundled qa.jsonl]")
    p.add_argument("--vocab-size", type=int, default=4000, help="BPE vocabulary size [4000]")
    p.add_argument("--pretrain-steps", type=int, default=800, help="pretraining steps (small preset) [800]")
    p.add_argument("--sft-steps", type=int, default=800, help="SFT steps [800]")
    p.add_argument("--block-size", type=int, default=128, help="SFT row length in tokens [128]")
    p.add_argument("--num-answers", type=int, default=5, help="questions answered from each set at the end [5]")
    p.add_argument("--eval-limit", type=int, default=60, help="Q&A items scored in the eval report [60]")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda [auto]")
    return p


def _stage(title: str, argv: list[str]) -> None:
    from miniglm.__main__ import main as miniglm_main

    print(f"\n=== {title}\n$ miniglm {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    code = miniglm_main(argv)
    if code != 0:
        raise UserError(f"stage '{title}' failed (exit {code}); see the message above")
    print(f"--- {title}: {time.perf_counter() - t0:.1f} s", flush=True)


def _pick_questions(path: Path, n: int) -> list[str]:
    questions = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                questions.append(json.loads(line)["question"])
    step = max(1, len(questions) // max(n, 1))
    return questions[::step][:n]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    data, sft, runs = out / "data", out / "sft", out / "runs"
    pre_run, sft_run = runs / "pretrain", runs / "sft"
    t0 = time.perf_counter()
    dev = [f"--device={args.device}"]

    _stage("1/7 prepare: tokenizer + train.bin/val.bin",
           ["prepare", *args.corpus, "--out", str(data), "--vocab-size", str(args.vocab_size)])
    _stage("2/7 pretrain (small preset)",
           ["train", "--config", "small", "--data", str(data), "--out", str(pre_run), "--overwrite",
            f"--max_steps={args.pretrain_steps}", *dev])
    _stage("3/7 prepare-sft: Q&A -> token rows + loss_mask",
           ["prepare-sft", *args.sft_data, "--tokenizer", str(data / "tokenizer.json"), "--out", str(sft),
            f"--block_size={args.block_size}"])
    _stage("4/7 SFT (init from the pretrained run)",
           ["train", "--config", "sft", "--data", str(sft), "--out", str(sft_run), "--init-from", str(pre_run),
            "--overwrite", f"--max_steps={args.sft_steps}", *dev])

    # The demo shows what SFT taught, so it samples the final SFT weights; `best` (lowest loss on
    # held-out questions) is an earlier, less fitted checkpoint on data this small.
    from miniglm.checkpoint import resolve_checkpoint

    final = resolve_checkpoint(sft_run, which="latest")
    qa_file = Path(args.sft_data[0])
    seen = _pick_questions(qa_file, args.num_answers)
    prompts = out / "demo_questions.txt"
    prompts.write_text("\n".join(seen + NEW_QUESTIONS[: args.num_answers]) + "\n", encoding="utf-8")
    answers = out / "answers.jsonl"
    _stage("5/7 sample answers (greedy)",
           ["sample", str(final), "--chat", "--prompt-file", str(prompts), "--temperature=0",
            "--repetition_penalty=1.2", "--max_new_tokens=120", "--output", str(answers), *dev])
    _stage("6/7 eval report",
           ["eval", str(sft_run), "--checkpoint", "latest", "--qa", str(qa_file), "--limit", str(args.eval_limit),
            "--out", str(out / "eval"), *dev])
    _stage("7/7 plots", ["plot", str(pre_run), str(sft_run), "--report", str(out / "eval" / "report.json"),
                         "--out", str(out / "plots")])

    print("\nAnswers (the first half are questions from the bundled Q&A set, the rest are new):")
    with open(answers, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            print(f"  问：{rec['prompt']}\n  答：{rec['text']}")
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f} s. Outputs under {out}/:")
    print(f"  answers    {answers}\n  report     {out / 'eval' / 'report.md'}\n  plots      {out / 'plots'}/")
    print(f"Chat with the model:  python -m miniglm chat {sft_run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
