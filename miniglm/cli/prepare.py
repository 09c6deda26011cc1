"""`miniglm prepare INPUT... --out DIR`: text -> tokenizer.json + train.bin/val.bin + meta.json."""

from __future__ import annotations

from miniglm.cli.common import Parser
from miniglm.config import PrepareConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.data.prepare import prepare


def build_parser() -> Parser:
    p = Parser(
        prog="miniglm prepare",
        description="Turn UTF-8 text into pretraining token files. INPUT: .txt files, .jsonl files of\n"
                    '{"text": ...} records, or directories (searched recursively for *.txt and *.jsonl).\n'
                    "A .txt file is split into documents by --split-on (chapter: a line like 第一回/第1章\n"
                    "starts a document; a file with no such heading falls back to paragraphs); whole\n"
                    "documents are held out for validation. The tokenizer is trained on the train\n"
                    "documents only, unless --tokenizer gives one.",
        epilog="example: miniglm prepare data/raw/sidamingzhu --out data/prepared --vocab-size 16000",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text/JSONL files or directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--tokenizer", default=None, metavar="FILE",
                   help="use this tokenizer.json (or directory holding one) instead of training one")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file (or preset name) with PrepareConfig fields at top level or in [prepare]")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even if it holds another kind of directory (a run, SFT data)")
    add_config_arguments(p, PrepareConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(PrepareConfig, args.config, overrides_from_args(args), section="prepare")
    result = prepare(args.inputs, args.out, cfg, tokenizer=args.tokenizer, progress=not args.no_progress,
                     overwrite=args.overwrite)
    m = result.meta
    mb = result.input_bytes / 1e6
    print(f"prepared {m['train_documents'] + m['val_documents']} documents from {len(m['sources'])} files "
          f"({m['train_chars'] + m['val_chars']:,} chars, {mb:.1f} MB) in {result.seconds:.1f}s "
          f"({mb / max(result.seconds, 1e-9):.2f} MB/s)")
    print(f"  train: {m['train_tokens']:,} tokens, {m['train_documents']} documents; "
          f"val: {m['val_tokens']:,} tokens, {m['val_documents']} documents")
    print(f"  vocab {m['vocab_size']:,} ({m['dtype']}), {m['chars_per_token']:.3f} chars/token")
    if cfg.tokenizer_sample_mb and m.get("tokenizer_trained_on"):
        t = m["tokenizer_trained_on"]
        print(f"  tokenizer trained on a sample: {t['documents']} train documents, {t['chars']:,} chars")
    print("  wrote " + ", ".join(str(f) for f in result.files))
    return 0
