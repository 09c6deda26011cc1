"""The budget recipe: the largest rung whose measured speed buys enough tokens per parameter."""

import json

import pytest

from miniglm.__main__ import main
from miniglm.config import TrainConfig, load_config
from miniglm.model.model import MiniGLM
from miniglm.train import recipe
from miniglm.train.recipe import Rung
from tests.tiny_data import make_pretrain_dir

TINY_LADDER = (Rung("t1", 1, 16, 2, 32, 300, 3e-3), Rung("t2", 2, 32, 4, 64, 300, 2e-3),
               Rung("t3", 2, 64, 4, 128, 300, 1e-3))


@pytest.mark.parametrize("rung", recipe.LADDER, ids=lambda r: r.name)
def test_a_rung_builds_the_model_it_describes(rung):
    for vocab in (None, 1234):
        cfg = load_config(TrainConfig, recipe.BASE_PRESET, rung.overrides(vocab))
        assert MiniGLM(cfg.model).num_params() == rung.params(vocab)
        assert (cfg.batch_size, cfg.block_size, cfg.model.max_position_embeddings) == (16, 128, 128)
        assert (cfg.optimizer, cfg.model.tie_word_embeddings, cfg.adamw_lr_scale) == ("muon", False, 2.0)
        assert cfg.learning_rate == rung.learning_rate and cfg.min_lr == pytest.approx(rung.learning_rate / 10)


def test_the_ladder_grows_in_parameters_width_and_vocabulary():
    sizes = [r.params() for r in recipe.LADDER]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for field in ("hidden", "vocab"):
        values = [getattr(r, field) for r in recipe.LADDER]
        assert values == sorted(values), field


def test_choose_takes_the_largest_rung_that_gets_enough_tokens(monkeypatch):
    monkeypatch.setattr(recipe, "TOKENS_PER_PARAM", 2.0)
    measured = []

    def speed(rung):  # tokens/s falls with size, like a real machine
        measured.append(rung.name)
        return 1e8 / rung.params()

    # 60 s buys 6e9 / N tokens, >= 2 N while N <= 54.7k: t1 (12k) and t2 (40k) fit, t3 (121k) does not
    rung, trials = recipe.choose(60, speed, ladder=TINY_LADDER)
    assert [r.params() for r in TINY_LADDER] == [12208, 39840, 120640]  # separate heads (recipe.TIED False)
    assert rung == TINY_LADDER[1]
    assert [t.fits for t in trials] == [True, True, False]
    assert trials[1].tokens_per_param == pytest.approx(6e9 / 39840 ** 2)
    assert measured == ["t1", "t2", "t3"]
    assert "-> t2" in recipe.report(60, rung, trials)

    measured.clear()
    monkeypatch.setattr(recipe, "TOKENS_PER_PARAM", 200.0)  # nothing bigger is measured once one fails
    assert recipe.choose(60, speed, ladder=TINY_LADDER)[0] == TINY_LADDER[0] and measured == ["t1"]


def test_choose_falls_back_to_the_smallest_rung(monkeypatch):
    rung, trials = recipe.choose(1, lambda r: 1.0, ladder=TINY_LADDER)
    assert rung == TINY_LADDER[0] and len(trials) == 1 and not trials[0].fits
    assert "(too few)" in recipe.report(1, rung, trials)


def test_choose_grows_with_the_budget():
    def speed(r):
        return 1e9 / r.params()

    # 2 tokens per parameter: N^2 <= 5e8 x seconds, so t2 (40k) from 3.2 s, t3 (121k) from 29 s
    picked = [recipe.choose(s, speed, ladder=TINY_LADDER)[0].name for s in (1, 10, 100)]
    assert picked == ["t1", "t2", "t3"]


def test_the_fitted_ratio_picks_the_rung_that_won_on_the_novels():
    # tokens/s of the 10-minute runs behind TOKENS_PER_PARAM (EPYC-AVX2, 2026-12-04; bench/README.md):
    # held-out bits/char xs 6.058, s 5.954, m 6.138 at 10 minutes; s 5.904, m 5.949 at 30 (a slower hour)
    ten = {"xs": 14_790_656 / 600, "s": 6_586_368 / 600, "m": 3_016_704 / 600}
    thirty = {"xs": ten["xs"], "s": 17_950_720 / 1800, "m": 8_534_016 / 1800}
    assert recipe.choose(600, lambda rung: ten.get(rung.name, 0.0))[0].name == "s"
    assert recipe.choose(1800, lambda rung: thirty.get(rung.name, 0.0))[0].name == "s"
    assert recipe.choose(180, lambda rung: ten.get(rung.name, 0.0))[0].name == "xs"  # s: 0.7 per parameter


def test_measured_speed_is_a_real_training_step():
    tps = recipe.measure_tokens_per_second(TINY_LADDER[0], "cpu", vocab=300)
    assert 0 < tps < float("inf")


def test_train_config_auto_picks_a_rung_for_the_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(recipe, "LADDER", TINY_LADDER)
    data = make_pretrain_dir(tmp_path / "data")
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    out = tmp_path / "run"
    code = main(["train", "--config", "auto", "--max_minutes", "0.05", "--data", str(data), "--out", str(out),
                 "--device", "cpu", "--progress=false", "--eval_steps=2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "recipe for 0.05 min" in printed and "->" in printed
    saved = json.loads((out / "config.json").read_text())
    shape = (saved["model"]["num_hidden_layers"], saved["model"]["hidden_size"], saved["learning_rate"])
    assert shape in {(r.layers, r.hidden, r.learning_rate) for r in TINY_LADDER}
    assert saved["model"]["vocab_size"] == vocab and saved["batch_size"] == recipe.BATCH_SIZE
    assert saved["eval_steps"] == 2  # flags still override the recipe


@pytest.mark.parametrize("extra, message", [
    ([], "give --max_minutes N"),
    (["--max_minutes", "1", "--init-from", "somewhere"], "pretraining a new model"),
])
def test_train_config_auto_errors(tmp_path, capsys, extra, message):
    data = make_pretrain_dir(tmp_path / "data")
    code = main(["train", "--config", "auto", "--data", str(data), "--out", str(tmp_path / "run"), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
