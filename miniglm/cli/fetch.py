"""`miniglm fetch NAME|URL|PATH... [--out data/raw]`: download or convert a corpus to clean UTF-8 text."""

from __future__ import annotations

from miniglm.cli.common import Parser
from miniglm.data.fetch import DEFAULT_OUT, MAX_BYTES, MIRROR_ENV, SOURCES, FetchedFile, fetch


def build_parser() -> Parser:
    p = Parser(
        prog="miniglm fetch",
        description="Download a named corpus, any URL, or convert local files into clean UTF-8 text under\n"
                    "<out>/<name>/*.txt (UTF-8/GB18030 detected; HTML remnants, CR/CRLF line endings and\n"
                    "mojibake runs of ??? removed). Downloads resume after a dropped connection.\n\n"
                    "named sources:\n" + "\n".join(f"  {s.name:<12} {s.description}" for s in SOURCES.values()),
        epilog="offline? convert local files instead: miniglm fetch path/to/book.txt, "
               "or skip fetch: miniglm prepare path/to/*.txt --out data/prepared",
    )
    p.add_argument("targets", nargs="*", metavar="NAME|URL|PATH",
                   help="a named source, an http(s) URL, a local .txt file or a directory of .txt files")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"root output directory (default: {DEFAULT_OUT})")
    p.add_argument("--name", default="custom",
                   help="subdirectory for URL and local-path targets (named sources use their own name; default: custom)")
    p.add_argument("--mirror", default=None, metavar="URL",
                   help=f"base URL replacing a named source's (a '{{name}}' in it becomes the source name; "
                        f"default: ${MIRROR_ENV} if set)")
    p.add_argument("--force", action="store_true", help="fetch again files that already exist")
    p.add_argument("--retries", type=int, default=4, help="retries after a dropped connection or 5xx (default: 4)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait on a silent connection (default: 30)")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES, metavar="N",
                   help=f"refuse a file larger than N bytes (downloads stop there; default {MAX_BYTES:,}; 0 = no limit)")
    p.add_argument("--no-progress", action="store_true", help="hide the download progress bars")
    p.add_argument("--list", action="store_true", help="list the named sources and their files, then exit")
    return p


def describe(f: FetchedFile) -> str:
    if f.skipped:
        return f"{f.path}: exists, skipped (use --force to fetch again)"
    s = f.cleaned
    removed = "" if s is None else (f"; removed {s.html_tags} HTML tags, {s.mojibake_runs} mojibake runs, "
                                    f"replaced {s.html_entities} entities")
    return f"{f.path}: {f.chars:,} chars from {f.encoding} ({f.origin}){removed}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for src in SOURCES.values():
            print(f"{src.name}: {src.description}")
            for rf in src.files:
                print(f"  {rf.filename:<16} {src.base_url}{rf.path}")
        return 0
    if not args.targets:
        parser.error("give at least one NAME, URL or PATH (see --list for named sources)")
    if args.retries < 0 or args.timeout <= 0 or args.max_bytes < 0:
        parser.error("--retries and --max-bytes must be >= 0 and --timeout > 0")
    files = fetch(args.targets, args.out, name=args.name, mirror=args.mirror, force=args.force,
                  retries=args.retries, timeout=args.timeout, progress=not args.no_progress,
                  max_bytes=args.max_bytes)
    for f in files:
        print(describe(f))
    return 0
