"""Pretraining data: text files -> tokenizer.json + train.bin/val.bin + meta.json (`miniglm prepare`).

Owns the prepared pretraining directory (its format is agreed in the project notes): the
document-level train/val split, training the tokenizer on the train documents, encoding and the
atomic commit of the outputs. How files become documents is `miniglm.data.text`'s job.

Streaming: every file is read line by line in `text.READ_CHUNK` blocks, in passes (layout and
counts; tokenizer training; encoding), and tokens go to disk batch by batch, so memory is bounded
by a batch of documents and the longest document (a chapter, a JSONL record; with --split-on
document, a whole file), not by the corpus. Documents are encoded in batches of at most
`encode_batch_size` documents and `ENCODE_CHUNK_CHARS` characters; a longer document is cut into
pieces before a line that starts with a non-space character, where byte-level BPE (the tokenizer
prepare trains) never joins text across the cut, so the tokens are the same as encoding it whole.
A 1 GB corpus can train its tokenizer on a seeded sample of train documents
(`tokenizer_sample_mb`); the vocabulary cap then counts the sample's characters.
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

import json
import random
import shutil
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miniglm.config import PrepareConfig, save_config
from miniglm.data import DataError, store, text
from miniglm.data.text import FileLayout, find_inputs, iter_documents, scan_layout
from miniglm.io import check_confined, check_output_dir
from miniglm.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer

BASE_VOCAB = 256 + len(SPECIAL_TOKENS)  # byte tokens + <|endoftext|>, <|pad|>
CHARS_PER_MERGE = 8
OUTPUT_FILES = ("tokenizer.json", "train.bin", "val.bin", "config.json", "meta.json")
STAGING = ".prepare.tmp"
ENCODE_CHUNK_CHARS = 1 << 20  # characters handed to the encoder at once (bounds its memory)


@dataclass
class SourceFile:
    path: Path
    chars: int
    documents: int
    layout: FileLayout  # unit actually used for this file: chapter may fall back to paragraph; JSONL: record

    @property
    def unit(self) -> str:
        return self.layout.unit


@dataclass
class Corpus:
    """Input files as a sequence of documents; constructing it reads (and checks) every file once."""

    paths: Sequence[str | Path]
    unit: str = "chapter"
    sources: list[SourceFile] = field(init=False, default_factory=list)
    doc_chars: array = field(init=False, default_factory=lambda: array("q"))  # chars of each document, in order
    doc_bytes: array = field(init=False, default_factory=lambda: array("q"))  # its UTF-8 bytes (progress, sample)
    input_bytes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        for path in find_inputs(self.paths):
            layout = scan_layout(path, self.unit, text.READ_CHUNK)
            n, chars = len(self.doc_chars), sum(self.doc_chars)
            for doc in iter_documents(path, layout, text.READ_CHUNK):
                self.doc_chars.append(len(doc))
                self.doc_bytes.append(len(doc.encode("utf-8")))
            self.sources.append(SourceFile(path, sum(self.doc_chars) - chars, len(self.doc_chars) - n, layout))
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
            yield from iter_documents(source.path, source.layout, text.READ_CHUNK)

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


def tokenizer_documents(corpus: Corpus, val: set[int], cfg: PrepareConfig) -> set[int]:
    """Indices of the documents the tokenizer learns from: all train documents, or a seeded sample
    of them of about `tokenizer_sample_mb` (each kept with probability sample / train bytes)."""
    train = [i for i in range(len(corpus)) if i not in val]
    train_bytes = sum(corpus.doc_bytes[i] for i in train)
    share = cfg.tokenizer_sample_mb * 1e6 / max(train_bytes, 1)
    if not cfg.tokenizer_sample_mb or share >= 1:
        return set(train)
    rng = random.Random(cfg.seed)
    picked = {i for i in train if rng.random() < share}
    return picked or {train[0]}


@dataclass
class SplitCounts:
    tokens: int = 0  # written to the .bin file, end-of-text tokens included
    chars: int = 0
    documents: int = 0


def cuts_at_lines(tok: Tokenizer) -> bool:
    """True if no token can span a line break followed by a non-space character: byte-level BPE
    with the GPT-2 split pattern, which `train_tokenizer` builds (a Metaspace tokenizer would add a
    prefix at every cut)."""
    pre = json.loads(tok.to_json()).get("pre_tokenizer") or {}
    return pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")


def line_pieces(doc: str, limit: int) -> Iterator[str]:
    """`doc` in pieces of about `limit` characters, each cut after a "\n" that a non-space follows
    (a piece is longer only where no such line break comes sooner)."""
    start = 0
    while len(doc) - start > limit:
        cut = doc.rfind("\n", start, start + limit)
        while cut > start and doc[cut + 1].isspace():
            cut = doc.rfind("\n", start, cut)
        if cut <= start:  # none within the limit: the next usable one after it
            cut = doc.find("\n", start + limit)
            while cut != -1 and cut + 1 < len(doc) and doc[cut + 1].isspace():
                cut = doc.find("\n", cut + 1)
            if cut == -1 or cut + 1 >= len(doc):
                break
        yield doc[start:cut + 1]
        start = cut + 1
    yield doc[start:]


def encode_batches(tok: Tokenizer, documents: Iterable[str], batch_size: int,
                   chunk_chars: int | None = None) -> Iterator[tuple[int, list[int], bool]]:
    """(document index, ids of a piece of it, whether that was its last piece), in order; each batch
    (<= batch_size documents, about <= chunk_chars characters) is encoded on all cores by the Rust
    tokenizer. Long documents are cut by `line_pieces` when the tokenizer allows (`cuts_at_lines`)."""
    chunk_chars = chunk_chars or ENCODE_CHUNK_CHARS
    cut = cuts_at_lines(tok)
    pieces: list[tuple[int, str, bool]] = []
    size, docs = 0, 0

    def flush():
        yield from ((i, ids, last) for (i, _, last), ids in zip(pieces, tok.encode_batch([p for _, p, _ in pieces])))
        pieces.clear()

    for i, doc in enumerate(documents):
        parts = list(line_pieces(doc, chunk_chars)) if cut and len(doc) > chunk_chars else [doc]
        docs += 1
        for k, part in enumerate(parts):
            pieces.append((i, part, k == len(parts) - 1))
            size += len(part)
            if size >= chunk_chars or (k == len(parts) - 1 and docs >= batch_size):
                yield from flush()
                size, docs = 0, 0
    yield from flush()


def _write_tokens(corpus: Corpus, tok: Tokenizer, val: set[int], out: Path, batch_size: int,
                  progress: bool) -> dict[str, SplitCounts]:
    """Encode every document and append it plus eot_id to train.bin or val.bin (streamed)."""
    from tqdm import tqdm

    counts = {"train": SplitCounts(), "val": SplitCounts()}
    eot = [tok.eot_id]
    with store.TokenWriter(out / "train.bin", tok.vocab_size) as ftrain, \
            store.TokenWriter(out / "val.bin", tok.vocab_size) as fval, \
            tqdm(total=sum(corpus.doc_bytes), unit="B", unit_scale=True, desc="encode", disable=not progress) as bar:
        for i, ids, last in encode_batches(tok, corpus.documents(), batch_size):
            split = "val" if i in val else "train"
            (fval if split == "val" else ftrain).write(ids + eot if last else ids)
            c = counts[split]
            c.tokens += len(ids) + last
            if last:
                c.chars += corpus.doc_chars[i]
                c.documents += 1
                bar.update(corpus.doc_bytes[i])
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


def check_out(out: Path, overwrite: bool) -> None:
    """Before any work: `out` must be writable, and hold nothing of another kind unless `overwrite`.

    A run directory, a prepared SFT directory or a checkpoint has its own config.json (and more)
    that prepare would replace, breaking it; an empty directory, an earlier prepared pretraining
    directory, or one holding none of prepare's output names is fine.
    """
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a directory")
    check_output_dir(out)
    if out.is_dir():
        check_confined(out, depth=1)  # its files are replaced: never through a link to elsewhere
    if not out.is_dir() or overwrite or store.is_prepared(out, "pretrain"):
        return
    names = {p.name for p in out.iterdir()} - {STAGING}
    kind = ("a training run directory" if names & {"metrics.jsonl", "checkpoints"} else
            "a prepared SFT directory" if store.is_prepared(out, "sft") else
            "a checkpoint directory" if "model.safetensors" in names else
            "a directory holding " + ", ".join(sorted(names & set(OUTPUT_FILES))) if names & set(OUTPUT_FILES)
            else None)
    if kind:
        raise DataError(f"--out {out} is {kind}, not prepared pretraining data; refusing to replace its "
                        f"files (choose another --out, or pass --overwrite)")


def prepare(inputs: Sequence[str | Path], out: str | Path, cfg: PrepareConfig | None = None,
            tokenizer: str | Path | None = None, progress: bool = True, overwrite: bool = False) -> PrepareResult:
    """Text/JSONL files or directories -> a prepared pretraining directory at `out`."""
    cfg = cfg or PrepareConfig()
    check_out(Path(out), overwrite)
    t0 = time.perf_counter()
    corpus = Corpus(inputs, cfg.split_on)
    val = choose_val(len(corpus), cfg.val_fraction, cfg.seed)
    trained_on = None  # documents and characters the tokenizer learned from (None: given one)
    if tokenizer is not None:
        tok = Tokenizer.from_file(tokenizer)
    else:
        picked = tokenizer_documents(corpus, val, cfg)
        train_docs = (d for i, d in enumerate(corpus.documents()) if i in picked)
        train_chars = sum(corpus.doc_chars[i] for i in picked)
        tok = train_corpus_tokenizer(train_docs, len(picked), train_chars, cfg.vocab_size, cfg.min_frequency, progress)
        trained_on = {"documents": len(picked), "chars": train_chars}
    out = Path(out)
    created = not out.exists()  # (check_out refused a non-directory before any work)
    staging = out / STAGING
    try:
        shutil.rmtree(staging, ignore_errors=True)  # left over from a killed run
        staging.mkdir(parents=True)
        tok.save(staging / "tokenizer.json")
        counts = _write_tokens(corpus, tok, val, staging, cfg.encode_batch_size, progress)
        meta = build_meta(corpus, tok, counts, cfg) | {"tokenizer_trained_on": trained_on}
        save_config(cfg, staging / "config.json")
        meta = store.write_meta(staging, meta)
        _commit(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return PrepareResult(out, meta, [out / n for n in OUTPUT_FILES], corpus.input_bytes, time.perf_counter() - t0)
