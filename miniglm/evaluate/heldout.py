"""Held-out loss, perplexity and bits per character of a model, over a whole held-out set.

Owns how held-out text is scored; Q&A evaluation is `miniglm.evaluate.qa`, the text metrics
`miniglm.evaluate.metrics`, the report files `miniglm.evaluate.report`. Run it as
`miniglm eval RUN_DIR [--data DIR] [--text FILE...] [--qa FILE]`.

Held-out loss is computed over the WHOLE held-out set, never a sample of batches:
- a token stream (`val.bin` of a prepared directory, or raw text files tokenized with the
  checkpoint's tokenizer, each file followed by the end-of-text token like `prepare` does) is cut
  into consecutive windows of `block = model context` targets: window k reads tokens
  [k·block, (k+1)·block) and predicts tokens [k·block + 1, (k+1)·block + 1) (the last window may
  be shorter). Every token except the very first one of the stream is predicted exactly once, so
  `tokens_scored = N - 1`; a window's first predictions have short context (no stride/overlap),
  which makes this a slight upper bound on the loss with unbounded context.
- an SFT directory: every row of `val_ids.npy`, scoring exactly the masked (answer + end) tokens.
loss = total nats / tokens scored; perplexity = exp(loss); bits per character =
total nats / (characters · ln 2), with characters = `val_chars` from meta.json (the documents'
Unicode characters, separators excluded), the files' characters for raw text, and for SFT the
characters of the decoded answer tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from miniglm.data import store
from miniglm.errors import UserError
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer

LN2 = math.log(2.0)


class EvalError(UserError, ValueError):
    """Unusable evaluation input: a missing or malformed data, text or Q&A file."""


@dataclass
class LossResult:
    """Loss over one held-out set; `rule` says exactly which tokens were scored."""

    source: str
    kind: str  # "pretrain" | "sft" | "text"
    loss: float  # mean nats per scored token
    perplexity: float
    bpc: float | None
    tokens_scored: int
    total_nats: float
    chars: int | None
    windows: int
    block_size: int
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bits_per_char(total_nats: float, chars: int | None) -> float | None:
    """Bits per character of a text whose tokens cost `total_nats` in all (None without a character count).

    The one conversion: comparable across tokenizers, since it counts the text, not the tokens.
    """
    return total_nats / (chars * LN2) if chars else None


def _result(source: str, kind: str, nats: float, scored: int, chars: int | None, windows: int,
            block: int, rule: str) -> LossResult:
    if scored == 0:
        raise EvalError(f"{source}: no tokens to score")
    loss = nats / scored
    bpc = bits_per_char(nats, chars)
    return LossResult(source, kind, loss, math.exp(loss), bpc, scored, nats, chars, windows, block, rule)


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to `dtype` for the forward passes of scoring (a no-op for float32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def model_device(model: MiniGLM) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------- held-out token streams


@torch.no_grad()
def score_stream(model: MiniGLM, tokens: np.ndarray, block: int, batch_size: int = 8,
                 dtype: torch.dtype = torch.float32, progress: bool = False,
                 per_token: np.ndarray | None = None) -> tuple[float, int, int]:
    """(total nats, tokens scored, windows) over consecutive windows of `block` targets; with
    `per_token` (len(tokens) - 1 floats), per_token[i] = the nats of predicting tokens[i + 1]."""
    n = len(tokens)
    starts = list(range(0, max(n - 1, 0), block))
    device = model_device(model)
    nats, scored = 0.0, 0
    bar = tqdm(total=len(starts), desc="held-out windows", unit="win", disable=not progress)
    for i in range(0, len(starts), batch_size):
        group = starts[i:i + batch_size]
        lengths = {min(block, n - 1 - s) for s in group}
        for length in sorted(lengths):  # only the last window can be shorter
            rows = [s for s in group if min(block, n - 1 - s) == length]
            window = np.stack([np.asarray(tokens[s:s + length + 1], dtype=np.int64) for s in rows])
            w = torch.from_numpy(window).to(device)  # (B, length + 1)
            with autocast(device, dtype):
                _, token_loss = model(w[:, :-1], w[:, 1:], reduction="none")  # (B, length) nats
            nats += token_loss.double().sum().item()
            scored += w[:, 1:].numel()
            if per_token is not None:
                for s, row in zip(rows, token_loss.float().cpu().numpy()):
                    per_token[s:s + length] = row
        bar.update(len(group))
    bar.close()
    return nats, scored, len(starts)


def heldout_pretrain(model: MiniGLM, data_dir: Path, meta: dict[str, Any], batch_size: int = 8,
                     dtype: torch.dtype = torch.float32, progress: bool = False) -> LossResult:
    path = data_dir / "val.bin"
    tokens = store.open_tokens(data_dir, "val", meta, EvalError)
    if len(tokens) < 2:
        raise EvalError(f"{path}: {len(tokens)} tokens, need at least 2")
    block = model.config.max_position_embeddings
    nats, scored, windows = score_stream(model, tokens, block, batch_size, dtype, progress)
    rule = (f"all {len(tokens)} tokens of val.bin in consecutive windows of {block} targets; every "
            f"token but the first is predicted once")
    return _result(str(path), "pretrain", nats, scored, meta.get("val_chars"), windows, block, rule)


def heldout_text(model: MiniGLM, tokenizer: Tokenizer, files: Sequence[Path], batch_size: int = 8,
                 dtype: torch.dtype = torch.float32, progress: bool = False,
                 per_token: np.ndarray | None = None) -> LossResult:
    """The files as one stream, each followed by the end-of-text token, scored by `score_stream`
    (`per_token`: filled with the nats of each target, as there; one float per stream token but one)."""
    ids: list[int] = []
    chars = 0
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EvalError(f"{f}: not found") from None
        except UnicodeDecodeError as e:
            raise EvalError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        ids += tokenizer.encode(text) + [tokenizer.eot_id]
        chars += len(text)
    if chars == 0:
        raise EvalError(f"{', '.join(map(str, files))}: no text to score")
    if per_token is not None and len(per_token) != len(ids) - 1:
        raise ValueError(f"per_token holds {len(per_token)} floats; the stream has {len(ids) - 1} targets")
    block = model.config.max_position_embeddings
    nats, scored, windows = score_stream(model, np.asarray(ids, dtype=np.int64), block, batch_size, dtype, progress,
                                         per_token)
    rule = (f"{len(files)} file(s), each followed by the end-of-text token: {len(ids)} tokens in windows "
            f"of {block} targets; every token but the first is predicted once")
    return _result(", ".join(map(str, files)), "text", nats, scored, chars, windows, block, rule)


@torch.no_grad()
def heldout_sft(model: MiniGLM, tokenizer: Tokenizer, data_dir: Path, meta: dict[str, Any],
                batch_size: int = 8, dtype: torch.dtype = torch.float32, progress: bool = False) -> LossResult:
    ids, mask = store.open_rows(data_dir, "val", meta, EvalError)
    if len(ids) == 0:
        raise EvalError(f"{data_dir}: no validation rows to score")
    block = ids.shape[1] - 1
    if block > model.config.max_position_embeddings:
        raise EvalError(f"{data_dir}: rows of {block} tokens exceed the model's context "
                        f"({model.config.max_position_embeddings})")
    device = model_device(model)
    nats, scored, chars = 0.0, 0, 0
    for i in tqdm(range(0, len(ids), batch_size), desc="held-out rows", disable=not progress):
        rows = torch.from_numpy(np.asarray(ids[i:i + batch_size], dtype=np.int64)).to(device)  # (B, T+1)
        m = torch.from_numpy(np.asarray(mask[i:i + batch_size], dtype=np.float32)).to(device)  # (B, T)
        with autocast(device, dtype):
            _, token_loss = model(rows[:, :-1], rows[:, 1:], m, reduction="none")  # (B, T), 0 off the mask
        nats += token_loss.double().sum().item()
        scored += int(m.sum().item())
        for y, keep in zip(rows[:, 1:].tolist(), m.bool().tolist()):
            chars += len(tokenizer.decode([t for t, k in zip(y, keep) if k and t != tokenizer.eot_id]))
    rule = f"the answer and end tokens (loss mask) of all {len(ids)} rows of val_ids.npy (rows of {block} targets)"
    return _result(str(data_dir), "sft", nats, scored, chars, len(ids), block, rule)


def training_characters(data_dirs: Sequence[str | Path], tokenizer: Tokenizer,
                        chunk: int = 1 << 20) -> tuple[frozenset[str], list[str]]:
    """Every character of the training split of prepared directories (pretrain or SFT) that were
    tokenized with `tokenizer`; and the directories actually read (others are skipped)."""
    chars: set[str] = set()
    used = []
    for d in map(Path, data_dirs):
        try:
            meta = store.read_meta(d, error=EvalError)
        except EvalError:
            continue
        if meta.get("tokenizer_sha256") != tokenizer.sha256:
            continue
        if meta["kind"] == "pretrain" and (d / "train.bin").is_file():
            tokens = store.open_tokens(d, "train", meta, EvalError)
            for i in range(0, len(tokens), chunk):  # a character cut at a chunk edge is seen elsewhere
                chars.update(tokenizer.decode(tokens[i:i + chunk].tolist(), skip_special_tokens=True))
        elif meta["kind"] == "sft" and (d / "train_ids.npy").is_file():
            ids, _ = store.open_rows(d, "train", meta, EvalError)
            rows = max(1, chunk // max(ids.shape[1], 1))
            for i in range(0, len(ids), rows):
                for text in tokenizer.decode_batch(ids[i:i + rows].tolist(), skip_special_tokens=True):
                    chars.update(text)
        else:
            continue
        used.append(str(d))
    chars.discard("\ufffd")
    return frozenset(c for c in chars if not c.isspace()), used


def check_inputs(data_dir: str | Path | None, text_files: Sequence[str | Path]) -> None:
    """Fail fast, before any checkpoint is loaded, on a missing/unprepared data dir or text file."""
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise EvalError(f"{data_dir}: data directory not found")
        store.read_meta(data_dir, error=EvalError)
    for f in text_files:
        if not Path(f).is_file():
            raise EvalError(f"{f}: not found")


def evaluate_heldout(model: MiniGLM, tokenizer: Tokenizer, data_dir: str | Path | None = None,
                     text_files: Sequence[str | Path] = (), batch_size: int = 8,
                     dtype: torch.dtype = torch.float32, progress: bool = False) -> list[LossResult]:
    """Loss results for a prepared (pretrain or SFT) directory and/or raw text files."""
    results = []
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise EvalError(f"{data_dir}: data directory not found")
        meta = store.read_meta(data_dir, error=EvalError)
        store.check_tokenizer(meta, tokenizer, data_dir, EvalError)
        if meta["kind"] == "pretrain":
            results.append(heldout_pretrain(model, data_dir, meta, batch_size, dtype, progress))
        else:
            results.append(heldout_sft(model, tokenizer, data_dir, meta, batch_size, dtype, progress))
    if text_files:
        results.append(heldout_text(model, tokenizer, [Path(f) for f in text_files], batch_size, dtype, progress))
    return results
