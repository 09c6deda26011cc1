"""`miniglm demo` end to end on the bundled data, with a handful of fixed steps so it stays quick."""

import json

from miniglm.__main__ import main


def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--offline", "--preset", "tiny", "--pretrain-steps", "3",
                 "--sft-steps", "3", "--num-answers", "1", "--eval-limit", "2", "--device", "cpu"])
    assert code == 0
    for path in ["data/train.bin", "data/meta.json", "sft/meta.json", "runs/pretrain/metrics.jsonl",
                 "runs/sft/metrics.jsonl", "eval/report.json", "eval/report.md"]:
        assert (out / path).is_file(), path
    for run in ("pretrain", "sft"):  # explicit step counts override the budget
        saved = json.loads((out / "runs" / run / "config.json").read_text())
        assert (saved["max_steps"], saved["max_minutes"]) == (3, 0.0)
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(answers) == 1  # one new question, without a reference
    assert list((out / "plots").glob("*.png"))

    # every 10th pair is held out of SFT; the scored set holds 2 seen and 2 held-out questions
    sft_questions = {json.loads(x)["question"] for x in (out / "qa_sft.jsonl").read_text(encoding="utf-8").splitlines()}
    items = json.loads((out / "eval" / "report.json").read_text(encoding="utf-8"))["runs"][0]["qa"]["items"]
    assert [it["question"] in sft_questions for it in items] == [True, True, False, False]
    printed = capsys.readouterr().out
    assert "Questions seen in SFT (memorisation): 2, mean Rouge-L F" in printed
    assert "Questions not seen in SFT (generalisation): 2, mean Rouge-L F" in printed
    assert "问：" + answers[0]["prompt"] in printed
    assert "python -m miniglm chat" in printed


def test_demo_reports_a_failing_stage(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "d"), "--corpus", str(tmp_path / "missing.txt")])
    assert code == 2
    assert "stage '1/7 prepare" in capsys.readouterr().err


def test_demo_falls_back_to_the_bundled_corpus_offline(tmp_path, monkeypatch, capsys):
    from miniglm.cli import demo
    from miniglm.data import fetch

    def offline(*args, **kwargs):
        raise fetch.OfflineError("cannot reach github.com (no network)")

    monkeypatch.setattr(fetch, "fetch", offline)
    parsed = demo.build_parser().parse_args([])
    assert demo.corpus_paths(parsed, tmp_path / "raw") == [str(demo.ASSETS / "corpus")]
    assert "pretraining on the bundled excerpts" in capsys.readouterr().out
