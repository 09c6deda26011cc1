"""The shared JSON Lines reader."""

from pathlib import Path

import pytest

from miniglm.errors import UserError
from miniglm.evaluate import plot
from miniglm.io import iter_jsonl


class LineError(UserError):
    pass


def test_records_with_line_numbers_blank_lines_skipped():
    text = '{"a": 1}\n\n[2]\n'
    assert list(iter_jsonl(Path("f.jsonl"), text, LineError)) == [(1, {"a": 1}), (3, [2])]


def test_bad_line_names_file_and_line_with_callers_error():
    with pytest.raises(LineError, match=r"^f.jsonl:2: invalid JSON \(.* at column \d+\)$"):
        list(iter_jsonl(Path("f.jsonl"), '{"a": 1}\n{"a": \n{"b": 2}\n', LineError))


def test_torn_tail_skipped_only_when_allowed_and_only_at_the_end():
    torn = '{"a": 1}\n{"a": 2'
    assert list(iter_jsonl(Path("f"), torn, LineError, allow_torn_tail=True)) == [(1, {"a": 1})]
    with pytest.raises(LineError, match="f:2"):
        list(iter_jsonl(Path("f"), torn, LineError))
    with pytest.raises(LineError, match="f:2"):  # newline-terminated: a real error, not a torn write
        list(iter_jsonl(Path("f"), torn + "\n", LineError, allow_torn_tail=True))


def test_plot_reads_a_run_killed_mid_append(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"type": "start", "mode": "pretrain"}\n'
        '{"type": "train", "step": 10, "tokens": 100, "loss": 5.0}\n'
        '{"type": "train", "step": 20, "tok', encoding="utf-8")
    metrics = plot.read_metrics(run)
    assert [r["step"] for r in metrics.train] == [10]
