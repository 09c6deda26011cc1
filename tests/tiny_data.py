"""Tiny prepared data directories for tests: a pretraining dir and an SFT dir.

Synthetic text with learnable structure, prepared by the real `prepare` / `prepare_sft` code (the
one writer of the format), so every test reads data exactly as users' runs do.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from miniglm.config import PrepareConfig, SFTDataConfig, TrainConfig, load_config
from miniglm.data.prepare import prepare
from miniglm.data.sft import prepare_sft
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


def make_pretrain_dir(out: Path, n_train: int = 400, n_val: int = 40, seed: int = 0) -> Path:
    """A prepared pretraining directory, written by the real `prepare` from synthetic documents."""
    docs = synthetic_documents(n_train + n_val, seed)
    src = out.with_name(out.name + "_corpus.jsonl")
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    cfg = PrepareConfig(vocab_size=300, split_on="document", val_fraction=n_val / (n_train + n_val), seed=seed)
    prepare([src], out, cfg, progress=False)
    return out


def make_sft_dir(out: Path, tokenizer_dir: Path, block_size: int = 32, n_train: int = 24, n_val: int = 6) -> Path:
    """Q&A rows ("which chars follow X?"), written by the real `prepare_sft` with `tokenizer_dir`'s tokenizer."""
    rng = random.Random(7)
    pairs = []
    for _ in range(n_train + n_val):
        i = rng.randrange(len(CHARS))
        pairs.append({"question": CHARS[i] + "之后", "answer": "".join(CHARS[(i + j) % len(CHARS)] for j in range(1, 4))})
    src = out.with_name(out.name + "_qa.jsonl")
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    cfg = SFTDataConfig(block_size=block_size, val_fraction=n_val / (n_train + n_val), dedup=False)
    prepare_sft([src], Tokenizer.from_file(tokenizer_dir / "tokenizer.json"), out, cfg, progress=False)
    return out


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """The `tiny` preset, float32 on the CPU, pointed at `data`/`out`, with `overrides`."""
    base = {"data": str(data), "out": str(out), "device": "cpu", "dtype": "float32", "progress": False}
    return load_config(TrainConfig, "tiny", {**base, **overrides})
