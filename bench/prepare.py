"""Benchmark: `miniglm prepare` throughput (MB/s) and peak memory (RSS) on a large synthetic corpus.

The corpus is the four novels repeated until it reaches --mb megabytes (default 1000, ~1 GB), split
into files of --file-mb. Two runs, each in its own process so its peak RSS is its own:
  1. given an existing tokenizer (read, encode, write: the streaming path alone);
  2. training the tokenizer on a sample of --sample-mb (as `--tokenizer-sample-mb`), then encoding.
The peer is the same two runs on a corpus --small-mb in size: a streaming prepare's peak RSS should
barely move while the input grows --mb / --small-mb times. Run from the repository root, on an
otherwise idle machine (`nice` it if others share it):
    python bench/prepare.py --mb 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOVELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pretrain"

CHILD = """
import json, resource, sys, time
from miniglm.config import PrepareConfig
from miniglm.data.prepare import prepare
inputs, out, tokenizer, sample_mb, vocab = sys.argv[1], sys.argv[2], sys.argv[3] or None, float(sys.argv[4]), int(sys.argv[5])
r = prepare([inputs], out, PrepareConfig(vocab_size=vocab, tokenizer_sample_mb=sample_mb), tokenizer=tokenizer,
            progress=False)
print(json.dumps({"seconds": r.seconds, "mb": r.input_bytes / 1e6,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tokens": r.meta["train_tokens"] + r.meta["val_tokens"]}))
"""


def build_corpus(out: Path, megabytes: float, file_mb: float) -> None:
    """The novels, repeated, into files of about `file_mb` MB (chapter headings and all)."""
    novels = [p.read_bytes() for p in sorted(NOVELS.glob("*.txt"))]
    out.mkdir(parents=True)
    target, written, n = megabytes * 1e6, 0, 0
    while written < target:
        with open(out / f"part{n:04d}.txt", "wb") as f:
            size = 0
            while size < file_mb * 1e6 and written + size < target:
                novel = novels[(n + size // 1000) % len(novels)]  # whole novels, in a shifting order
                f.write(novel)
                size += len(novel)
        written, n = written + size, n + 1


def run(inputs: Path, out: Path, tokenizer: Path | None, sample_mb: float, vocab: int) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(inputs), str(out), str(tokenizer or ""), str(sample_mb), str(vocab)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(tmp: Path, megabytes: float, args) -> list[dict]:
    """[given tokenizer] with --tokenizer, else [given tokenizer, trained on a sample]."""
    corpus = tmp / f"corpus{megabytes:g}"
    build_corpus(corpus, megabytes, args.file_mb)
    if args.tokenizer:
        return [run(corpus, tmp / f"given{megabytes:g}", Path(args.tokenizer), 0, args.vocab_size)]
    trained = run(corpus, tmp / f"trained{megabytes:g}", None, args.sample_mb, args.vocab_size)
    given = run(corpus, tmp / f"given{megabytes:g}", tmp / f"trained{megabytes:g}" / "tokenizer.json", 0, args.vocab_size)
    shutil.rmtree(corpus)
    return [given, trained]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=1000, help="corpus size in MB (default: 1000)")
    ap.add_argument("--small-mb", type=float, default=20, help="the peer corpus size in MB (default: 20)")
    ap.add_argument("--file-mb", type=float, default=100, help="MB per corpus file (default: 100)")
    ap.add_argument("--sample-mb", type=float, default=10, help="tokenizer training sample in MB (default: 10)")
    ap.add_argument("--vocab-size", type=int, default=16000, help="vocabulary size (default: 16000)")
    ap.add_argument("--tokenizer", default=None,
                    help="measure only the given-tokenizer run, with this tokenizer.json (skips training)")
    ap.add_argument("--tmp", default=None, help="where the corpus and outputs go (default: a temporary directory)")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPU cores, load average {load:.2f} at start; corpus: the novels repeated; "
          + (f"given tokenizer {args.tokenizer}" if args.tokenizer else
             f"tokenizer sample {args.sample_mb:g} MB, vocab {args.vocab_size:,}"), flush=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        rows = {}
        for mb in (args.small_mb, args.mb):
            rows[mb] = measure(Path(tmp), mb, args)
            for name, r in zip(("given tokenizer", "trained on sample"), rows[mb]):
                print(f"{r['mb']:8.1f} MB  {name:18s}: {r['seconds']:7.1f} s  {r['mb'] / r['seconds']:6.2f} MB/s  "
                      f"peak RSS {r['rss_mb']:7.0f} MB  {r['tokens']:,} tokens", flush=True)
    ratios = [f"x{big['rss_mb'] / small['rss_mb']:.2f} ({name})" for name, small, big in
              zip(("given tokenizer", "sample-trained"), rows[args.small_mb], rows[args.mb])]
    print(f"input x{args.mb / args.small_mb:.0f}: peak RSS {', '.join(ratios)}; "
          f"total {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
