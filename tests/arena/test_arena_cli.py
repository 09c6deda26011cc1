"""`miniglm arena` and `miniglm arena leaderboard` from the command line."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from test_arena_votes import record

from miniglm.__main__ import main
from miniglm.serve.arena.votes import VoteLog


def write_votes(path, outcomes: list[tuple[str, str, str]], **changes) -> None:
    VoteLog(path).extend([record(i, left=a, right=b, vote=v, **changes) for i, (a, b, v) in enumerate(outcomes)])


@pytest.fixture
def votes(tmp_path):
    path = tmp_path / "votes.jsonl"
    # strong > mid > weak, with a tie and a both-bad; then two named votes that reverse the order
    write_votes(path, [("strong", "mid", "left")] * 6 + [("mid", "weak", "left")] * 6 + [("strong", "weak", "left")] * 3
                + [("weak", "strong", "right"), ("mid", "weak", "tie"), ("strong", "mid", "both_bad")])
    VoteLog(path).extend([record(50 + i, left="weak", right="strong", vote="left", mode="named", anonymous=False)
                          for i in range(2)])
    return path


def table_lines(out: str) -> list[list[str]]:
    start = out.index("rank  model")
    return [line.split() for line in out[start:].splitlines()[1:] if line.strip()]


def test_leaderboard_prints_the_table_and_writes_figures(votes, tmp_path, capsys):
    out_dir = tmp_path / "report"
    assert main(["arena", "leaderboard", str(votes), "--out", str(out_dir), "--rounds", "200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("18 votes counted (18 anonymous); 2 not counted")
    rows = table_lines(out)
    assert [r[1] for r in rows[:3]] == ["strong", "mid", "weak"] and rows[0][0] == "1"
    assert rows[0][5:8] == ["11", "10-1-0", "95%"]  # battles, W-T-L, win rate with ties as half
    data = json.loads((out_dir / "leaderboard.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["strong", "mid", "weak"] and data["baseline"] == 1000
    assert np.mean([r["rating"] for r in data["rows"]]) == pytest.approx(1000)
    assert data["battles"]["strong"] == {"mid": 7, "weak": 4}
    for png in ("win_rate.png", "battles.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 | strong |" in (out_dir / "leaderboard.md").read_text()
    assert f"wrote {out_dir / 'leaderboard.json'}" in out


def test_include_named_counts_the_named_votes_too(votes, capsys):
    assert main(["arena", "leaderboard", str(votes), "--include-named", "--rounds", "50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("20 votes counted (18 anonymous, 2 named); 0 not counted")
    weak = next(r for r in table_lines(out) if r[1] == "weak")
    assert weak[5:7] == ["13", "2-1-10"]  # 11 blind battles and the 2 named wins


def test_same_seed_same_numbers_and_anchor(votes, capsys):
    argv = ["arena", "leaderboard", str(votes), "--rounds", "100", "--seed", "3"]
    assert main(argv) == 0 and main(argv) == 0
    first, second = capsys.readouterr().out.split("18 votes counted")[1:]
    assert first == second
    assert main([*argv, "--anchor", "weak"]) == 0
    weak = next(r for r in table_lines(capsys.readouterr().out) if r[1] == "weak")
    assert weak[2:4] == ["1000", "1000..1000"]


def test_bad_input_is_one_line_exit_2(votes, tmp_path, capsys):
    cases = [
        (["arena", "leaderboard", str(tmp_path / "none.jsonl")], "no such votes file"),
        (["arena", "leaderboard", str(votes), "--anchor", "nobody"], "--anchor nobody: no vote involves this model"),
        (["arena", "leaderboard", str(votes), "--rounds", "-1"], "--rounds must be >= 0"),
        (["arena", "only=http://127.0.0.1:9"], "an arena needs at least two contestants"),
        (["arena", "a=http://127.0.0.1:9", "b=http://127.0.0.1:9,colour=red"], "unknown option 'colour=red'"),
        (["arena", "a=http://127.0.0.1:9", "b=" + str(tmp_path / "missing")], "not found"),
        (["arena", "a=http://127.0.0.1:9", "b=http://127.0.0.1:9", "--votes", str(tmp_path)], "not a file"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("miniglm arena") and message in err and err.count("\n") == 1, err


def test_torn_log_warns_and_empty_log_says_so(tmp_path, capsys):
    path = tmp_path / "votes.jsonl"
    path.touch()
    assert main(["arena", "leaderboard", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith("no battles to rate yet")
    write_votes(path, [("a", "b", "left")])
    with open(path, "a") as f:
        f.write('{"ts": "2025')
    assert main(["arena", "leaderboard", str(path), "--rounds", "10"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"miniglm arena leaderboard: warning: {path}:2: skipped a torn last line (left by a crash mid-write?)\n"
    assert captured.out.startswith("1 votes counted")


@pytest.mark.parametrize("argv", [["arena"], ["arena", "leaderboard"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: miniglm {' '.join(argv)}")
    flags = ["--votes", "--host", "--port", "--pairing", "--timeout", "--temperature"] if argv == ["arena"] else [
        "--out", "--include-named", "--rounds", "--seed", "--anchor"]
    assert all(flag in out for flag in flags)


def test_a_taken_port_is_one_line_exit_2(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["arena", "a=http://127.0.0.1:9", "b=http://127.0.0.1:9", "--port", str(port),
                "--votes", str(tmp_path / "v.jsonl")]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"miniglm arena: error: cannot serve on 127.0.0.1:{port}") and err.count("\n") == 1
