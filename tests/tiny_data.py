"""Tiny prepared data directories for trainer tests: a pretraining dir and an SFT dir.

Synthetic text with learnable structure, a byte-level BPE trained on it, and files laid out as
`miniglm prepare` / `miniglm prepare-sft` write them (formats in the helpers' common brief), so
the trainer reads them through its real code paths.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from miniglm.config import TrainConfig, load_config
from miniglm.tokenizer import Tokenizer, train_tokenizer

CHARS = "天地人和山水风云日月春夏秋冬东西南北花草树木"


def synthetic_documents(n: int, seed: int) -> list[str]:
    """Documents of counting-like sentences: each char is followed by its successor most of the time."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(3, 8)):
            i = rng.randrange(len(CHARS))
            k = rng.randint(3, 9)
            sentences.append("".join(CHARS[(i + j) % len(CHARS)] for j in range(k)) + "。")
        docs.append("".join(sentences))
    return docs


def make_tokenizer(docs: list[str], vocab_size: int = 300) -> Tokenizer:
    return train_tokenizer(docs, vocab_size=vocab_size, min_frequency=2, show_progress=False)


def _join(tok: Tokenizer, docs: list[str]) -> np.ndarray:
    ids: list[int] = []
    for d in docs:
        ids += tok.encode(d) + [tok.eot_id]
    return np.asarray(ids, dtype=np.uint16)


def make_pretrain_dir(out: Path, n_train: int = 400, n_val: int = 40, seed: int = 0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    train_docs, val_docs = synthetic_documents(n_train, seed), synthetic_documents(n_val, seed + 1)
    tok = make_tokenizer(train_docs)
    tok.save(out / "tokenizer.json")
    train, val = _join(tok, train_docs), _join(tok, val_docs)
    train.tofile(out / "train.bin")
    val.tofile(out / "val.bin")
    train_chars, val_chars = sum(map(len, train_docs)), sum(map(len, val_docs))
    meta = {"format_version": 1, "kind": "pretrain", "dtype": "uint16", "vocab_size": tok.vocab_size,
            "eot_id": tok.eot_id, "pad_id": tok.pad_id, "tokenizer": "tokenizer.json",
            "tokenizer_sha256": tok.sha256, "train_tokens": len(train), "val_tokens": len(val),
            "train_chars": train_chars, "val_chars": val_chars, "train_documents": n_train,
            "val_documents": n_val, "sources": [{"path": "synthetic", "chars": train_chars + val_chars,
                                                 "documents": n_train + n_val}],
            "split": {"rule": "synthetic", "unit": "document", "seed": seed, "val_fraction": 0.1},
            "chars_per_token": (train_chars + val_chars) / (len(train) + len(val))}
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


def make_sft_dir(out: Path, tokenizer_dir: Path, block_size: int = 32, n_train: int = 24, n_val: int = 6) -> Path:
    """Q&A rows ("which char follows X?") rendered by the chat template, padded to block_size + 1."""
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(tokenizer_dir / "tokenizer.json")
    tok.save(out / "tokenizer.json")
    rng = random.Random(7)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((n, block_size + 1), tok.pad_id, dtype=np.uint16)
        mask = np.zeros((n, block_size), dtype=np.uint8)
        for r in range(n):
            i = rng.randrange(len(CHARS))
            q, a = CHARS[i] + "之后", "".join(CHARS[(i + j) % len(CHARS)] for j in range(1, 4))
            row, m = tok.render_conversation([(q, a)])
            row, m = row[:block_size + 1], m[:block_size + 1]
            ids[r, :len(row)] = row
            mask[r, :len(row) - 1] = m[1:]  # mask[t] says whether y[t] = ids[t + 1] is trained
        return ids, mask

    for split, n in (("train", n_train), ("val", n_val)):
        ids, mask = rows(n)
        np.save(out / f"{split}_ids.npy", ids)
        np.save(out / f"{split}_mask.npy", mask)
    meta = {"format_version": 1, "kind": "sft", "block_size": block_size, "dtype": "uint16",
            "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "pad_id": tok.pad_id,
            "tokenizer_sha256": tok.sha256, "counts": {"train": n_train, "val": n_val}, "sources": [],
            "rule": "synthetic"}
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return out


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """The `tiny` preset, float32 on the CPU, pointed at `data`/`out`, with `overrides`."""
    base = {"data": str(data), "out": str(out), "device": "cpu", "dtype": "float32", "progress": False}
    return load_config(TrainConfig, "tiny", {**base, **overrides})
