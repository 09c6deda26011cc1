"""`miniglm judge`: grade answers against references with an LLM judge, and compare two checkpoints.

    export MINIGLM_JUDGE_KEY=...        # the key comes from the environment or a file, never a flag value
    miniglm judge runs/sft --qa qa.jsonl --judge-url https://open.bigmodel.cn/api/paas/v4 --judge-model glm-4-flash
    miniglm judge base=runs/base sft=runs/sft --qa qa.jsonl --judge-url http://127.0.0.1:8080/v1 \\
        --judge-model qwen --votes arena/votes.jsonl          # pairwise too; verdicts as arena votes
    miniglm judge --report runs/sft/eval --judge-url ... --judge-model ...   # judge a `miniglm eval` report

The judge is any OpenAI-compatible chat endpoint (GLM, OpenAI, llama.cpp/vLLM, `miniglm serve`).
Each answer is graded 1-10 on 事实正确性, 满足用户需求, 逻辑连贯性, 完备性 and overall, against
the reference (AlignBench-style prompt, temperature 0); with two runs each pair of answers is also
judged in both orders. Replies are cached (--cache), so a rerun asks nothing again. With runs,
answers are generated as `miniglm eval` and `miniglm chat` generate them (seeded sampling, so a
rerun gives the same answers; --temperature 0 for greedy) and the report goes to RUN_DIR/judge/; with
--report, the judge's results are added to that report in place (or written to --out).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from miniglm.cli.common import Parser
from miniglm.config import SampleConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.errors import UserError

DEFAULT_KEY_ENV = "MINIGLM_JUDGE_KEY"
_NAMED = re.compile(r"^([A-Za-z0-9_.\-]+)=(.+)$")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "miniglm" / "judge"


def build_parser() -> Parser:
    p = Parser(prog="miniglm judge", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="*", metavar="[NAME=]RUN_DIR",
                   help="run or checkpoint directory whose answers to grade (NAME= sets its name in the "
                        "report and votes); give two to compare")
    p.add_argument("--report", metavar="FILE",
                   help="judge the answers of a `miniglm eval --qa` report.json (or its directory) instead")
    p.add_argument("--qa", metavar="FILE", help='Q&A JSONL with RUN_DIRs: {"question", "answer"} per line')
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N Q&A items")
    j = p.add_argument_group("judge")
    j.add_argument("--judge-url", required=True, metavar="URL",
                   help="OpenAI-compatible base URL (…/v1) or full …/chat/completions URL")
    j.add_argument("--judge-model", required=True, metavar="NAME", help="the judge's model id on that server")
    j.add_argument("--judge-key-env", metavar="VAR",
                   help=f"environment variable holding the API key (default: {DEFAULT_KEY_ENV}, if set)")
    j.add_argument("--judge-key-file", metavar="FILE", help="file holding the API key (first line)")
    j.add_argument("--judge-max-tokens", type=int, default=1024, metavar="N",
                   help="max_tokens of each judge reply (default: 1024)")
    j.add_argument("--judge-timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for one reply (default: 120)")
    j.add_argument("--judge-retries", type=int, default=4, metavar="N",
                   help="retries after a timeout, 429 or 5xx, with exponential backoff (default: 4)")
    j.add_argument("--judge-concurrency", type=int, default=4, metavar="N",
                   help="requests in flight at once (default: 4)")
    j.add_argument("--cache", metavar="DIR", help=f"reply cache (default: {default_cache()})")
    j.add_argument("--no-cache", action="store_true", help="neither read nor write the reply cache")
    j.add_argument("--bootstrap-seed", type=int, default=0, metavar="N",
                   help="seed of the bootstrap intervals (default: 0)")
    p.add_argument("--votes", metavar="FILE", help="append the pairwise verdicts to this arena votes log")
    p.add_argument("--out", metavar="DIR",
                   help="where report.json/report.md go (default: RUN_DIR/judge, or the --report's directory)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="questions per generation batch (default: 8)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="which checkpoint of a run directory (default: best)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_arguments(p, SampleConfig)
    return p


def read_key(env: str | None, key_file: str | None) -> str | None:
    """The API key from --judge-key-file, the named variable, or MINIGLM_JUDGE_KEY; None for no key."""
    if env and key_file:
        raise UserError("give --judge-key-env or --judge-key-file, not both")
    if key_file:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as e:
            raise UserError(f"{key_file}: cannot read the judge key ({e.strerror})") from None
        if not lines or not lines[0].strip():
            raise UserError(f"{key_file}: the judge key file is empty")
        return lines[0].strip()
    if env:
        if not os.environ.get(env, "").strip():
            raise UserError(f"environment variable {env} (--judge-key-env) is not set")
        return os.environ[env].strip()
    return os.environ.get(DEFAULT_KEY_ENV, "").strip() or None


def split_named(arg: str) -> tuple[str | None, str]:
    """"sft=runs/sft" -> ("sft", "runs/sft"); a plain path (even one holding "=") -> (None, path)."""
    m = _NAMED.match(arg)
    if m is None or Path(arg).exists():
        return None, arg
    return m.group(1), m.group(2)


def check_args(args) -> None:
    if args.report and (args.runs or args.qa):
        raise UserError("give RUN_DIRs with --qa, or --report, not both")
    if not args.report and not args.runs:
        raise UserError("nothing to judge: give RUN_DIR [RUN_DIR2] with --qa FILE, or --report FILE")
    if args.runs and not args.qa:
        raise UserError("--qa FILE is needed to answer questions with RUN_DIRs")
    if len(args.runs) > 2:
        raise UserError(f"at most two checkpoints can be compared, got {len(args.runs)}")
    if args.votes and args.runs and len(args.runs) != 2:
        raise UserError("--votes needs two runs to compare")
    for flag in ("limit", "batch_size", "judge_max_tokens", "judge_concurrency"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be > 0, got {value}")
    if args.judge_timeout <= 0 or args.judge_retries < 0:
        raise UserError("--judge-timeout must be > 0 and --judge-retries >= 0")


def make_client(args):
    from miniglm.evaluate.judge_client import Endpoint, JudgeClient, ReplyCache

    key = read_key(args.judge_key_env, args.judge_key_file)
    endpoint = Endpoint(args.judge_url, args.judge_model, key=key, max_tokens=args.judge_max_tokens,
                        timeout=args.judge_timeout, retries=args.judge_retries, concurrency=args.judge_concurrency)
    host = urlsplit(endpoint.url).hostname or ""
    if key and endpoint.url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: the judge key is sent unencrypted to {host} (http://, not https://)", file=sys.stderr)
    cache = ReplyCache(None if args.no_cache else Path(args.cache) if args.cache else default_cache())
    return JudgeClient(endpoint, cache, progress=not args.no_progress)


def answered_report(args) -> tuple[dict, list[list[dict]], Path]:
    """(report, rows per run, output dir): answers generated by the runs, or read from --report."""
    from miniglm.evaluate import judge
    from miniglm.evaluate import report as rep
    from miniglm.evaluate.qa import load_qa

    if args.report:
        report = rep.load_report(args.report)
        path = Path(args.report)
        return report, judge.report_rows(report), Path(args.out) if args.out else (path if path.is_dir() else path.parent)
    cfg = load_config(SampleConfig, overrides=overrides_from_args(args))
    items = load_qa(args.qa, args.limit)
    entries, rows = [], []
    for arg in args.runs:
        name, run = split_named(arg)
        print(f"answering {len(items)} questions with {run} ...", file=sys.stderr)
        entry, r = judge.answer_questions(run, items, cfg, args.batch_size, args.checkpoint, name,
                                          progress=not args.no_progress)
        entries.append(entry)
        rows.append(r)
    settings = {"sample": vars(cfg), "batch_size": args.batch_size, "checkpoint": args.checkpoint,
                "judge_qa_file": args.qa, "limit": args.limit}
    for e in entries:
        e["summary"] = rep.summary_metrics(e)
    out = Path(args.out) if args.out else Path(split_named(args.runs[0])[1]) / "judge"
    return rep.build_report(entries, settings), rows, out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    from miniglm.evaluate import judge
    from miniglm.evaluate import report as rep

    client = make_client(args)  # a bad URL or key file fails here, before answers are generated
    report, rows, out = answered_report(args)
    names = judge.contestant_names(report["runs"])
    if args.votes and len(rows) != 2:
        raise UserError("--votes needs two runs to compare (the report has one)")
    graded = [judge.grade_answers(client, r, args.bootstrap_seed, f"grading {n}") for n, r in zip(names, rows)]
    pairwise = (judge.compare_answers(client, rows[0], rows[1], (names[0], names[1]), args.bootstrap_seed)
                if len(rows) == 2 else None)
    judge.check_answered(graded, pairwise, client.endpoint.url)
    judge.attach(report, graded, pairwise, judge.judge_settings(client.endpoint, args.bootstrap_seed), client.stats)
    js, md = rep.write_report(report, out)
    print("\n".join(judge.console_lines(report)))
    if args.votes and pairwise is not None:
        votes = judge.pair_votes(pairwise, client.endpoint)
        judge.write_votes(args.votes, votes)
        print(f"appended {len(votes)} judge votes to {args.votes}")
    print(f"wrote {js} and {md}")
    return 0
