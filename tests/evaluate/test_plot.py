"""Figures from metrics.jsonl and eval reports: the plotted data, the PNG files, the errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from miniglm.cli.plot import main as plot_main  # noqa: E402
from miniglm.evaluate import plot  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(path, mode="pretrain", steps=(10, 20, 30), evals=(20, 30), init_from=None, base_loss=5.0):
    path.mkdir(parents=True, exist_ok=True)
    lines = [{"type": "start", "mode": mode, "params": 1000, "non_embedding_params": 500, "init_from": init_from}]
    for s in steps:
        lines.append({"type": "train", "step": s, "tokens": s * 100, "loss": base_loss - s / 100,
                      "lr": s * 1e-5, "grad_norm": 1.0, "tokens_per_sec": 1000.0 + s, "mfu": None, "elapsed": s})
    for s in evals:
        lines.append({"type": "eval", "step": s, "tokens": s * 100, "val_loss": base_loss + 0.5 - s / 100,
                      "val_ppl": 2.0 ** (6 - s / 10), "val_bpc": None if mode == "sft" else 3.0 - s / 100,
                      "val_tokens": 999})
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def fake_report(names=("a",), flags=None):
    flags = flags or [{"garbled": False, "repetition": True, "empty": False, "truncated": True, "off_topic": False},
                      {"garbled": True, "repetition": True, "empty": False, "truncated": False, "off_topic": False},
                      {"garbled": False, "repetition": False, "empty": False, "truncated": False, "off_topic": False}]
    fs = [0.05, 0.5, 0.97]
    items = [{"index": i, "rouge_l": {"precision": f, "recall": f, "f": f}, "flags": fl}
             for i, (f, fl) in enumerate(zip(fs, flags))]
    return {"report": "miniglm-eval", "format_version": 1,
            "runs": [{"name": n, "qa": {"items": items}} for n in names]}


def line_data(ax):
    return {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()}


def test_read_metrics(tmp_path):
    run = plot.read_metrics(write_run(tmp_path / "small"))
    assert run.name == "small" and run.mode == "pretrain" and run.last_step == 30
    assert [r["step"] for r in run.train] == [10, 20, 30] and len(run.evals) == 2


def test_loss_figure_has_every_series(tmp_path):
    a = plot.read_metrics(write_run(tmp_path / "a"))
    b = plot.read_metrics(write_run(tmp_path / "b", base_loss=4.0))
    fig = plot.plot_loss([a, b])
    by_step, by_tokens = fig.axes[0], fig.axes[1]
    data = line_data(by_step)
    assert data["a train"] == ([10, 20, 30], [4.9, 4.8, 4.7])
    assert data["b val"] == ([20, 30], [4.3, 4.2])
    assert line_data(by_tokens)["a train"][0] == [1000, 2000, 3000]
    assert [t.get_text() for t in by_step.get_legend().get_texts()] == ["a train", "a val", "b train", "b val"]


def test_lr_throughput_and_val_metrics(tmp_path):
    runs = [plot.read_metrics(write_run(tmp_path / "a")), plot.read_metrics(write_run(tmp_path / "s", mode="sft"))]
    assert line_data(plot.plot_lr(runs).axes[0])["a"][1] == pytest.approx([1e-4, 2e-4, 3e-4])
    assert line_data(plot.plot_throughput(runs).axes[0])["s"][1] == [1010.0, 1020.0, 1030.0]
    fig = plot.plot_val_metrics(runs)
    assert line_data(fig.axes[0])["a"] == ([20, 30], [16.0, 8.0])
    assert line_data(fig.axes[1])["a"] == ([20, 30], [2.8, 2.7])
    assert line_data(fig.axes[1])["s"] == ([], [])  # SFT runs have no bits per char


def test_stages_put_sft_after_its_pretrain_run(tmp_path):
    pre = write_run(tmp_path / "pre", steps=(10, 20, 30, 40), evals=(40,))
    other = write_run(tmp_path / "other", steps=(5,), evals=())
    sft = write_run(tmp_path / "sft", mode="sft", steps=(1, 2), evals=(2,),
                    init_from=str(pre / "checkpoints" / "best"))
    runs = [plot.read_metrics(p) for p in (other, pre, sft)]
    assert plot.stage_offsets(runs) == [0, 0, 40]
    fig = plot.plot_stages(runs)
    data = line_data(fig.axes[0])
    assert data["sft (sft) train"][0] == [41, 42]
    assert data["pre (pretrain) train"][0] == [10, 20, 30, 40]
    vlines = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("_")]
    assert [list(ln.get_xdata()) for ln in vlines] == [[40, 40]]


def test_report_figures(tmp_path):
    reports = [fake_report(("a", "b"))]
    hist = plot.plot_rouge_hist(reports)
    heights = [p.get_xy() for p in hist.axes[0].patches]
    assert len(heights) == 2  # one step outline per checkpoint
    legend = [t.get_text() for t in hist.axes[0].get_legend().get_texts()]
    assert legend == ["a", "b"]
    flags = plot.plot_flags(reports)
    bars = flags.axes[0].patches
    # these items predate the collapsed flag: it plots as 0, the report still draws
    assert [b.get_height() for b in bars] == [1, 2, 0, 1, 0, 0] * 2
    assert [t.get_text() for t in flags.axes[0].get_xticklabels()] == list(plot_flag_names())


def test_report_labels_tell_same_named_runs_apart():
    a, b = fake_report(("sft",)), fake_report(("sft",))
    a["settings"] = {"qa_file": "/x/cmrc_qa.jsonl"}
    fig = plot.plot_flags([a, b])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["sft · cmrc_qa (3 answers)", "sft · report 2 (3 answers)"]


def plot_flag_names():
    from miniglm.evaluate.metrics import FLAG_NAMES

    return FLAG_NAMES


def test_rouge_histogram_counts(tmp_path):
    import numpy as np

    fig = plot.plot_rouge_hist([fake_report()], bins=4)
    # step histogram outline: the y values of the polygon trace the bin counts
    ys = fig.axes[0].patches[0].get_xy()[:, 1]
    assert np.max(ys) == 1 and set(np.unique(ys)) <= {0, 1}


def test_plot_runs_writes_pngs(tmp_path):
    pre = write_run(tmp_path / "pre")
    sft = write_run(tmp_path / "sft", mode="sft", init_from=str(pre))
    paths = plot.plot_runs([pre, sft], tmp_path / "figs", [fake_report()])
    names = sorted(p.name for p in paths)
    assert names == sorted(["loss.png", "lr.png", "throughput.png", "val_metrics.png", "stages.png",
                            "rouge_l.png", "flags.png"])
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert not list((tmp_path / "figs").glob("*.tmp*"))


def test_cjk_font_is_used_when_installed():
    font = plot.cjk_font()
    if font is None:
        pytest.skip("no CJK font installed")
    fig = plot.plot_loss([])
    fig.axes[0].set_title("损失")
    assert fig.axes[0].title.get_fontfamily()[0] == font
    assert fig.axes[0].title.get_fontname() == font


def test_malformed_metrics_name_file_and_line(tmp_path):
    run = write_run(tmp_path / "r")
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"type": "train", "step": 40, "loss": \n')
    with pytest.raises(plot.PlotError, match=r"metrics.jsonl:7: invalid JSON"):
        plot.read_metrics(run)
    (run / "metrics.jsonl").write_text('{"type": "start"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(plot.PlotError, match=r"metrics.jsonl:2: expected a JSON object"):
        plot.read_metrics(run)
    (run / "metrics.jsonl").write_text('{"type": "train", "step": "x"}\n', encoding="utf-8")
    with pytest.raises(plot.PlotError, match=r"metrics.jsonl:1: a train record needs an integer"):
        plot.read_metrics(run)
    (run / "metrics.jsonl").write_text('{"type": "start", "mode": "pretrain"}\n', encoding="utf-8")
    with pytest.raises(plot.PlotError, match="no train or eval records"):
        plot.read_metrics(run)


def test_missing_metrics_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(plot.PlotError, match="no metrics.jsonl"):
        plot.read_metrics(tmp_path / "empty")
    with pytest.raises(plot.PlotError, match="run directory not found"):
        plot.read_metrics(tmp_path / "nope")


def test_plot_cli(tmp_path, capsys):
    run = write_run(tmp_path / "r")
    rep = tmp_path / "report.json"
    rep.write_text(json.dumps(fake_report()), encoding="utf-8")
    assert plot_main([str(run), "--report", str(rep), "--out", str(tmp_path / "o")]) == 0
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {"loss.png", "rouge_l.png", "flags.png"}
    assert plot_main([str(run)]) == 0 and (run / "plots" / "loss.png").is_file()


def test_plot_cli_errors(tmp_path, capsys):
    from miniglm.__main__ import main

    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}', encoding="utf-8")
    assert main(["plot", "--report", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miniglm plot: error:") and "not a MiniGLM eval report" in err and "\n" not in err
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert main(["plot"]) == 2
    with pytest.raises(SystemExit) as e:
        plot_main(["--help"])
    assert e.value.code == 0
    assert "--report" in capsys.readouterr().out
