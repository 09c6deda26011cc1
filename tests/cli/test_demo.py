"""`miniglm demo` end to end on the bundled data, with a handful of steps so it stays quick."""

import json

from miniglm.__main__ import main


def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--pretrain-steps", "3", "--sft-steps", "3",
                 "--num-answers", "1", "--eval-limit", "2", "--device", "cpu"])
    assert code == 0
    for path in ["data/train.bin", "data/meta.json", "sft/meta.json", "runs/pretrain/metrics.jsonl",
                 "runs/sft/metrics.jsonl", "eval/report.json", "eval/report.md"]:
        assert (out / path).is_file(), path
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(answers) == 2  # one bundled question, one new question
    assert list((out / "plots").glob("*.png"))
    printed = capsys.readouterr().out
    assert "问：" + answers[0]["prompt"] in printed
    assert "python -m miniglm chat" in printed


def test_demo_reports_a_failing_stage(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "d"), "--corpus", str(tmp_path / "missing.txt")])
    assert code == 2
    assert "stage '1/7 prepare" in capsys.readouterr().err
