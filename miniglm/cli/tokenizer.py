"""`miniglm tokenizer train INPUT... --out tokenizer.json`: train a byte-level BPE on text files."""

from __future__ import annotations

import time
from pathlib import Path

from miniglm.cli.common import Parser
from miniglm.config import PrepareConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.data.prepare import BASE_VOCAB, CHARS_PER_MERGE, Corpus, encode_batches, train_corpus_tokenizer


def build_parser() -> Parser:
    p = Parser(prog="miniglm tokenizer", description="Tokenizer tools (the tokenizer is also trained by `miniglm prepare`).")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser,
                         help="what to do (miniglm tokenizer ACTION --help for its options)")
    t = sub.add_parser(
        "train", help="train a byte-level BPE tokenizer and report chars/token on its training text",
        description="Train a byte-level BPE (special tokens <|endoftext|>=0, <|pad|>=1) on all documents of\n"
                    "the inputs (.txt, .jsonl {\"text\"} or directories) and save it as tokenizer.json.\n"
                    f"The vocabulary is capped at {BASE_VOCAB} + training chars // {CHARS_PER_MERGE} for tiny corpora.")
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="text/JSONL files or directories")
    t.add_argument("--out", default="tokenizer.json", metavar="FILE", help="where to save (default: tokenizer.json)")
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_arguments(t, PrepareConfig, skip=("val_fraction", "seed"))
    return p


def train(args) -> int:
    cfg = load_config(PrepareConfig, overrides=overrides_from_args(args))
    t0 = time.perf_counter()
    corpus = Corpus(args.inputs, cfg.split_on)
    progress = not args.no_progress
    tok = train_corpus_tokenizer(corpus.documents(), len(corpus), corpus.chars, cfg.vocab_size,
                                 cfg.min_frequency, progress)
    seconds = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    path = tok.save(args.out)
    tokens = sum(len(ids) for _, ids, _ in encode_batches(tok, corpus.documents(), cfg.encode_batch_size))
    print(f"trained on {len(corpus)} documents ({corpus.chars:,} chars) in {seconds:.1f}s; "
          f"vocab {tok.vocab_size:,} (requested {cfg.vocab_size:,})")
    print(f"  {corpus.chars / max(tokens, 1):.3f} chars/token on the training text ({tokens:,} tokens)")
    print(f"  wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return train(args)
