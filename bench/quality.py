"""Quality for the same training time: MiniGLM's pipeline vs a plain char-level GPT-2, in held-out bits/char.

    python bench/quality.py --minutes 10            # both sides, 10 minutes of training each
    python bench/quality.py --minutes 1 --only baseline --keep --out /tmp/q   # one side, keep the work dir
    python bench/quality.py --minutes 10 --rung xs      # the budget recipe's smallest model (recipe.LADDER)

The data: every `.txt` novel of --data (default ../shared/data/pretrain: the Four Classic Novels).
Split, the same for both sides (`split_novel`): a chapter starts at a heading line `第…回` (a
short line; a heading with no text before the next one, e.g. a table of contents, and any heading
whose number does not fall, walking back from the last one, is not a chapter start); the last
--held-chapters (5) chapters of each novel, from the start of the 5th-last heading to the end of
the file, are held out; everything before is training text.

MiniGLM (its own recipe, through the real commands, as subprocesses): `miniglm prepare` on the
training parts (a byte-level BPE of --vocab-size, default 8000, trained on them; prepare holds out
5% of their chapters for the trainer's own validation), then `miniglm train --config PRESET
--max_minutes N` (the trainer fits its step count and cosine schedule to the budget; its
evaluations and checkpoints are inside the budget), `--set KEY=VALUE` passed on to train; `--rung R`
puts a rung of the budget recipe's ladder (its model, vocabulary, batch, learning rate) under
those. `--prepared DIR` keeps the prepared data there for later runs with the same vocabulary. Its
best checkpoint (`miniglm.checkpoint.load_checkpoint`) is scored by `miniglm.evaluate.heldout`.

The peer (written the way a user would): `transformers.GPT2LMHeadModel`, context n_positions =
the preset's block_size, n_layer/n_head as the preset's, n_embd chosen so the total parameter count
(tied embedding counted once) is the closest to MiniGLM's; no dropout (MiniGLM has none);
vocabulary = every distinct character of the training text plus <unk>. Loop: random windows of
block_size + 1 characters of the training parts (concatenated), batch = batch_size x
grad_accum_steps of the preset (or --baseline-batch), AdamW (lr --baseline-lr, weight decay 0.1 on all weights, betas
0.9/0.95), linear warmup over 100 steps then constant, gradient clipping at 1.0, float32,
torch.manual_seed(--seed); it stops at the first step that ends after N minutes of wall time.

Scoring: every held-out character of every novel, bits/char = total nats / (characters · ln 2)
where characters = all Unicode code points of the held-out parts, newlines included, the same
count on both sides. MiniGLM: `heldout_text` on the held-out parts written as files (each file
tokenized and followed by the end-of-text token, one stream, consecutive windows of the model's
context, max_position_embeddings; every token but the first predicted once, the end tokens
included); the same stream in windows of the trained block_size is printed too. GPT-2: per novel,
consecutive windows of block_size characters (window k reads [k·T, (k+1)·T) and predicts the
next character of each); every character but the first of each novel's held-out part is predicted
once; characters not in the training text are <unk> and scored as such (counted and printed).

Printed: the split, both models, progress while training, a table (parameters, steps, tokens or
characters seen, training minutes, held-out bits/char), `improvement: Y%` (1 - ratio) and last
`bits_per_char_ratio: X.XX` = MiniGLM / GPT-2 (below 1: MiniGLM is better). --json FILE writes
the results. --breakdown adds where each side's bits go: the held-out characters grouped by how often
they occur in the training text, bits/char and share of the side's bits per group (a MiniGLM token's
nats are shared evenly over the characters its bytes belong to; its end-of-text tokens are a row),
and the mean nats of a prediction by how much of its window precedes it (tokens or characters).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from miniglm.evaluate.heldout import bits_per_char  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "pretrain"
WARMUP_STEPS = 100  # the baseline's linear warmup
LOG_SECONDS = 30.0  # the baseline's progress lines
FORCED = ("data", "out", "init_from", "max_minutes")  # set by this script, not by --set

# --------------------------------------------------------------------------- the split

_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
           **{str(i): i for i in range(10)}}
_UNITS = {"十": 10, "百": 100, "千": 1000}
_NUMERAL = "〇零一二三四五六七八九十百千两0-9０-９"
# A heading line: 第<number>回, then the end of the line or a separator and a short title ("第四回中，…"
# in the middle of a paragraph is not one).
HEADING = re.compile(rf"^[^\S\n]*第([{_NUMERAL}]{{1,8}})回(?:(?:[^\S\n]|[:：、.．])[^\n]{{0,60}})?[^\S\n]*$", re.M)


def chapter_number(numeral: str) -> int:
    """一百十四 -> 114, 一百零五 -> 105, 十二 -> 12, 12 / １２ -> 12."""
    numeral = numeral.translate({0xFF10 + i: 0x30 + i for i in range(10)})
    if numeral.isdigit():
        return int(numeral)
    total = digit = 0
    for ch in numeral:
        if ch in _UNITS:
            total += (digit or 1) * _UNITS[ch]
            digit = 0
        else:
            digit = _DIGITS[ch]
    return total + digit


def chapter_starts(text: str) -> list[tuple[int, int]]:
    """(offset of the heading line, chapter number) of each chapter, in body order.

    Candidates are `HEADING` lines; one followed only by blank lines up to the next candidate (a
    table of contents, a doubled heading) starts no chapter; then, walking back from the last,
    a heading is kept only if its number is below the one kept after it (drops stray repeats)."""
    found = list(HEADING.finditer(text))
    cands = [(m.start(), chapter_number(m.group(1))) for i, m in enumerate(found)
             if text[m.end():found[i + 1].start() if i + 1 < len(found) else len(text)].strip()]
    kept: list[tuple[int, int]] = []
    for pos, num in reversed(cands):
        if not kept or num < kept[-1][1]:
            kept.append((pos, num))
    return kept[::-1]


def split_novel(text: str, held_chapters: int = 5) -> tuple[str, str]:
    """(train, held out): held out = the last `held_chapters` chapters, from the start of their first
    heading line to the end of `text`; train = everything before it."""
    if held_chapters < 1:
        raise ValueError(f"held_chapters must be >= 1, got {held_chapters}")
    starts = chapter_starts(text)
    if len(starts) < held_chapters + 1:
        raise ValueError(f"found {len(starts)} chapter headings (第…回 lines), need at least {held_chapters + 1} "
                         f"to hold out the last {held_chapters} chapters")
    cut = starts[-held_chapters][0]
    return text[:cut], text[cut:]


def split_corpus(data: Path, held_chapters: int, work: Path) -> dict:
    """Write <work>/split/{train,heldout}/<novel>.txt; returns the counts per novel."""
    files = sorted(data.glob("*.txt"))
    if not files:
        raise SystemExit(f"no .txt files in {data} (pass --data)")
    info = {}
    for sub in ("train", "heldout"):
        (work / "split" / sub).mkdir(parents=True, exist_ok=True)
    for f in files:
        text = f.read_text(encoding="utf-8")
        try:
            train, held = split_novel(text, held_chapters)
        except ValueError as e:
            raise SystemExit(f"{f}: {e}") from None
        starts = chapter_starts(text)
        nums = [n for _, n in starts]
        for sub, part in (("train", train), ("heldout", held)):
            with open(work / "split" / sub / f.name, "w", encoding="utf-8", newline="") as out:
                out.write(part)
        info[f.stem] = {"chapters": len(starts), "consecutive": nums == list(range(nums[0], nums[0] + len(nums))),
                        "held_from": nums[-held_chapters], "train_chars": len(train), "held_chars": len(held)}
    return info


# --------------------------------------------------------------------------- the char-level GPT-2 peer


class CharVocab:
    """Every distinct character of a text (sorted) plus <unk>, the last id."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.unk = len(self.chars)

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(c, self.unk) for c in text], dtype=torch.long)

    def unknown(self, text: str) -> int:
        return sum(c not in self.index for c in text)


def gpt2_params(vocab: int, n_positions: int, n_layer: int, n_embd: int) -> int:
    """GPT2LMHeadModel's parameters, the tied head once: wte + wpe + blocks (2 LayerNorms, qkv,
    proj, 4x MLP, biases: 12 d^2 + 13 d each) + ln_f."""
    return vocab * n_embd + n_positions * n_embd + n_layer * (12 * n_embd * n_embd + 13 * n_embd) + 2 * n_embd


def match_width(target: int, vocab: int, n_positions: int, n_layer: int, n_head: int) -> int:
    """The n_embd (a multiple of n_head) whose parameter count is the closest to `target`."""
    widths = range(n_head, 16384 + 1, n_head)
    return min(widths, key=lambda d: abs(gpt2_params(vocab, n_positions, n_layer, d) - target))


def build_gpt2(vocab: int, n_positions: int, n_layer: int, n_head: int, n_embd: int, dropout: float = 0.0):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, use_cache=False,
                     bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(cfg)


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are one parameter


def train_gpt2(model, data: torch.Tensor, block: int, batch: int, lr: float, seconds: float,
               device: torch.device) -> dict:
    """The plain loop of the module docstring, until `seconds` of wall time are spent."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    model.to(device).train()
    step, t0 = 0, time.perf_counter()
    last_log, interval = t0, []
    while time.perf_counter() - t0 < seconds:
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / WARMUP_STEPS)
        ix = torch.randint(0, len(data) - block, (batch,)).tolist()
        w = torch.stack([data[i:i + block + 1] for i in ix]).to(device)  # (B, T + 1)
        logits = model(input_ids=w[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        interval.append(loss.item())
        now = time.perf_counter()
        if now - last_log >= LOG_SECONDS:
            print(f"  gpt2 step {step}: loss {sum(interval) / len(interval):.4f}, {now - t0:.0f} s, "
                  f"{step * batch * block / (now - t0):,.0f} chars/s", flush=True)
            last_log, interval = now, []
    elapsed = time.perf_counter() - t0
    return {"steps": step, "seconds": elapsed, "chars_seen": step * batch * block, "last_loss": loss.item() if step else None}


@torch.no_grad()
def score_chars(model, ids: torch.Tensor, block: int, batch_size: int = 16,
                per_token: np.ndarray | None = None) -> tuple[float, int, int]:
    """(total nats, characters scored, windows) over consecutive windows of `block` targets, as
    `miniglm.evaluate.heldout.score_stream` does: window k reads ids [k·block, (k+1)·block) and
    predicts ids [k·block + 1, (k+1)·block + 1); every id but the first is predicted once. With
    `per_token` (len(ids) - 1 floats), per_token[i] = the nats of predicting ids[i + 1]."""
    model.eval()
    device = next(model.parameters()).device
    n = len(ids)
    starts = list(range(0, max(n - 1, 0), block))
    nats, scored = 0.0, 0
    for i in range(0, len(starts), batch_size):
        group = starts[i:i + batch_size]
        for length in sorted({min(block, n - 1 - s) for s in group}):  # only the last window is shorter
            rows = [s for s in group if min(block, n - 1 - s) == length]
            w = torch.stack([ids[s:s + length + 1] for s in rows]).to(device)
            logits = model(input_ids=w[:, :-1]).logits.float()  # (B, length, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1), reduction="none")
            nats += loss.double().sum().item()
            scored += w[:, 1:].numel()
            if per_token is not None:
                for s, row in zip(rows, loss.view(len(rows), length).cpu().numpy()):
                    per_token[s:s + length] = row
    return nats, scored, len(starts)


def run_baseline(args, shape, target_params: int, work: Path, device: torch.device) -> dict:
    split = work / "split"
    train_text = "".join(f.read_text(encoding="utf-8") for f in sorted((split / "train").glob("*.txt")))
    held = {f.stem: f.read_text(encoding="utf-8") for f in sorted((split / "heldout").glob("*.txt"))}
    vocab = CharVocab(train_text)
    block, layers, heads = shape.block_size, shape.model.num_hidden_layers, shape.model.num_attention_heads
    width = match_width(target_params, len(vocab), block, layers, heads)
    torch.manual_seed(args.seed)
    model = build_gpt2(len(vocab), block, layers, heads, width, args.baseline_dropout)
    params = num_params(model)
    batch = args.baseline_batch or shape.batch_size * shape.grad_accum_steps
    print(f"gpt2-char: {params:,} parameters (MiniGLM {target_params:,}): {layers} layers, n_embd {width}, "
          f"{heads} heads, context {block} chars, vocab {len(vocab):,} (characters of the training text + <unk>); "
          f"batch {batch}, AdamW lr {args.baseline_lr:g}, float32 on {device}", flush=True)
    result = train_gpt2(model, vocab.encode(train_text), block, batch, args.baseline_lr, args.minutes * 60, device)
    print(f"gpt2-char: {result['steps']} steps in {result['seconds'] / 60:.2f} min, "
          f"{result['chars_seen'] / len(train_text):.3f} epochs; scoring the held-out text", flush=True)
    nats = scored = windows = 0
    pieces, streams = [], []  # (text, nats of each of its characters), per-target nats: for --breakdown
    for text in held.values():
        per = np.zeros(max(len(text) - 1, 0))
        n, s, w = score_chars(model, vocab.encode(text), block, per_token=per)
        nats, scored, windows = nats + n, scored + s, windows + w
        pieces.append((text, np.concatenate([[0.0], per])[:len(text)]))  # the first character is not predicted
        streams.append(per)
    chars = sum(len(t) for t in held.values())
    unknown = sum(vocab.unknown(t) for t in held.values())
    print(f"gpt2-char: {scored:,} characters predicted in {windows:,} windows of {block}; {unknown} held-out "
          f"characters are not in the training text (scored as <unk>)", flush=True)
    return {**result, "params": params, "n_embd": width, "vocab": len(vocab), "block": block, "batch": batch,
            "total_nats": nats, "scored": scored, "chars": chars, "unknown_chars": unknown,
            "bpc": bits_per_char(nats, chars),
            "by_training_count": by_training_count(pieces, Counter(train_text)) if args.breakdown else None,
            "by_context": by_context(streams, block) if args.breakdown else None}


# --------------------------------------------------------------------------- MiniGLM through its commands


def miniglm(cmd: list[str], env: dict) -> None:
    print(f"$ miniglm {' '.join(cmd)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "miniglm", *cmd], env=env)
    if proc.returncode != 0:
        raise SystemExit(f"miniglm {cmd[0]} failed (exit code {proc.returncode})")


def run_miniglm(args, shape, work: Path, env: dict, device: torch.device) -> dict:
    from miniglm.checkpoint import load_checkpoint
    from miniglm.evaluate.heldout import heldout_text, score_stream

    data, run = Path(args.prepared).resolve() if args.prepared else work / "prepared", work / "run"
    t0 = time.perf_counter()
    if (data / "meta.json").is_file():  # --prepared of an earlier run: the same split, checked below
        print(f"reusing the prepared data in {data}", flush=True)
        vocab = json.loads((data / "meta.json").read_text(encoding="utf-8"))["vocab_size"]
        if vocab != args.vocab_size:
            raise SystemExit(f"--prepared {data}: vocabulary {vocab}, not --vocab-size {args.vocab_size}")
    else:
        miniglm(["prepare", str(work / "split" / "train"), "--out", str(data), f"--vocab-size={args.vocab_size}",
                 "--no-progress", *(f"--{kv}" for kv in args.prepare_set)], env)
    prepare_s = time.perf_counter() - t0
    display = [] if sys.stdout.isatty() else ["--progress=false"]
    miniglm(["train", "--config", args.preset, "--data", str(data), "--out", str(run), "--overwrite",
             f"--device={args.device}", f"--seed={args.seed}", *display, *(f"--{kv}" for kv in args.set),
             f"--max_minutes={args.minutes}"], env)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    last = [r for r in records if r.get("type") == "train"][-1]
    meta = json.loads((data / "meta.json").read_text(encoding="utf-8"))
    loaded = load_checkpoint(run, device=device)
    model, tok = loaded.model, loaded.tokenizer
    run_cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    files = sorted((work / "split" / "heldout").glob("*.txt"))
    print(f"miniglm: scoring checkpoint {loaded.path.name} (step {loaded.meta.get('step')}) on the held-out text",
          flush=True)
    ids, spans = held_stream(tok, files)
    per = np.zeros(len(ids) - 1) if args.breakdown else None
    res = heldout_text(model, tok, files, per_token=per)
    out = {"params": model.num_params(), "steps": last["step"], "tokens_seen": last["tokens"],
           "chars_seen": last["tokens"] * meta["chars_per_token"], "seconds": last["elapsed"],
           "prepare_seconds": prepare_s, "vocab": model.config.vocab_size, "train_tokens": meta["train_tokens"],
           "chars_per_token": meta["chars_per_token"], "checkpoint": str(loaded.path.relative_to(run)),
           "block": res.block_size, "total_nats": res.total_nats, "scored": res.tokens_scored, "chars": res.chars,
           "bpc": res.bpc, "rule": res.rule}
    if args.breakdown:
        out["by_training_count"], out["by_context"] = miniglm_breakdown(tok, spans, per, res.block_size, work)
    block = run_cfg["block_size"]
    if block != res.block_size:  # the same stream in windows of the length the model was trained on
        nats, _, _ = score_stream(model, np.asarray(ids, dtype=np.int64), block)
        out["bpc_train_block"] = {"block": block, "total_nats": nats, "bpc": bits_per_char(nats, res.chars)}
    return out


def held_stream(tok, files: list[Path]) -> tuple[list[int], list[tuple[str, int, list[int]]]]:
    """`heldout_text`'s stream (each file's tokens, then the end-of-text token) and, per file, its
    text, the index of its first token in the stream and its tokens."""
    ids, spans = [], []
    for f in files:
        text = f.read_text(encoding="utf-8")
        t = tok.encode(text)
        spans.append((text, len(ids), t))
        ids += t + [tok.eot_id]
    return ids, spans


def miniglm_breakdown(tok, spans: list[tuple[str, int, list[int]]], per: np.ndarray, block: int,
                      work: Path) -> tuple[dict, dict]:
    """`by_training_count` and `by_context` of MiniGLM's held-out score from the per-target nats
    `heldout_text` filled in (`per`) over `held_stream`'s stream (`spans`), each token's nats shared
    out over its characters."""
    token_nats = np.concatenate([[0.0], per])  # token j's; the stream's first token is not predicted
    pieces = [(text, char_nats(text, t, token_nats[start:start + len(t)], tok.token_bytes)) for text, start, t in spans]
    train = Counter("".join(f.read_text(encoding="utf-8") for f in sorted((work / "split" / "train").glob("*.txt"))))
    table = by_training_count(pieces, train)
    table["end-of-text tokens"] = {"chars": 0, "total_nats": float(sum(token_nats[s + len(t)] for _, s, t in spans)),
                                   "bpc": None}
    return table, by_context([per], block)


TRAINING_COUNTS = ((0, 0), (1, 9), (10, 99), (100, 999), (1000, None))  # --breakdown's buckets


def by_context(streams: list[np.ndarray], block: int) -> dict:
    """Mean nats per prediction by how much of its window came before it: `streams` hold per-target
    nats of consecutive windows of `block` (target i is predicted from the i % block + 1 ids
    before it in its window), grouped 1-8, 9-16, 17-32, ... ids of context."""
    context = [np.arange(len(per)) % block + 1 for per in streams]
    table, lo = {}, 1
    while lo <= block:
        hi = min(8 if lo == 1 else 2 * lo - 2, block)  # 1-8, 9-16, 17-32, 33-64, ...
        picked = [per[(c >= lo) & (c <= hi)] for per, c in zip(streams, context)]
        n = sum(len(x) for x in picked)
        table[f"{lo}-{hi}"] = {"predicted": n, "mean_nats": float(sum(x.sum() for x in picked) / n) if n else None}
        lo = hi + 1
    return table


def char_nats(text: str, ids: list[int], nats: np.ndarray, token_bytes: list[bytes]) -> np.ndarray:
    """Each character's share of the nats of predicting `ids`, the tokens of `text` (nats[i] for
    ids[i]): a token's nats are split evenly over the characters its bytes belong to, so a
    character spelled by two byte tokens gets both and a two-character token's nats are halved."""
    owner = np.repeat(np.arange(len(text)), [len(c.encode("utf-8")) for c in text])  # byte -> character
    out, b = np.zeros(len(text)), 0
    for t, n in zip(ids, nats, strict=True):
        k = len(token_bytes[t])
        chars = np.unique(owner[b:b + k])
        if k == 0 or len(chars) == 0:
            raise ValueError(f"token {t} spells no byte of the text at byte {b}")
        out[chars] += n / len(chars)
        b += k
    if b != len(owner):
        raise ValueError(f"the tokens spell {b} bytes, the text has {len(owner)}")
    return out


def by_training_count(pieces: list[tuple[str, np.ndarray]], train: Counter) -> dict:
    """Held-out characters grouped by how often each occurs in the training text: per group the
    characters, their nats and bits/char (`pieces`: (text, the nats of each of its characters))."""
    counts = [np.array([train[c] for c in text], dtype=np.int64) for text, _ in pieces]
    table = {}
    for lo, hi in TRAINING_COUNTS:
        label = f"{lo}" if lo == hi else f"{lo}+" if hi is None else f"{lo}-{hi}"
        picks = [(n >= lo) & (n <= (np.inf if hi is None else hi)) for n in counts]
        chars = sum(int(pick.sum()) for pick in picks)
        nats = sum(float(per_char[pick].sum()) for (_, per_char), pick in zip(pieces, picks))
        table[label] = {"chars": chars, "total_nats": nats, "bpc": bits_per_char(nats, chars)}
    return table


# --------------------------------------------------------------------------- driver


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="wall-clock training minutes for EACH side")
    p.add_argument("--preset", default="small", help="MiniGLM train preset or TOML file (default small)")
    p.add_argument("--vocab-size", type=int, default=None, help="MiniGLM's BPE vocabulary (default 8000, or --rung's)")
    p.add_argument("--rung", help="a rung of the budget recipe's ladder (miniglm/train/recipe.py: xs, s, m, l): its "
                                  "model, vocabulary, batch and learning rate on top of --preset (--set still wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig override passed to `miniglm train` (repeatable; e.g. learning_rate=1e-3); "
                        "block_size, batch_size, grad_accum_steps and model shape also shape the baseline")
    p.add_argument("--prepare-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a PrepareConfig override passed to `miniglm prepare` (repeatable)")
    p.add_argument("--baseline-lr", type=float, default=1e-3, help="GPT-2 learning rate (default 1e-3)")
    p.add_argument("--baseline-batch", type=int, default=0,
                   help="GPT-2 windows per step (default 0: MiniGLM's batch_size x grad_accum_steps)")
    p.add_argument("--baseline-dropout", type=float, default=0.0, help="GPT-2 dropout (default 0: MiniGLM has none)")
    p.add_argument("--held-chapters", type=int, default=5, help="chapters held out at the end of each novel")
    p.add_argument("--seed", type=int, default=1337, help="seed of both sides (default 1337, the trainer's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where both sides run")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0 = torch's default)")
    p.add_argument("--data", default=str(DATA), help="directory of .txt novels (default ../shared/data/pretrain)")
    p.add_argument("--only", choices=["miniglm", "baseline"], help="run one side only")
    p.add_argument("--out", help="work directory (default: a temporary one, removed at the end unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--breakdown", action="store_true",
                   help="also print each side's held-out bits/char by how often the characters occur in the "
                        "training text (0, 1-9, 10-99, 100-999, 1000+ times)")
    p.add_argument("--prepared", metavar="DIR",
                   help="MiniGLM's prepared data: made there on the first run, reused by later runs (a sweep); "
                        "it must come from the same --data, --held-chapters and --vocab-size")
    args = p.parse_args(argv)
    if args.rung:
        from miniglm.train.recipe import LADDER

        rungs = {r.name: r for r in LADDER}
        if args.rung not in rungs:
            p.error(f"--rung {args.rung}: not one of {', '.join(rungs)}")
        rung = rungs[args.rung]
        args.vocab_size = args.vocab_size or rung.vocab
        args.set = [kv for kv in rung.overrides() if not kv.startswith("model.vocab_size=")] + args.set
    args.vocab_size = args.vocab_size or 8000
    for kv in args.set + args.prepare_set:
        if "=" not in kv:
            p.error(f"--set/--prepare-set take KEY=VALUE, got {kv!r}")
    if bad := [kv for kv in args.set if kv.split("=", 1)[0].lstrip("-").replace("-", "_") in FORCED]:
        p.error(f"{', '.join(bad)}: set by this script (--minutes, --out)")
    if args.minutes <= 0 or args.held_chapters < 1 or args.baseline_batch < 0:
        p.error("--minutes must be > 0, --held-chapters >= 1 and --baseline-batch >= 0")
    return args


def report(results: dict) -> None:
    print(f"\n{'side':<10} {'parameters':>11} {'steps':>7} {'seen':>34} {'train min':>9} {'held-out bits/char':>18}")
    for side, r in results.items():
        seen = (f"{r['tokens_seen']:,} tokens (~{r['chars_seen'] / 1e6:.2f}M chars)" if side == "miniglm"
                else f"{r['chars_seen']:,} chars")
        print(f"{side:<10} {r['params']:>11,} {r['steps']:>7,} {seen:>34} {r['seconds'] / 60:>9.2f} {r['bpc']:>18.4f}")
    tables = {side: r["by_training_count"] for side, r in results.items() if r.get("by_training_count")}
    if tables:
        print("\nheld-out characters by their count in the training text: bits/char (the side's share of its bits)")
        print(f"{'count':<19} {'characters':>10} " + " ".join(f"{side:>18}" for side in tables))
        labels = dict.fromkeys(label for t in tables.values() for label in t)
        for label in labels:
            cells, chars = [], 0
            for side, t in tables.items():
                row = t.get(label)
                if row is None:
                    cells.append(f"{'-':>18}")
                    continue
                chars = row["chars"]
                bpc = f"{row['bpc']:.3f}" if row["chars"] else ""
                cells.append(f"{bpc:>9} ({row['total_nats'] / results[side]['total_nats']:6.1%})")
            print(f"{label:<19} {chars:>10,} " + " ".join(cells))
    contexts = {side: r["by_context"] for side, r in results.items() if r.get("by_context")}
    if contexts:
        print("\nmean nats per prediction by the context before it in its window (miniglm: tokens, gpt2-char: "
              "characters)")
        print(f"{'context':<19} " + " ".join(f"{side:>18}" for side in contexts))
        for label in dict.fromkeys(label for t in contexts.values() for label in t):
            cells = [f"{'-':>18}" if (t.get(label) or {}).get("mean_nats") is None else f"{t[label]['mean_nats']:>18.3f}"
                     for t in contexts.values()]
            print(f"{label:<19} " + " ".join(cells))
    if "bpc_train_block" in results.get("miniglm", {}):
        b = results["miniglm"]["bpc_train_block"]
        print(f"(miniglm in windows of its training block_size, {b['block']} tokens, instead of the model context "
              f"{results['miniglm']['block']}: {b['bpc']:.4f} bits/char)")


def main(argv=None) -> int:
    args = parse_args(argv)
    from miniglm.config import ConfigError, TrainConfig, load_config
    from miniglm.device import resolve_device
    from miniglm.model.model import MiniGLM

    try:
        shape = load_config(TrainConfig, args.preset, args.set)
    except ConfigError as e:
        raise SystemExit(f"--preset/--set: {e}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   RAYON_NUM_THREADS=str(args.threads))
    device = resolve_device(args.device)
    if args.preset.endswith(".toml") and Path(args.preset).is_file():
        args.preset = str(Path(args.preset).resolve())
    work = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="miniglm-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        info = split_corpus(Path(args.data), args.held_chapters, work)
        for name, s in info.items():
            note = "" if s["consecutive"] else "  (chapter numbers not consecutive: check the split)"
            print(f"{name}: {s['chapters']} chapters, held out from chapter {s['held_from']}: {s['held_chars']:,} of "
                  f"{s['train_chars'] + s['held_chars']:,} characters{note}")
        print(f"held out: {sum(s['held_chars'] for s in info.values()):,} characters in all (every code point, "
              f"newlines included); {args.minutes:g} min of training per side; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {device}", flush=True)
        results = {}
        if args.only != "baseline":
            results["miniglm"] = run_miniglm(args, shape, work, env, device)
            target = results["miniglm"]["params"]
        else:
            from dataclasses import replace

            target = MiniGLM(replace(shape.model, vocab_size=args.vocab_size)).num_params()
            print(f"(MiniGLM not trained: the parameter target is the preset's model with vocab {args.vocab_size})")
        if args.only != "miniglm":
            results["gpt2-char"] = run_baseline(args, shape, target, work, device)
        report(results)
        summary = {"minutes": args.minutes, "preset": args.preset, "vocab_size": args.vocab_size, "set": args.set,
                   "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
                   "split": info, "results": results}
        if len(results) == 2:
            ratio = results["miniglm"]["bpc"] / results["gpt2-char"]["bpc"]
            summary.update(bits_per_char_ratio=ratio, improvement=1 - ratio)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if len(results) == 2:
            print(f"improvement: {100 * (1 - ratio):.1f}%")
            print(f"bits_per_char_ratio: {ratio:.2f}")
    finally:
        if not args.out and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.out:
            print(f"work directory kept: {work}")
    return 0 if all(math.isfinite(r["bpc"]) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
