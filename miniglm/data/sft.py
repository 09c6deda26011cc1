"""SFT data: Q&A examples -> fixed-length token rows with a loss mask (`miniglm prepare-sft`).

Owns fitting each example into a row by THE rule (`RULE`, also stored in meta.json), packing,
dedup, the train/val split, the prepared SFT directory (written atomically, loaded back with
checks) and showing a row with its trained tokens marked (`miniglm inspect-sft`). Reading the
input formats lives in `miniglm.data.sft_input`; how a conversation becomes tokens is the
tokenizer's (`Tokenizer.render_conversation`, the one chat template), and the mask comes from the
spans it records while rendering, never from searching the token stream.

Row layout (the prepared SFT directory): ids (N, block_size + 1), mask (N, block_size) uint8;
x = ids[:, :-1], y = ids[:, 1:], mask[t] = 1 iff y[t] is an answer token or the end token that
closes an answer. Padding (pad_id) and prompts are never trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from miniglm.config import SFTDataConfig, save_config
from miniglm.data import store
from miniglm.data.sft_input import BadInput, Example, SFTDataError, Turns, read_examples
from miniglm.io import atomic_dir
from miniglm.tokenizer import Tokenizer

__all__ = ["RULE", "SFTDataError", "SFTResult", "Rendered", "render_example", "build_rows", "prepare_sft",
           "load_tokenizer", "row_stats", "format_row"]

ELLIPSIS = "…"
RULE = (
    "Each example is rendered by the chat template (问：{q}\\n答：{a}<|endoftext|> per turn) into a row of "
    "block_size+1 ids. If it is too long: a multi-turn example drops its oldest complete turns until it "
    "fits or one turn is left; a single turn too long keeps its question's beginning and end (the middle "
    "becomes '…') so that the prompt takes at most max(max_question_tokens (0 = block_size//2), "
    "block_size+1 - answer tokens) tokens and leaves room for one answer token, then the answer's tail "
    "is cut (the end token with it). Any cut counts as truncated. An example whose question cannot be "
    "cut short enough for one answer token (the template alone fills the row) is skipped and counted. "
    "Rows are padded with pad_id (mask 0). With pack, whole examples are packed best-fit-decreasing "
    "into rows; an example in a packed row can attend to the examples before it in that row."
)
SPLITS = store.SPLITS


# --------------------------------------------------------------------------- fitting examples into rows


@dataclass
class Rendered:
    ids: list[int]  # <= block_size + 1 tokens
    mask: list[int]  # 1 on answer tokens and their end tokens (aligned with ids, not yet shifted)
    truncated: bool
    turns: Turns  # what was actually rendered


def cut_middle(text: str, keep: int) -> str:
    """Keep `keep` characters: the first ceil(keep/2) and the last floor(keep/2), joined by '…'."""
    if keep >= len(text):
        return text
    tail = keep // 2
    return text[: keep - tail] + ELLIPSIS + (text[len(text) - tail:] if tail else "")


def _shorten_question(tok: Tokenizer, question: str, budget: int) -> str | None:
    """The longest cut_middle(question, k) whose prompt fits `budget` tokens (k >= 1), or None."""
    best, lo, hi = None, 1, len(question) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if len(tok.render_prompt([], cut_middle(question, mid))) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return None if best is None else cut_middle(question, best)


def render_example(tok: Tokenizer, turns: Turns, block_size: int, max_question_tokens: int = 0) -> Rendered | None:
    """Render one example and fit it into block_size + 1 tokens by RULE; None = skipped."""
    limit = block_size + 1
    pieces = [tok.render_conversation([t]) for t in turns]
    truncated = False
    while len(pieces) > 1 and sum(len(ids) for ids, _ in pieces) > limit:
        pieces, turns, truncated = pieces[1:], turns[1:], True  # drop the oldest complete turn
    ids = [i for p_ids, _ in pieces for i in p_ids]
    mask = [m for _, p_mask in pieces for m in p_mask]
    if len(ids) <= limit:
        return Rendered(ids, mask, truncated, turns)
    (question, answer), = turns  # a single turn that does not fit
    answer_len = sum(mask)
    budget = min(max(max_question_tokens or block_size // 2, limit - answer_len), limit - 1)
    if len(ids) - answer_len > budget:
        question = _shorten_question(tok, question, budget)
        if question is None:
            return None
        ids, mask = tok.render_conversation([(question, answer)])
    if len(ids) - sum(mask) >= limit:  # not even one answer token would be a target
        return None
    return Rendered(ids[:limit], mask[:limit], True, ((question, answer),))


def _pack_groups(lengths: Sequence[int], limit: int) -> list[list[int]]:
    """Best-fit decreasing: indices of examples per row, each row's total length <= limit."""
    rows: list[list[int]] = []
    open_by_space: list[list[int]] = [[] for _ in range(limit + 1)]  # space left -> row indices
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        space = next((s for s in range(n, limit + 1) if open_by_space[s]), None)
        if space is None:
            rows.append([])
            r, space = len(rows) - 1, limit
        else:
            r = open_by_space[space].pop()
        rows[r].append(i)
        open_by_space[space - n].append(r)
    return rows


def build_rows(examples: Sequence[Rendered], block_size: int, pad_id: int, dtype: np.dtype,
               pack: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rendered examples -> ids (N, block_size + 1) and the shifted mask (N, block_size) uint8."""
    limit = block_size + 1
    groups = _pack_groups([len(e.ids) for e in examples], limit) if pack else [[i] for i in range(len(examples))]
    ids = np.full((len(groups), limit), pad_id, dtype=dtype)
    render_mask = np.zeros((len(groups), limit), dtype=np.uint8)
    for r, group in enumerate(groups):
        at = 0
        for i in group:
            e = examples[i]
            ids[r, at:at + len(e.ids)] = e.ids
            render_mask[r, at:at + len(e.ids)] = e.mask
            at += len(e.ids)
    return ids, np.ascontiguousarray(render_mask[:, 1:])  # mask[t] belongs to target y[t] = ids[t + 1]


# --------------------------------------------------------------------------- the whole preparation


@dataclass
class SFTResult:
    out: Path
    meta: dict[str, Any]
    bad_messages: list[str]  # the first few skipped bad records (with skip_bad)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json, a directory holding one (prepared data, checkpoint), or a run directory."""
    path = Path(path)
    if path.is_dir() and not (path / "tokenizer.json").is_file() and (path / "checkpoints").is_dir():
        from miniglm.checkpoint import resolve_checkpoint  # lazy: imports torch

        path = resolve_checkpoint(path)
    return Tokenizer.from_file(path)


def _dedup(examples: list[Example]) -> list[Example]:
    seen: set[Turns] = set()
    unique = []
    for e in examples:
        if e.turns not in seen:
            seen.add(e.turns)
            unique.append(e)
    return unique


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle example indices with `seed`; the first round(n * val_fraction) (>= 1 when n >= 2) are val."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    return order[n_val:], order[:n_val]


def _normalize(text: str) -> str:
    return " ".join(text.split())


def _render_all(tok: Tokenizer, examples: list[Example], cfg: SFTDataConfig,
                progress: bool) -> tuple[list[tuple[Example, Rendered]], int]:
    kept, skipped = [], 0
    for e in tqdm(examples, desc="render", unit="ex", disable=not progress, mininterval=0.5):
        r = render_example(tok, e.turns, cfg.block_size, cfg.max_question_tokens)
        if r is None:
            skipped += 1
        else:
            kept.append((e, r))
    return kept, skipped


def prepare_sft(inputs: Sequence[str | Path], tokenizer: Tokenizer, out: str | Path, cfg: SFTDataConfig,
                eval_file: str | Path | None = None, progress: bool = True) -> SFTResult:
    """Read, dedup, render, split and write a prepared SFT directory at `out` (atomically)."""
    if not inputs:
        raise SFTDataError("no input files given")
    check_out(Path(out))
    bad, sources, examples = BadInput(), [], []
    for path in inputs:
        before = bad.count
        got = read_examples(path, cfg.skip_bad, bad)
        sources.append({"path": str(path), "examples": len(got), "bad_lines": bad.count - before})
        examples += got
    if not examples:
        raise SFTDataError(f"no valid examples in {', '.join(map(str, inputs))}")
    unique = _dedup(examples) if cfg.dedup else examples
    kept, skipped = _render_all(tokenizer, unique, cfg, progress)
    if not kept:
        raise SFTDataError(f"all {len(unique)} examples were skipped: none leaves room for an answer "
                           f"token in block_size={cfg.block_size}")
    train_idx, val_idx = _split(len(kept), cfg.val_fraction, cfg.seed)
    dtype = store.token_dtype(tokenizer.vocab_size)
    arrays = {split: build_rows([kept[i][1] for i in idx], cfg.block_size, tokenizer.pad_id, dtype, cfg.pack)
              for split, idx in zip(SPLITS, (train_idx, val_idx))}
    eval_overlap = None
    if eval_file is not None:
        eval_questions = {_normalize(q) for e in read_examples(eval_file, cfg.skip_bad) for q, _ in e.turns}
        eval_overlap = sum(any(_normalize(q) in eval_questions for q, _ in e.turns) for e, _ in kept)
    counts = {
        "examples_read": len(examples), "duplicates_removed": len(examples) - len(unique),
        "examples": len(kept), "train_examples": len(train_idx), "val_examples": len(val_idx),
        "train_rows": len(arrays["train"][0]), "val_rows": len(arrays["val"][0]),
        "truncated": sum(r.truncated for _, r in kept), "skipped": skipped, "bad_lines": bad.count,
        "answer_tokens": int(sum(int(m.sum(dtype=np.int64)) for _, m in arrays.values())),
        "eval_overlap": eval_overlap,
    }
    meta = {
        "kind": "sft", "block_size": cfg.block_size,
        "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_id,
        "pad_id": tokenizer.pad_id, "tokenizer": "tokenizer.json", "tokenizer_sha256": tokenizer.sha256,
        "counts": counts, "sources": sources, "eval_file": None if eval_file is None else str(eval_file),
        "pack": cfg.pack, "split": {"unit": "example", "seed": cfg.seed, "val_fraction": cfg.val_fraction},
        "rule": RULE,
    }
    meta = _write_dir(Path(out), tokenizer, cfg, meta, arrays)
    return SFTResult(Path(out), meta, bad.messages)


def check_out(out: Path) -> None:
    """Only an empty or a prepared SFT directory may be replaced (checked before any work, and again at the end)."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or store.is_prepared(out, "sft"))):
        raise SFTDataError(f"refusing to replace {out}: it is not a prepared SFT directory "
                           "(remove it or choose another --out)")


def _write_dir(out: Path, tok: Tokenizer, cfg: SFTDataConfig, meta: dict[str, Any],
               arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Write everything into a temporary sibling, then rename it into place; returns meta.json as written."""
    check_out(out)
    with atomic_dir(out) as tmp:
        for split, (ids, mask) in arrays.items():
            store.write_rows(tmp, split, ids, mask)
        tok.save(tmp / "tokenizer.json")
        save_config(cfg, tmp / "config.json")
        meta = store.write_meta(tmp, meta)
    return meta


# --------------------------------------------------------------------------- showing a row

MARK_PLAIN = ("⟦", "⟧")
MARK_COLOR = ("\x1b[1;32m", "\x1b[0m")  # bold green


def row_stats(ids_row: np.ndarray, mask_row: np.ndarray, pad_id: int) -> dict[str, int]:
    """tokens (block_size + 1), content (before the padding), trained (mask 1), padding."""
    n = len(ids_row)
    content = n
    while content > 1 and ids_row[content - 1] == pad_id and not mask_row[content - 2]:
        content -= 1
    return {"tokens": n, "content": content, "trained": int(mask_row.sum()), "padding": n - content}


def format_row(tok: Tokenizer, ids_row: np.ndarray, mask_row: np.ndarray, color: bool = False) -> str:
    """The row's content as text, trained tokens (targets with mask 1) wrapped in markers."""
    start, end = MARK_COLOR if color else MARK_PLAIN
    content = row_stats(ids_row, mask_row, tok.pad_id)["content"]
    trained = [False] + [bool(m) for m in mask_row]  # token i is the target of position i - 1
    out, i = [], 0
    while i < content:
        j = i
        while j < content and trained[j] == trained[i]:
            j += 1
        text = tok.decode(int(t) for t in ids_row[i:j])
        out.append(f"{start}{text}{end}" if trained[i] else text)
        i = j
    return "".join(out)
