"""bench/sweep.py: the points it asks bench/quality.py for, and its report of what a sweep holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miniglm.config import TrainConfig, load_config
from miniglm.train.recipe import LADDER


@pytest.fixture(scope="module")
def sweep(bench_script):
    return bench_script("sweep")


def test_a_point_trains_the_recipes_rung(sweep, tmp_path):
    rung = LADDER[1]
    args = sweep.point_args(rung.name, 2.0, tmp_path)
    assert args[args.index("--rung") + 1] == rung.name
    assert args[args.index("--prepared") + 1] == str(tmp_path / f"prepared-{rung.vocab}")
    assert args[args.index("--json") + 1] == str(tmp_path / "points" / f"{rung.name}-2.json")


def test_quality_takes_a_rung(bench_script):
    quality = bench_script("quality")
    rung = LADDER[0]
    args = quality.parse_args(["--minutes", "1", "--rung", rung.name, "--set", "learning_rate=1e-3"])
    assert args.vocab_size == rung.vocab
    cfg = load_config(TrainConfig, "small", args.set + [f"model.vocab_size={rung.vocab}"])
    assert cfg.model == load_config(TrainConfig, "small", rung.overrides()).model
    assert cfg.learning_rate == 1e-3  # --set still wins
    with pytest.raises(SystemExit):
        quality.parse_args(["--minutes", "1", "--rung", "huge"])


def write_point(out: Path, shape: str, minutes: float, params: int, tokens: int, bpc: float) -> None:
    (out / "points").mkdir(parents=True, exist_ok=True)
    result = {"params": params, "steps": tokens // 1024, "tokens_seen": tokens, "vocab": 2000, "bpc": bpc}
    (out / "points" / f"{shape}-{minutes:g}.json").write_text(json.dumps({"minutes": minutes,
                                                                          "results": {"miniglm": result}}))


def test_report_only_prints_the_table_the_best_rung_and_a_chart(sweep, tmp_path, capsys):
    write_point(tmp_path, "xs", 2, 1000, 4000, 7.5)
    write_point(tmp_path, "s", 2, 8000, 800, 7.9)
    write_point(tmp_path, "xs", 6, 1000, 12000, 7.2)
    write_point(tmp_path, "s", 6, 8000, 2400, 7.0)
    assert sweep.main(["--out", str(tmp_path), "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "best at 2 min: xs (7.500 bits/char, 4.000 tokens per parameter; 2 rung(s) measured)" in out
    assert "best at 6 min: s (7.000 bits/char, 0.300 tokens per parameter; 2 rung(s) measured)" in out
    chart = out[out.index("\nbits/char\n"):]
    assert chart.count("x") >= 2 and "minutes (log)" in chart
    assert sweep.main(["--out", str(tmp_path / "empty"), "--report-only"]) == 1


def test_unknown_shapes_are_refused(sweep, tmp_path):
    with pytest.raises(SystemExit):
        sweep.main(["--out", str(tmp_path), "--shapes", "xs,huge"])
