"""The votes log: schema, append + fsync, the tolerant reader, a writer killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from miniglm.serve.arena.votes import VoteLog, VotesError, make_vote, names_mentioned, read_votes


def record(i: int = 0, **changes) -> dict:
    fields = dict(session="s1", mode="anonymous", left="alice", right="bob", vote="left",
                  conversation=[{"role": "user", "content": "什么是长江？"}],
                  answers={"left": "长江是中国最长的河流。", "right": "不知道。"},
                  settings={"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 64, "seed": i}, anonymous=True)
    return make_vote(**(fields | changes))


def test_append_and_read_back(tmp_path):
    log = VoteLog(tmp_path / "sub" / "votes.jsonl")
    log.append(record(0))
    log.extend([record(1, vote="tie"), record(2, mode="judge")])
    text = log.path.read_text(encoding="utf-8")
    assert text.count("\n") == 3 and "长江是中国最长的河流" in text  # one line a vote, Chinese kept readable
    read = read_votes(log.path)
    assert read.warnings == [] and [v["settings"]["seed"] for v in read.votes] == [0, 1, 2]
    assert read.votes[0] == record(0) | {"ts": read.votes[0]["ts"]}
    assert read.votes[0]["ts"].endswith("+00:00")


@pytest.mark.parametrize("changes, problem", [
    ({"vote": "A"}, '"vote" must be one of left, right, tie, both_bad'),
    ({"right": "alice"}, "are the same contestant"),
    ({"mode": "named"}, 'a "named" vote cannot be anonymous'),
    ({"mode": "crowd"}, '"mode" must be one of'),
    ({"answers": {"left": "x"}}, '"answers" must hold "left" and "right"'),
    ({"conversation": [{"role": "user"}]}, '"conversation" must be a list'),
    ({"earlier_answers": {"left": "x"}}, '"earlier_answers" must hold'),
])
def test_bad_records_are_refused(changes, problem):
    with pytest.raises(VotesError, match=problem.replace("(", r"\(")):
        record(**changes)


def test_torn_last_line_is_skipped_then_sealed_and_nothing_earlier_rewritten(tmp_path):
    path = tmp_path / "votes.jsonl"
    VoteLog(path).extend([record(0), record(1)])
    full = json.dumps(record(2), ensure_ascii=False).encode()
    with open(path, "ab") as f:
        f.write(full[: len(full) // 2])  # what a crash in the middle of an append leaves
    read = read_votes(path)
    assert [v["settings"]["seed"] for v in read.votes] == [0, 1]
    assert read.warnings == [f"{path}:3: skipped a torn last line (left by a crash mid-write?)"]
    before = path.read_bytes()
    VoteLog(path).append(record(3))  # reopening ends the fragment's line before appending
    assert path.read_bytes().startswith(before)
    read = read_votes(path)
    assert [v["settings"]["seed"] for v in read.votes] == [0, 1, 3]
    assert read.warnings == [f"{path}:3: skipped an incomplete line (left by a crash mid-write?)"]


def test_reader_errors_name_the_line(tmp_path):
    path = tmp_path / "votes.jsonl"
    VoteLog(path).append(record(0))
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record(1) | {"vote": "maybe"}) + "\n")
    with pytest.raises(VotesError, match=r"votes.jsonl:2: \"vote\" must be one of"):
        read_votes(path)
    with pytest.raises(VotesError, match="no such votes file"):
        read_votes(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    assert read_votes(empty).votes == [] and VoteLog(empty).path.read_bytes() == b""


def test_votes_survive_kill_9_mid_write(tmp_path):
    path = tmp_path / "votes.jsonl"
    writer = (
        "import sys\n"
        "from miniglm.serve.arena.votes import VoteLog, make_vote\n"
        "log = VoteLog(sys.argv[1])\n"
        "i = 0\n"
        "while True:\n"
        "    log.append(make_vote(session='k', mode='anonymous', left='a', right='b', vote='left',\n"
        "        conversation=[{'role': 'user', 'content': '问'}], answers={'left': '答' * 20000, 'right': str(i)},\n"
        "        settings={'i': i}, anonymous=True))\n"
        "    print(i, flush=True)\n"
        "    i += 1\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    acked = -1
    try:
        while acked < 40:
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            acked = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    read = read_votes(path)
    seen = [v["settings"]["i"] for v in read.votes]
    assert seen == list(range(len(seen)))  # in order, none missing, none duplicated
    assert len(seen) >= acked + 1  # every vote the writer had confirmed is there
    assert len(read.warnings) <= 1  # at most the one being written when killed
    VoteLog(path).append(record(99))
    assert read_votes(path).votes[-1]["settings"]["seed"] == 99


def test_answers_that_name_a_contestant_are_found():
    aliases = {"alice": ["alice", "sft-v2"], "bob": ["bob"], "小明": ["小明"], "x": ["x"]}
    assert names_mentioned({"left": "I am Alice, made by students.", "right": "你好"}, aliases) == [
        "left answer names 'alice' (contestant alice)"]
    assert names_mentioned({"left": "我是小明训练的模型", "right": "model SFT-V2 here"}, aliases) == [
        "left answer names '小明' (contestant 小明)", "right answer names 'sft-v2' (contestant alice)"]
    # whole words only for Latin names, and one-letter names never match
    assert names_mentioned({"left": "a bobsled and an x-ray", "right": "alicebob"}, aliases) == []
