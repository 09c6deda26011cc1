"""The prepared-data directory: THE owner of its format, for both kinds (one writer, one reader).

    pretrain (`miniglm prepare`):      tokenizer.json  train.bin  val.bin  config.json  meta.json
    sft      (`miniglm prepare-sft`):  tokenizer.json  {train,val}_ids.npy  {train,val}_mask.npy
                                       config.json  meta.json

- `.bin`: flat little-endian token ids, `token_dtype(vocab_size)`: uint16 while every id fits
  (vocab_size <= 65,536, ids 0..65,535), else uint32; read with `np.memmap`, never whole.
- `_ids.npy` (N, T + 1) in the same dtype and `_mask.npy` (N, T) uint8: row r trains x = ids[r, :-1]
  on y = ids[r, 1:] where mask[r] is 1; plain .npy read with allow_pickle=False.
- meta.json: `format_version`, `kind`, `dtype`, `vocab_size`, `eot_id`, `pad_id`,
  `tokenizer_sha256` (always); `block_size` for SFT; token/character counts, sources and the split
  rule for the record. The tokenizer.json beside it must hash to `tokenizer_sha256`.
Everything that reads or writes these files (prepare, prepare-sft, the batch loader, evaluation,
test fixtures) goes through this module. A directory is written by the producer into a
temporary sibling (`miniglm.io.atomic_dir`) or staging area and committed with meta.json last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from miniglm.data import DataError
from miniglm.io import atomic_write_json
from miniglm.tokenizer import Tokenizer

FORMAT_VERSION = 1
KINDS = ("pretrain", "sft")
SPLITS = ("train", "val")
META = "meta.json"
TOKENIZER = "tokenizer.json"
MAKER = {"pretrain": "miniglm prepare", "sft": "miniglm prepare-sft"}


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while the largest id (vocab_size - 1) fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


# --------------------------------------------------------------------------- meta.json


def write_meta(directory: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write meta.json (atomically), the last file a producer writes; returns it as written."""
    missing = [k for k in ("kind", "vocab_size", "tokenizer_sha256") if k not in meta]
    if missing or meta["kind"] not in KINDS:
        raise ValueError(f"incomplete meta.json: missing {missing} or bad kind {meta.get('kind')!r}")
    full = {"format_version": FORMAT_VERSION, "dtype": token_dtype(meta["vocab_size"]).name, **meta}
    atomic_write_json(Path(directory) / META, full)
    return full


def read_meta(directory: str | Path, kind: str | None = None,
              error: type[Exception] = DataError) -> dict[str, Any]:
    """meta.json of a prepared directory, checked (of `kind` when given); problems raise `error`."""
    directory = Path(directory)
    path = directory / META
    hint = f"`{MAKER[kind]}`" if kind else "`miniglm prepare` or `miniglm prepare-sft`"
    if not directory.is_dir():
        raise error(f"{directory}: data directory not found")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{directory}: not a prepared data directory (no meta.json; make one with {hint})") from None
    except (OSError, ValueError) as e:
        raise error(f"{path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        found = meta.get("kind") if isinstance(meta, dict) else None
        raise error(f"{path}: 'kind' is {found!r}, expected 'pretrain' or 'sft' (make one with {hint})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise error(f"{path}: format_version {meta.get('format_version')!r}, this MiniGLM reads version "
                    f"{FORMAT_VERSION} (prepare the data again)")
    if kind is not None and meta["kind"] != kind:
        raise error(f"{directory}: a prepared {meta['kind']!r} directory, but {kind!r} data is needed "
                    f"(check --mode / --data, or make it with `{MAKER[kind]}`)")
    for key in ("vocab_size", "tokenizer_sha256", *(("block_size",) if meta["kind"] == "sft" else ())):
        if key not in meta:
            raise error(f"{path}: missing field '{key}'")
    return meta


def is_prepared(directory: str | Path, kind: str | None = None) -> bool:
    """True if `directory` holds a readable meta.json (of `kind`, when given)."""
    try:
        read_meta(directory, kind)
    except DataError:
        return False
    return True


def load_tokenizer(directory: str | Path, meta: dict[str, Any], error: type[Exception] = DataError) -> Tokenizer:
    """The directory's tokenizer.json, checked against its meta.json."""
    path = Path(directory) / meta.get("tokenizer", TOKENIZER)
    tok = Tokenizer.from_file(path)
    check_tokenizer(meta, tok, Path(directory), error)
    return tok


def check_tokenizer(meta: dict[str, Any], tokenizer: Tokenizer, directory: Path,
                    error: type[Exception] = DataError) -> None:
    """The data must have been tokenized by `tokenizer` (same sha256 and vocabulary)."""
    if meta.get("tokenizer_sha256") != tokenizer.sha256:
        raise error(f"{directory}: data was tokenized with tokenizer {str(meta.get('tokenizer_sha256'))[:12]}, "
                    f"this one is {tokenizer.sha256[:12]} (prepare the data with the same tokenizer.json)")
    if tokenizer.vocab_size != meta["vocab_size"]:
        raise error(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens, but meta.json says "
                    f"vocab_size={meta['vocab_size']}")


# --------------------------------------------------------------------------- token streams (pretrain)


def open_tokens(directory: str | Path, split: str, meta: dict[str, Any],
                error: type[Exception] = DataError) -> np.memmap:
    """`{split}.bin` as a read-only memory map of token ids."""
    path = Path(directory) / f"{split}.bin"
    if not path.is_file():
        raise error(f"{path}: not found")
    try:
        return np.memmap(path, dtype=np.dtype(meta.get("dtype", "uint16")).newbyteorder("<"), mode="r")
    except (TypeError, ValueError) as e:
        raise error(f"{path}: cannot read as {meta.get('dtype')} tokens ({e})") from None


class TokenWriter:
    """Appends documents' token ids to a `.bin` file in the format's dtype (streamed, never held whole)."""

    def __init__(self, path: str | Path, vocab_size: int):
        self.dtype = token_dtype(vocab_size)
        self.file = open(path, "wb")
        self.tokens = 0

    def write(self, ids: list[int]) -> None:
        np.asarray(ids, dtype=self.dtype.newbyteorder("<")).tofile(self.file)
        self.tokens += len(ids)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- rows (SFT)


def write_rows(directory: str | Path, split: str, ids: np.ndarray, mask: np.ndarray) -> None:
    """`{split}_ids.npy` (N, T + 1) and `{split}_mask.npy` (N, T)."""
    if ids.ndim != 2 or mask.shape != (ids.shape[0], ids.shape[1] - 1):
        raise ValueError(f"rows of shape {ids.shape} need a mask of shape {(ids.shape[0], ids.shape[1] - 1)}")
    np.save(Path(directory) / f"{split}_ids.npy", ids, allow_pickle=False)
    np.save(Path(directory) / f"{split}_mask.npy", mask.astype(np.uint8, copy=False), allow_pickle=False)


def open_rows(directory: str | Path, split: str, meta: dict[str, Any],
              error: type[Exception] = DataError) -> tuple[np.ndarray, np.ndarray]:
    """`{split}_ids.npy` (N, T+1) and `{split}_mask.npy` (N, T), memory-mapped, shapes checked (T = block_size)."""
    if split not in SPLITS:
        raise error(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    paths = [Path(directory) / f"{split}_{name}.npy" for name in ("ids", "mask")]
    arrays = []
    for p in paths:
        if not p.is_file():
            raise error(f"{p}: not found (make the directory with `miniglm prepare-sft`)")
        try:
            arrays.append(np.load(p, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as e:
            raise error(f"{p}: not a plain .npy array ({e})") from None
    ids, mask = arrays
    t = meta["block_size"]
    if ids.ndim != 2 or ids.shape[1] != t + 1:
        raise error(f"{paths[0]}: shape {ids.shape}, expected (N, {t + 1}) for block_size={t}")
    if mask.shape != (ids.shape[0], t):
        raise error(f"{paths[1]}: shape {mask.shape}, expected {(ids.shape[0], t)}")
    return ids, mask
