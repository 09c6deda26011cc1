"""Does SFT make a small model answer the question asked? Held-out answer metrics for SFT/decoding variants.

    python bench/sft_quality.py --pretrained RUN --out /tmp/sftq                       # the variants below
    python bench/sft_quality.py --pretrained RUN --out /tmp/sftq --variant lr2e-3:learning_rate=2e-3
    python bench/sft_quality.py --out /tmp/sftq --report-only

What it runs, with the real commands (subprocesses): `miniglm prepare-sft` on the SFT sets of
../shared/data/sft (CMRC 2018 dev + alpaca_zh_demo, 4,203 pairs) with the pretrained run's
tokenizer; for each variant `miniglm train --config sft --init-from RUN` with the variant's
overrides; then `miniglm eval --qa` on held-out questions nothing was trained on (the first 100 of
CMRC 2018 trial and the first 100 of BELLE's eval set: 200 questions), once per decoding setting.
A variant or an evaluation already done (its report in OUT) is not run again, so a run can be
extended. Run it on an otherwise idle machine.

Printed per (variant, decoding): distinct-1/2 over all answers (character n-grams), mean
character Rouge-L F against the references, the share of unique answers (not flagged as collapsed
onto other questions' answers), how many answers ended by themselves (end token), the
repetition flags, and the answer loss: the mean loss (nats per token) of the reference answers,
teacher-forced, which does not depend on the decoding. `pretrained` is the pretrained model itself, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = REPO.parent / "shared" / "data"
SFT_FILES = ("sft/cmrc2018_dev_qa.jsonl", "sft/alpaca_zh_demo_qa.jsonl")
HELDOUT = (("eval/cmrc2018_trial_qa.jsonl", 100), ("eval/belle_eval_zh_qa.jsonl", 100))
# name: overrides of `miniglm train --config sft` (empty: the preset as it stands). "fixed-lr" is the
# preset before it took the pretrained run's learning rate.
VARIANTS = {"default": [], "fixed-lr": ["learning_rate=5e-4", "min_lr=5e-5"]}
# name: `miniglm eval` sampling flags. "sampled" is eval's default (chat's seeded sampling);
# "greedy" was eval's default before it.
DECODINGS = {"sampled": [], "greedy": ["--temperature=0"]}
MAX_NEW_TOKENS = 64


def miniglm(args: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    print(f"$ miniglm {' '.join(args)}", flush=True)
    with open(log, "w", encoding="utf-8") as f:
        code = subprocess.run([sys.executable, "-m", "miniglm", *args], env=env, stdout=f, stderr=subprocess.STDOUT)
    if code.returncode != 0:
        raise SystemExit(f"miniglm {args[0]} failed (exit {code.returncode}); see {log}")


def write_inputs(out: Path, data: Path) -> tuple[Path, Path]:
    sft, held = out / "sft.jsonl", out / "heldout.jsonl"
    if not sft.is_file():
        sft.write_text("".join((data / f).read_text(encoding="utf-8") for f in SFT_FILES), encoding="utf-8")
    if not held.is_file():
        lines = []
        for f, n in HELDOUT:
            lines += (data / f).read_text(encoding="utf-8").splitlines(keepends=True)[:n]
        held.write_text("".join(lines), encoding="utf-8")
    return sft, held


def summary(report: Path) -> dict:
    s = json.loads(report.read_text(encoding="utf-8"))["runs"][0]["qa"]["summary"]
    return {"distinct_1": s["distinct_1"], "distinct_2": s["distinct_2"], "rouge_l": s["rouge_l"]["f"],
            "unique": s["unique_answer_share"], "ended": s["finish_reasons"]["eot"],
            "repetition": s["flags"]["repetition"], "items": s["items"], "answer_loss": s["reference_loss"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrained", help="pretrained run directory (its best checkpoint and tokenizer)")
    p.add_argument("--out", required=True, help="work directory: prepared rows, SFT runs, eval reports")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:K=V[,K=V]",
                   help="an SFT variant (train overrides); repeatable; added to: default (the sft preset) and "
                        "fixed-lr (5e-4, the preset's rate before)")
    p.add_argument("--decoding", action="append", default=[], metavar="NAME:FLAG[,FLAG]",
                   help="an eval decoding (e.g. nr3:--no_repeat_ngram_size=3); added to: sampled (eval's "
                        "default) and greedy")
    p.add_argument("--block-size", type=int, default=128, help="SFT row length (default 128)")
    p.add_argument("--data", default=str(DATA), help="the shared data directory (default ../shared/data)")
    p.add_argument("--report-only", action="store_true", help="run nothing; print what OUT holds")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    variants = dict(VARIANTS)
    for v in args.variant:
        name, _, kv = v.partition(":")
        variants[name] = [x for x in kv.split(",") if x]
    decodings = dict(DECODINGS)
    for d in args.decoding:
        name, _, flags = d.partition(":")
        decodings[name] = [x for x in flags.split(",") if x]
    if not args.report_only:
        if not args.pretrained:
            p.error("--pretrained RUN is needed (unless --report-only)")
        pre = Path(args.pretrained).resolve()
        (out / "logs").mkdir(parents=True, exist_ok=True)
        sft, held = write_inputs(out, Path(args.data))
        tokenizer = pre / "checkpoints" / "best" / "tokenizer.json"
        rows = out / "rows"
        if not (rows / "meta.json").is_file():
            miniglm(["prepare-sft", str(sft), "--tokenizer", str(tokenizer), "--out", str(rows),
                     f"--block_size={args.block_size}", "--val_fraction=0.02", "--no-progress"], out / "logs" / "prep.log")
        todo = [("pretrained", pre, ["--checkpoint", "best"])]
        for name, overrides in variants.items():
            run = out / "runs" / name
            if not (run / "checkpoints").is_dir():
                miniglm(["train", "--config", "sft", "--data", str(rows), "--out", str(run), "--init-from", str(pre),
                         "--overwrite", "--progress=false", *(f"--{kv}" for kv in overrides)],
                        out / "logs" / f"{name}.train.log")
            todo.append((name, run, ["--checkpoint", "latest"]))
        for name, run, which in todo:
            for dec, flags in decodings.items():
                target = out / "evals" / f"{name}-{dec}"
                if not (target / "report.json").is_file():
                    miniglm(["eval", str(run), *which, "--qa", str(held), f"--max_new_tokens={MAX_NEW_TOKENS}",
                             "--speed-probe", "0", "--no-progress", "--out", str(target), *flags],
                            out / "logs" / f"{name}-{dec}.eval.log")
    reports = sorted((out / "evals").glob("*/report.json"))
    if not reports:
        print(f"no reports in {out / 'evals'}", file=sys.stderr)
        return 1
    print(f"\n{'variant-decoding':<28} {'distinct-1':>10} {'distinct-2':>10} {'Rouge-L F':>9} {'unique':>6} "
          f"{'ended':>5} {'repetition':>10} {'answer loss':>11}")
    for r in reports:
        s = summary(r)
        print(f"{r.parent.name:<28} {s['distinct_1']:>10.3f} {s['distinct_2']:>10.3f} {s['rouge_l']:>9.3f} "
              f"{s['unique']:>6.0%} {s['ended']:>5} {s['repetition']:>10} {s['answer_loss']:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
