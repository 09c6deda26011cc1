"""bench/sft_quality.py: its inputs (SFT sets, held-out questions) and its table of what a run holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("sft_quality")


def test_inputs_concatenate_the_sft_sets_and_take_the_first_heldout_questions(bench, tmp_path, monkeypatch):
    data = tmp_path / "data"
    for f in bench.SFT_FILES:
        (data / f).parent.mkdir(parents=True, exist_ok=True)
        (data / f).write_text(f'{{"question": "{f}", "answer": "a"}}\n', encoding="utf-8")
    monkeypatch.setattr(bench, "HELDOUT", (("eval/x.jsonl", 2), ("eval/y.jsonl", 1)))
    (data / "eval").mkdir()
    for name, n in (("x", 3), ("y", 2)):
        (data / "eval" / f"{name}.jsonl").write_text("".join(f'{{"question": "{name}{i}", "answer": "b"}}\n'
                                                            for i in range(n)), encoding="utf-8")
    (tmp_path / "out").mkdir()
    sft, held = bench.write_inputs(tmp_path / "out", data)
    assert [json.loads(x)["question"] for x in sft.read_text().splitlines()] == list(bench.SFT_FILES)
    assert [json.loads(x)["question"] for x in held.read_text().splitlines()] == ["x0", "x1", "y0"]


def fake_report(path: Path, d1: float, rouge: float, unique: float, loss: float) -> None:
    summary = {"items": 4, "distinct_1": d1, "distinct_2": 2 * d1, "rouge_l": {"f": rouge}, "unique_answer_share": unique,
               "finish_reasons": {"eot": 3}, "flags": {"repetition": 1}, "reference_loss": loss}
    path.mkdir(parents=True)
    (path / "report.json").write_text(json.dumps({"runs": [{"qa": {"summary": summary}}]}))


def test_report_only_prints_one_row_per_variant_and_decoding(bench, tmp_path, capsys):
    fake_report(tmp_path / "evals" / "default-sampled", 0.06, 0.059, 1.0, 5.322)
    fake_report(tmp_path / "evals" / "fixed-lr-greedy", 0.007, 0.033, 0.76, 5.657)
    assert bench.main(["--out", str(tmp_path), "--report-only"]) == 0
    rows = [x.split() for x in capsys.readouterr().out.splitlines() if x.startswith(("default", "fixed"))]
    assert rows == [["default-sampled", "0.060", "0.120", "0.059", "100%", "3", "1", "5.322"],
                    ["fixed-lr-greedy", "0.007", "0.014", "0.033", "76%", "3", "1", "5.657"]]
    assert bench.main(["--out", str(tmp_path / "none"), "--report-only"]) == 1


def test_running_needs_a_pretrained_run(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path)])
