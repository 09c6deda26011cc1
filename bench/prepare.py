"""Benchmark: `miniglm prepare` throughput in MB of text per second on the four novels.

Two runs into a temporary directory: the full stage (read, train a tokenizer on the train
chapters, encode, write), then the same inputs with that tokenizer given (read, encode, write),
which isolates the encoder. Run from the repository root:  python bench/prepare.py [--vocab-size N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from miniglm.config import PrepareConfig
from miniglm.data.prepare import prepare

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pretrain"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="directory of .txt files (default: the four novels)")
    ap.add_argument("--vocab-size", type=int, default=16000, help="vocabulary size (default: 16000)")
    args = ap.parse_args()
    cfg = PrepareConfig(vocab_size=args.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        full = prepare([args.data], Path(tmp) / "full", cfg, progress=False)
        reuse = prepare([args.data], Path(tmp) / "reuse", cfg, tokenizer=full.out / "tokenizer.json", progress=False)
    mb = full.input_bytes / 1e6
    m = full.meta
    print(f"input: {args.data}: {mb:.2f} MB, {m['train_chars'] + m['val_chars']:,} chars; "
          f"vocab {m['vocab_size']:,}; {m['train_tokens'] + m['val_tokens']:,} tokens; {os.cpu_count()} CPU cores")
    print(f"prepare, training the tokenizer : {full.seconds:6.2f} s  {mb / full.seconds:6.2f} MB/s")
    print(f"prepare, given the tokenizer    : {reuse.seconds:6.2f} s  {mb / reuse.seconds:6.2f} MB/s "
          f"({full.seconds / reuse.seconds:.1f}x faster)")


if __name__ == "__main__":
    main()
