"""Benchmark: chars/token and training time of the byte-level BPE at several vocabulary sizes.

Trains on the train chapters of the four novels (../shared/data/pretrain, the same document split
`miniglm prepare` makes with its default seed) and measures chars/token on those chapters and on
the held-out ones. Run from the repository root:  python bench/tokenizer.py [--sizes 8000,16000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from miniglm.config import PrepareConfig
from miniglm.data.prepare import Corpus, choose_val, encode_batches, train_corpus_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pretrain"


def chars_per_token(tok, docs: list[str]) -> tuple[float, float]:
    """(chars/token, seconds to encode)."""
    t0 = time.perf_counter()
    tokens = sum(len(ids) for _, ids, _ in encode_batches(tok, docs, 256))
    return sum(map(len, docs)) / tokens, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="directory of .txt files (default: the four novels)")
    ap.add_argument("--sizes", default="8000,16000,32000,50000", help="comma-separated vocabulary sizes")
    args = ap.parse_args()
    cfg = PrepareConfig()
    corpus = Corpus([args.data], cfg.split_on)
    val = choose_val(len(corpus), cfg.val_fraction, cfg.seed)
    docs = list(corpus.documents())
    train = [d for i, d in enumerate(docs) if i not in val]
    held = [d for i, d in enumerate(docs) if i in val]
    train_chars = sum(map(len, train))
    print(f"corpus: {args.data}: {len(docs)} chapters, {corpus.chars:,} chars "
          f"({len(train)} train chapters, {len(held)} held out, {sum(map(len, held)):,} chars)")
    print(f"{'vocab':>7} {'actual':>7} {'train s':>8} {'c/t train':>10} {'c/t held-out':>13} "
          f"{'vs 8k':>6} {'encode MB/s':>12}")
    first = None
    for size in (int(s) for s in args.sizes.split(",")):
        t0 = time.perf_counter()
        tok = train_corpus_tokenizer(iter(train), len(train), train_chars, size, cfg.min_frequency, progress=False)
        seconds = time.perf_counter() - t0
        cpt_train, enc_s = chars_per_token(tok, train)
        cpt_held, _ = chars_per_token(tok, held)
        first = first or cpt_held
        mb = sum(len(d.encode("utf-8")) for d in train) / 1e6
        print(f"{size:>7} {tok.vocab_size:>7} {seconds:>8.1f} {cpt_train:>10.3f} {cpt_held:>13.3f} "
              f"{cpt_held / first:>6.2f} {mb / enc_s:>12.1f}")
    print("peers: a character-level vocabulary gives 1.000 chars/token; raw UTF-8 bytes give "
          f"{corpus.chars / sum(len(d.encode('utf-8')) for d in docs):.3f}")


if __name__ == "__main__":
    main()
