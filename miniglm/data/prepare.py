"""Pretraining data: text files -> tokenizer.json + train.bin/val.bin + meta.json (`miniglm prepare`).

Owns the prepared pretraining directory (its format is agreed in the project notes): the
document-level train/val split, training the tokenizer on the train documents, encoding and the
atomic commit of the outputs. How files become documents is `miniglm.data.text`'s job.

The corpus is read one file at a time, three times (count and validate; train the tokenizer;
encode), so the whole text is never held in memory, and tokens are streamed to disk batch by batch.
Rules:
- split: k = round(val_fraction * documents), at least 1 and at most documents - 1, documents
  drawn at random with `seed` go to val; fewer than 2 documents is an error.
- every document is followed by the end-of-text token (eot_id) in its .bin file, so documents are
  joined (and ended) by it; decoding a .bin and splitting at eot gives back the documents exactly.
- vocabulary: the requested size, capped at 258 + train_chars // 8 (256 byte tokens, 2 special
  tokens, at most one merge per 8 characters of training text) so a tiny corpus gets no vocabulary
  it cannot train; the BPE trainer also stops when no pair occurs `min_frequency` times.
- chars_per_token in meta.json = document characters / tokens, end-of-text tokens not counted.
- outputs (in `miniglm.data.store`'s format) are built in `<out>/.prepare.tmp/` and moved into
  place at the end, meta.json last (an old meta.json is removed first); on any error the old
  outputs are left untouched.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miniglm.config import PrepareConfig, save_config
from miniglm.data import DataError, store
from miniglm.data.text import find_inputs, read_documents
from miniglm.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer

BASE_VOCAB = 256 + len(SPECIAL_TOKENS)  # byte tokens + <|endoftext|>, <|pad|>
CHARS_PER_MERGE = 8
OUTPUT_FILES = ("tokenizer.json", "train.bin", "val.bin", "config.json", "meta.json")
STAGING = ".prepare.tmp"


@dataclass
class SourceFile:
    path: Path
    chars: int
    documents: int
    unit: str  # unit actually used for this file: chapter may fall back to paragraph; JSONL: record


@dataclass
class Corpus:
    """Input files as a sequence of documents; constructing it reads (and checks) every file once."""

    paths: Sequence[str | Path]
    unit: str = "chapter"
    sources: list[SourceFile] = field(init=False, default_factory=list)
    doc_chars: list[int] = field(init=False, default_factory=list)  # chars of each document, in order
    input_bytes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        for path in find_inputs(self.paths):
            docs, used = read_documents(path, self.unit)
            self.sources.append(SourceFile(path, sum(map(len, docs)), len(docs), used))
            self.doc_chars += map(len, docs)
            self.input_bytes += path.stat().st_size
        if not self.doc_chars:
            names = ", ".join(str(s.path) for s in self.sources[:3]) + (", ..." if len(self.sources) > 3 else "")
            raise DataError(f"empty corpus: no text in {names}")

    def __len__(self) -> int:
        return len(self.doc_chars)

    @property
    def chars(self) -> int:
        return sum(self.doc_chars)

    def documents(self) -> Iterator[str]:
        for source in self.sources:
            yield from read_documents(source.path, self.unit)[0]

    def describe_units(self) -> str:
        parts = [f"unit {self.unit}"]
        if fallback := sum(s.unit == "paragraph" != self.unit for s in self.sources):
            parts.append(f"{fallback} of {len(self.sources)} files have no chapter headings: paragraphs")
        if records := sum(s.unit == "record" for s in self.sources):
            parts.append(f"{records} JSONL files: one document per record")
        return "; ".join(parts)


def choose_val(n_documents: int, fraction: float, seed: int) -> set[int]:
    """Indices of the documents held out for validation (see the module docstring)."""
    if n_documents < 2:
        raise DataError(f"only {n_documents} document: a train/val split needs at least 2 "
                        f"(add files, or split finer with --split-on paragraph)")
    k = min(max(1, round(fraction * n_documents)), n_documents - 1)
    return set(random.Random(seed).sample(range(n_documents), k))


def capped_vocab_size(requested: int, train_chars: int) -> int:
    return min(requested, BASE_VOCAB + train_chars // CHARS_PER_MERGE)


def train_corpus_tokenizer(documents: Iterable[str], n_documents: int, chars: int, vocab_size: int,
                           min_frequency: int, progress: bool = True) -> Tokenizer:
    """Byte-level BPE on `documents`, with the vocabulary capped for small corpora."""
    return train_tokenizer(documents, capped_vocab_size(vocab_size, chars), min_frequency=min_frequency,
                           show_progress=progress, length=n_documents)


@dataclass
class SplitCounts:
    tokens: int = 0  # written to the .bin file, end-of-text tokens included
    chars: int = 0
    documents: int = 0


def encode_batches(tok: Tokenizer, documents: Iterable[str], batch_size: int) -> Iterator[tuple[str, list[int]]]:
    """(document, ids) pairs; each batch is encoded on all cores by the Rust tokenizer."""
    batch: list[str] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) == batch_size:
            yield from zip(batch, tok.encode_batch(batch))
            batch = []
    if batch:
        yield from zip(batch, tok.encode_batch(batch))


def _write_tokens(corpus: Corpus, tok: Tokenizer, val: set[int], out: Path, batch_size: int,
                  progress: bool) -> dict[str, SplitCounts]:
    """Encode every document and append it plus eot_id to train.bin or val.bin (streamed)."""
    from tqdm import tqdm

    counts = {"train": SplitCounts(), "val": SplitCounts()}
    eot = [tok.eot_id]
    with store.TokenWriter(out / "train.bin", tok.vocab_size) as ftrain, \
            store.TokenWriter(out / "val.bin", tok.vocab_size) as fval, \
            tqdm(total=corpus.chars, unit="char", unit_scale=True, desc="encode", disable=not progress) as bar:
        for i, (doc, ids) in enumerate(encode_batches(tok, corpus.documents(), batch_size)):
            split = "val" if i in val else "train"
            (fval if split == "val" else ftrain).write(ids + eot)
            c = counts[split]
            c.tokens += len(ids) + 1
            c.chars += len(doc)
            c.documents += 1
            bar.update(len(doc))
    return counts


def build_meta(corpus: Corpus, tok: Tokenizer, counts: dict[str, SplitCounts], cfg: PrepareConfig) -> dict[str, Any]:
    train, val = counts["train"], counts["val"]
    text_tokens = train.tokens + val.tokens - len(corpus)
    return {
        "kind": "pretrain", "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "pad_id": tok.pad_id,
        "tokenizer": "tokenizer.json", "tokenizer_sha256": tok.sha256,
        "train_tokens": train.tokens, "val_tokens": val.tokens, "train_chars": train.chars, "val_chars": val.chars,
        "train_documents": train.documents, "val_documents": val.documents,
        "sources": [{"path": str(s.path), "chars": s.chars, "documents": s.documents} for s in corpus.sources],
        "split": {"rule": f"{val.documents} of {len(corpus)} documents held out at random with the seed "
                          f"({corpus.describe_units()}); each document is followed by eot_id",
                  "unit": cfg.split_on, "seed": cfg.seed, "val_fraction": cfg.val_fraction},
        "chars_per_token": round((train.chars + val.chars) / max(1, text_tokens), 4),
    }


def _commit(staging: Path, out: Path) -> None:
    """Move the finished files into `out`; meta.json goes last, so it only ever describes a whole set."""
    (out / "meta.json").unlink(missing_ok=True)
    for name in OUTPUT_FILES:
        (staging / name).replace(out / name)
    staging.rmdir()


@dataclass
class PrepareResult:
    out: Path
    meta: dict[str, Any]
    files: list[Path]
    input_bytes: int
    seconds: float


def prepare(inputs: Sequence[str | Path], out: str | Path, cfg: PrepareConfig | None = None,
            tokenizer: str | Path | None = None, progress: bool = True) -> PrepareResult:
    """Text/JSONL files or directories -> a prepared pretraining directory at `out`."""
    cfg = cfg or PrepareConfig()
    t0 = time.perf_counter()
    corpus = Corpus(inputs, cfg.split_on)
    val = choose_val(len(corpus), cfg.val_fraction, cfg.seed)
    if tokenizer is not None:
        tok = Tokenizer.from_file(tokenizer)
    else:
        train_docs = (d for i, d in enumerate(corpus.documents()) if i not in val)
        train_chars = sum(c for i, c in enumerate(corpus.doc_chars) if i not in val)
        tok = train_corpus_tokenizer(train_docs, len(corpus) - len(val), train_chars, cfg.vocab_size,
                                     cfg.min_frequency, progress)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a directory")
    created = not out.exists()
    staging = out / STAGING
    try:
        shutil.rmtree(staging, ignore_errors=True)  # left over from a killed run
        staging.mkdir(parents=True)
        tok.save(staging / "tokenizer.json")
        counts = _write_tokens(corpus, tok, val, staging, cfg.encode_batch_size, progress)
        meta = build_meta(corpus, tok, counts, cfg)
        save_config(cfg, staging / "config.json")
        meta = store.write_meta(staging, meta)
        _commit(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return PrepareResult(out, meta, [out / n for n in OUTPUT_FILES], corpus.input_bytes, time.perf_counter() - t0)
