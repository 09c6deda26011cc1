"""`miniglm demo`: the whole pipeline in a time budget, in one command.

    miniglm demo                     # about 5 minutes on this machine, whatever the machine
    miniglm demo --minutes 20        # a better model in 20 minutes
    miniglm demo --pretrain-steps 800 --sft-steps 300    # fixed step counts instead of a budget

fetch (the Four Classic Novels when online, else the bundled excerpts) -> prepare -> pretrain ->
prepare-sft -> SFT -> answers -> eval report -> plots. Each stage is the `miniglm <command>` a
user would type (printed before it runs), so the demo doubles as a worked example.

The budget, not step counts: the speed of a training step differs 3x between CPUs (fast bf16 or
not) and 50x with a GPU, so the demo times a few steps of the model first, prints the plan and an
ETA, and gives each training stage `--max_minutes` (the trainer refits its steps and cosine
schedule to the speed it measures; see `miniglm.train.budget`). What is left after pretraining is
re-planned for SFT, so an overrun in one stage is taken out of the next. Which model to pretrain
is part of the plan: with `--preset auto` (the default) the budget recipe (miniglm/train/recipe.py)
measures the speed of a ladder of model sizes here and takes the largest that its share of the
budget trains on enough tokens per parameter, with that rung's vocabulary, batch and learning rate.

What it shows: a model pretrained on more text than it can memorise, then fine-tuned on the
bundled Q&A set minus a held-out tenth; the final printout scores (character Rouge-L) questions
SFT saw apart from questions it never saw, so memorisation and generalisation are both on view.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from miniglm.cli.common import Parser
from miniglm.errors import UserError
from miniglm.extras import require

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Questions the bundled Q&A set does not contain and that have no reference answer.
NEW_QUESTIONS = [
    "孙悟空和猪八戒谁更厉害？",
    "《红楼梦》里谁最喜欢读书？",
    "诸葛亮为什么要六出祁山？",
    "林冲是一个什么样的人？",
    "四大名著里你最喜欢哪一部？",
]
HELDOUT_EVERY = 10  # every 10th Q&A pair is kept out of SFT, to test generalisation
PRETRAIN_SHARE = 0.6  # of the training time; SFT gets the rest (re-planned after pretraining)
# Answers, eval and plots after training: a fixed part (imports, plots, loading) plus ~100 greedy
# tokens per question, which on a CPU cost about one training step's time (measured on 2 shared
# cores: 40 questions in 240 s at 5-8 s/step); a GPU decodes token by token, so a floor per question.
TAIL_FIXED_S, STEPS_PER_QUESTION, MIN_QUESTION_S = 20.0, 1.0, 0.3
TAIL_SHARE = 0.25  # the scored questions are cut to keep the tail within this share of the budget
MIN_STEPS = 10
DEFAULT_VOCAB = 4000  # with a named --preset
TOKENIZER_SAMPLE_MB = 1.0  # the tokenizer learns from ~1 MB of the corpus: minutes saved on 9 MB


def build_parser() -> Parser:
    p = Parser(prog="miniglm demo", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--minutes", type=float, default=5.0, help="time budget for the whole demo [5]")
    p.add_argument("--preset", default="auto",
                   help="pretraining model: auto (the budget recipe picks shape, vocabulary, batch and learning "
                        "rate from the speed it measures; miniglm/train/recipe.py) or a preset: small, tiny "
                        "(tests) [auto]")
    p.add_argument("--out", default="out/demo", help="working directory for data, runs and reports [out/demo]")
    p.add_argument("--corpus", nargs="+", default=None,
                   help="pretraining text: files or directories [the Four Classic Novels via `miniglm fetch "
                        "sidamingzhu` when online, else the bundled excerpts]")
    p.add_argument("--offline", action="store_true", help="do not try to fetch; use the bundled corpus")
    p.add_argument("--sft-data", default=str(ASSETS / "qa.jsonl"),
                   help="Q&A JSONL for SFT; every 10th pair is held out [the bundled qa.jsonl]")
    p.add_argument("--vocab-size", type=int, default=None,
                   help=f"BPE vocabulary size [the recipe's with --preset auto, else {DEFAULT_VOCAB}]")
    p.add_argument("--pretrain-steps", type=int, help="fixed pretraining steps instead of a share of the budget")
    p.add_argument("--sft-steps", type=int, help="fixed SFT steps instead of a share of the budget")
    p.add_argument("--block-size", type=int, default=128, help="SFT row length in tokens [128]")
    p.add_argument("--num-answers", type=int, default=5, help="answers printed from each group [5]")
    p.add_argument("--eval-limit", type=int, default=20, help="questions scored from each group (seen, unseen) [20]")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda [auto]")
    return p


def _stage(title: str, argv: list[str]) -> float:
    from miniglm.__main__ import main as miniglm_main

    print(f"\n=== {title}\n$ miniglm {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    code = miniglm_main(argv)
    if code != 0:
        raise UserError(f"stage '{title}' failed (exit {code}); see the message above")
    seconds = time.perf_counter() - t0
    print(f"--- {title}: {seconds:.1f} s", flush=True)
    return seconds


def corpus_paths(args, raw: Path) -> list[str]:
    """The user's corpus; else the novels (fetched once, then reused); else the bundled excerpts."""
    if args.corpus:
        return args.corpus
    bundled = [str(ASSETS / "corpus")]
    if args.offline:
        return bundled
    from miniglm.data.fetch import FetchError, fetch

    print("\n=== 0 fetch the Four Classic Novels (~9 MB; falls back to the bundled excerpts offline)\n"
          f"$ miniglm fetch sidamingzhu --out {raw}", flush=True)
    try:
        files = fetch(["sidamingzhu"], raw, retries=1, backoff=0.5, timeout=10.0, progress=False)
    except FetchError as e:
        print(f"not fetched ({e}); pretraining on the bundled excerpts (41k characters) instead", flush=True)
        return bundled
    return [str(f.path) for f in files]


def machine_note(cfg) -> str:
    """Where and in which dtype `cfg` trains, for the plan line."""
    import torch

    from miniglm.device import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    where = f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)
    return f"{where}, {str(resolve_dtype(cfg.dtype, device)).removeprefix('torch.')}"


def split_qa(path: Path, out: Path) -> tuple[Path, list[dict], list[dict]]:
    """Write the SFT part of a Q&A JSONL file; (its path, the SFT pairs, the held-out pairs)."""
    seen, unseen, lines = [], [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(x for x in f if x.strip()):
            rec = json.loads(line)
            if i % HELDOUT_EVERY == HELDOUT_EVERY - 1 and "question" in rec:
                unseen.append(rec)
                continue
            lines.append(line.rstrip("\n"))
            if "question" in rec:
                seen.append(rec)
    sft_file = out / "qa_sft.jsonl"
    sft_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sft_file, seen, unseen


def _spread(items: list, n: int) -> list:
    step = max(1, len(items) // max(n, 1))
    return items[::step][:n]


class Clock:
    """The demo's budget: seconds left, and what the tail stages after training will need."""

    def __init__(self, minutes: float):
        self.t0, self.budget = time.perf_counter(), minutes * 60.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self, tail_seconds: float) -> float:
        return self.budget - self.elapsed - tail_seconds


def plan_tail(budget_s: float, step_s: float, n_new: int, limit: int) -> tuple[int, float]:
    """(scored questions per group, seconds for answers + eval + plots) on this machine."""
    per_q = max(STEPS_PER_QUESTION * step_s, MIN_QUESTION_S)
    fit = int((TAIL_SHARE * budget_s - TAIL_FIXED_S - n_new * per_q) / (2 * per_q))
    n = max(min(limit, fit), min(limit, 3))
    return n, TAIL_FIXED_S + (n_new + 2 * n) * per_q


def _train_args(steps: int | None, seconds: float, step_s: float) -> tuple[list[str], int]:
    """Flags for a training stage: fixed steps, or a budget with an estimated step count."""
    if steps is not None:
        return [f"--max_steps={steps}"], steps
    # Over budget already: one step's time, so the stage still yields a model (the trainer's hard
    # stop ends it after that step) instead of a minimum step count that would overrun further.
    seconds = max(seconds, step_s)
    return [f"--max_steps={max(1, int(seconds / step_s))}", f"--max_minutes={seconds / 60:.4f}"], int(seconds / step_s)


def print_scores(report_file: Path, n_seen: int, n_show: int, new_answers: Path) -> dict[str, float]:
    """Seen-in-SFT and unseen questions, each group with its mean Rouge-L and a few answers."""
    items = json.loads(report_file.read_text(encoding="utf-8"))["runs"][0]["qa"]["items"]
    groups = {"seen in SFT (memorisation)": [r for r in items if r["index"] < n_seen],
              "not seen in SFT (generalisation)": [r for r in items if r["index"] >= n_seen]}
    means = {}
    for title, rows in groups.items():
        means[title] = statistics.fmean(r["rouge_l"]["f"] for r in rows) if rows else float("nan")
        print(f"\nQuestions {title}: {len(rows)}, mean Rouge-L F {means[title]:.3f} (characters)")
        for r in rows[:n_show]:
            print(f"  [{r['rouge_l']['f']:.2f}] 问：{r['question']}\n         答：{r['answer']}\n"
                  f"         参考：{r['reference']}")
    print("\nNew questions (no reference answer, nothing like them in SFT):")
    with open(new_answers, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            print(f"  问：{rec['prompt']}\n  答：{rec['text']}")
    return means


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {args.minutes}")
    for module in ("sacrebleu", "matplotlib"):  # the eval and plot stages: fail now, not after training
        require(module, "eval")
    clock = Clock(args.minutes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, sft, runs = out / "data", out / "sft", out / "runs"
    pre_run, sft_run = runs / "pretrain", runs / "sft"
    dev = [f"--device={args.device}"]

    corpus = corpus_paths(args, out / "raw")
    rung, step_s, vocab_size = None, None, args.vocab_size or DEFAULT_VOCAB
    if args.preset == "auto":
        rung, step_s = choose_rung(clock.budget, args.device, args.pretrain_steps)
        vocab_size = args.vocab_size or rung.vocab
    _stage("1/7 prepare: tokenizer + train.bin/val.bin",
           ["prepare", *corpus, "--out", str(data), "--vocab-size", str(vocab_size),
            f"--tokenizer-sample-mb={TOKENIZER_SAMPLE_MB}", "--no-progress"])
    vocab = json.loads((data / "meta.json").read_text(encoding="utf-8"))["vocab_size"]
    # the pretraining config: a preset, or the recipe's rung (as flags, so the printed command shows it)
    from miniglm.train import recipe

    preset, shape = (args.preset, []) if rung is None else (recipe.BASE_PRESET, rung.overrides(vocab))
    ctx = _preset_context(preset, shape + [f"model.vocab_size={vocab}", f"device={args.device}"])
    if step_s is None or vocab != rung.vocab:  # the recipe timed the rung with its own vocabulary
        step_s = recipe.measure_step_seconds(ctx, steps=3)
    machine = machine_note(ctx)
    n_scored, tail = plan_tail(clock.budget, step_s, min(args.num_answers, len(NEW_QUESTIONS)), args.eval_limit)
    train_s = clock.left(tail)
    pre_flags, pre_steps = _train_args(args.pretrain_steps, PRETRAIN_SHARE * train_s, step_s)
    sft_block = min(args.block_size, ctx.model.max_position_embeddings)
    # SFT steps cost what their tokens cost: the sft preset's batch of rows against the preset's windows
    sft_step_s = step_s * _sft_batch_size(pre_run) * sft_block / (ctx.batch_size * ctx.block_size)
    sft_plan = args.sft_steps or max(1, int((1 - PRETRAIN_SHARE) * train_s / sft_step_s))
    eta = datetime.now() + timedelta(seconds=clock.budget - clock.elapsed)
    print(f"\nplan for {args.minutes:g} min on {machine}: {step_s:.2f} s per step measured; "
          f"pretrain {pre_steps} steps ≈ {_dur(pre_steps * step_s)}, SFT {sft_plan} steps ≈ "
          f"{_dur(sft_plan * sft_step_s)}, answers + eval ({2 * n_scored} questions) + plots ≈ {_dur(tail)}; "
          f"ETA {eta:%H:%M:%S}" + ("" if train_s > 2 * MIN_STEPS * step_s else
                                   " (the budget is too small for this machine: expect an overrun)"), flush=True)

    _stage(f"2/7 pretrain ({args.preset} preset)" if rung is None else f"2/7 pretrain (recipe: {rung.describe(vocab)})",
           ["train", "--config", preset, *(f"--{o}" for o in shape), "--data", str(data), "--out", str(pre_run), "--overwrite",
            *pre_flags, *dev])
    sft_file, seen, unseen = split_qa(Path(args.sft_data), out)
    _stage("3/7 prepare-sft: Q&A (without the held-out tenth) -> token rows + loss_mask",
           ["prepare-sft", str(sft_file), "--tokenizer", str(data / "tokenizer.json"), "--out", str(sft),
            f"--block_size={sft_block}", "--val_fraction=0", "--no-progress"])
    sft_flags, _ = _train_args(args.sft_steps, clock.left(tail), sft_step_s)
    _stage("4/7 SFT (init from the pretrained run)",
           ["train", "--config", "sft", "--data", str(sft), "--out", str(sft_run), "--init-from", str(pre_run),
            "--overwrite", "--progress=false", *sft_flags, *dev])

    # The demo shows what SFT taught, so it samples the final SFT weights.
    from miniglm.checkpoint import resolve_checkpoint

    final = resolve_checkpoint(sft_run, which="latest")
    prompts = out / "demo_questions.txt"
    prompts.write_text("\n".join(NEW_QUESTIONS[: args.num_answers]) + "\n", encoding="utf-8")
    answers = out / "answers.jsonl"
    _stage("5/7 answer new questions (sampled, as `miniglm chat` answers)",
           ["sample", str(final), "--chat", "--prompt-file", str(prompts), "--max_new_tokens=100",
            "--output", str(answers), *dev])
    scored = out / "qa_scored.jsonl"
    picked_seen, picked_unseen = _spread(seen, n_scored), _spread(unseen, n_scored)
    scored.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked_seen + picked_unseen),
                      encoding="utf-8")
    _stage("6/7 eval report: seen and held-out questions",
           ["eval", str(sft_run), "--checkpoint", "latest", "--qa", str(scored), "--speed-probe", "1",
            "--max_new_tokens=100", "--out", str(out / "eval"), "--no-progress", *dev])
    _stage("7/7 plots", ["plot", str(pre_run), str(sft_run), "--report", str(out / "eval" / "report.json"),
                         "--out", str(out / "plots")])

    print_scores(out / "eval" / "report.json", len(picked_seen), args.num_answers, answers)
    took = clock.elapsed
    print(f"\nDemo finished in {took:.0f} s (budget {clock.budget:.0f} s: {took / clock.budget:.0%}). "
          f"Outputs under {out}/:")
    print(f"  answers    {answers}\n  report     {out / 'eval' / 'report.md'}\n  plots      {out / 'plots'}/")
    print(f"Chat with the model:  python -m miniglm chat {sft_run}")
    return 0


def _preset_context(preset: str, overrides: list[str] | None = None):
    from miniglm.config import TrainConfig, load_config

    return load_config(TrainConfig, preset, overrides)


def choose_rung(budget_s: float, device: str, fixed_steps: int | None):
    """The recipe's model for the pretraining share of the budget (the answers' share at its largest),
    and its measured seconds per step (None when nothing was measured)."""
    from miniglm.train import recipe

    seconds = PRETRAIN_SHARE * (1 - TAIL_SHARE) * budget_s
    if fixed_steps is not None:  # steps, not minutes: the recipe has no budget to size for
        rung = recipe.LADDER[0]
        print(f"\nrecipe: --pretrain-steps given, so no budget to size the model for: {rung.describe()}")
        return rung, None
    print("\n=== recipe: the training speed of the model ladder on this machine", flush=True)
    rung, trials = recipe.choose(seconds, lambda r: recipe.measure_tokens_per_second(r, device))
    print(recipe.report(seconds, rung, trials), flush=True)
    speed = next(t.tokens_per_second for t in trials if t.rung == rung)
    return rung, recipe.BATCH_SIZE * recipe.BLOCK_SIZE / speed


def _sft_batch_size(pre_run: Path) -> int:
    # the sft preset takes its learning rate from the --init-from run, so it loads only with one
    return _preset_context("sft", [f"init_from={pre_run}"]).batch_size


def _dur(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


if __name__ == "__main__":
    sys.exit(main())
