"""`miniglm arena`: two models side by side in the browser, blind votes, and the leaderboard.

    miniglm arena mine=runs/sft theirs=http://192.168.1.7:8000 --host 0.0.0.0 --port 7870
    miniglm arena leaderboard arena_votes.jsonl --out arena_report/

A contestant is [NAME=]RUN_OR_CHECKPOINT (generated in this process) or
[NAME=]URL[,model=ID][,key-env=VAR][,key-file=PATH] (any OpenAI-compatible server: `miniglm serve`,
llama.cpp, vLLM). The page has three tabs: Battle (two random contestants, names hidden until the
vote), Side by side (pick the two by name; logged as named votes) and Leaderboard. Every vote is one
line appended to --votes (flushed and fsynced).

`leaderboard` prints Bradley–Terry ratings on the Elo scale (mean 1000) with 95% bootstrap intervals
(seeded), ranks, online Elo, battles and win rates; with --out it also writes leaderboard.json,
leaderboard.md, win_rate.png and battles.png. Only blind (anonymous) votes count unless
--include-named. A comparison graph in disconnected groups is reported, each group rated on its own.
"""

from __future__ import annotations

import socket
import sys
import time

from miniglm.cli.common import Parser
from miniglm.config import SampleConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.errors import UserError

DEFAULT_VOTES = "arena_votes.jsonl"


def build_parser() -> Parser:
    p = Parser(prog="miniglm arena", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("contestants", nargs="+", metavar="CONTESTANT",
                   help="NAME=RUN_DIR or NAME=URL[,model=ID][,key-env=VAR][,key-file=PATH]; two or more")
    p.add_argument("--votes", default=DEFAULT_VOTES, metavar="FILE", help=f"votes log to append to (default {DEFAULT_VOTES})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 to let the LAN in (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7870, help="port (default 7870)")
    p.add_argument("--pairing", choices=["balanced", "uniform"], default="balanced",
                   help="balanced: pairs with fewer votes come up more often (default); uniform: all pairs alike")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a remote contestant may go silent (default 30)")
    p.add_argument("--answer-timeout", type=float, default=120.0, help="seconds for a whole remote answer (default 120)")
    p.add_argument("--seed", type=int, default=None, help="seed for pair draws and sampling seeds (default: random)")
    add_config_arguments(p, SampleConfig, skip=("seed",))
    return p


def build_leaderboard_parser() -> Parser:
    p = Parser(prog="miniglm arena leaderboard", description="ratings, intervals and heatmaps from a votes log")
    p.add_argument("votes", metavar="VOTES.jsonl", help="votes log written by the arena (or `miniglm judge`)")
    p.add_argument("--out", metavar="DIR", help="also write leaderboard.json, leaderboard.md, win_rate.png, battles.png")
    p.add_argument("--include-named", action="store_true",
                   help="also count named (side-by-side) votes and battles whose answers named a model")
    p.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds for the 95%% intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--anchor", metavar="MODEL", help="pin this model at 1000 instead of the mean")
    return p


def leaderboard_main(argv: list[str]) -> int:
    args = build_leaderboard_parser().parse_args(argv)
    from miniglm.serve.arena.leaderboard import build_leaderboard, format_table, write_leaderboard
    from miniglm.serve.arena.votes import read_votes

    if args.rounds < 0:
        raise UserError("--rounds must be >= 0")
    read = read_votes(args.votes)
    for warning in read.warnings:
        print(f"miniglm arena leaderboard: warning: {warning}", file=sys.stderr)
    if args.anchor and not any(args.anchor in (v["left"], v["right"]) for v in read.votes):
        raise UserError(f"--anchor {args.anchor}: no vote involves this model")
    board = build_leaderboard(read.votes, include_named=args.include_named, rounds=args.rounds, seed=args.seed,
                              anchor=args.anchor)
    print(format_table(board))
    if args.out:
        if args.out.startswith("-"):
            raise UserError(f"--out {args.out}: expected a directory")
        written = write_leaderboard(board, args.out)
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def lan_address() -> str:
    """This machine's address on the LAN (the one its default route uses); nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            return s.getsockname()[0]
        except OSError:
            return "THIS-MACHINE"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["leaderboard"]:
        return leaderboard_main(argv[1:])
    args = build_parser().parse_args(argv)
    cfg = load_config(SampleConfig, overrides=overrides_from_args(args))
    from miniglm.extras import require
    from miniglm.serve.arena.battle import Arena
    from miniglm.serve.arena.contestants import Settings, load_contestants, parse_contestant
    from miniglm.serve.arena.votes import VoteLog

    if len(args.contestants) < 2:
        raise UserError("an arena needs at least two contestants")
    for spec in args.contestants:  # the quick checks first, before slow imports and loading
        parse_contestant(spec)
    log = VoteLog(args.votes)
    require("gradio", "serve")
    require("httpx", "serve")
    from miniglm.serve.arena.page import build_page, launch

    contestants = load_contestants(args.contestants, cfg, timeout=args.timeout, answer_timeout=args.answer_timeout)
    arena = Arena(contestants, log, pairing=args.pairing, seed=args.seed)
    page = build_page(arena, Settings(cfg.temperature, cfg.top_p, cfg.max_new_tokens))
    try:
        launch(page, args.host, args.port)
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e}") from None
    try:
        for c in contestants:
            print(f"  {c.describe()}")
        where = lan_address() if args.host in ("0.0.0.0", "::") else args.host
        print(f"arena with {len(contestants)} contestants on http://{where}:{args.port}  (votes -> {args.votes}; "
              "Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)  # the server runs in its own threads until Ctrl-C
    finally:
        page.close()


if __name__ == "__main__":
    sys.exit(main())
