"""`max_minutes`: max_steps (and the cosine schedule) fitted to the measured speed."""

import json

import pytest

from miniglm.config import ConfigError, TrainConfig
from miniglm.train.budget import CALIBRATION_STEPS, TimeBudget, eval_overhead
from miniglm.train.step import lr_at
from miniglm.train.trainer import train
from tests.tiny_data import make_pretrain_dir, tiny_config


def drive(budget: TimeBudget, cfg: TrainConfig, seconds_per_step, start: int = 0) -> tuple[TrainConfig, float]:
    """Run the budget against a fake clock; (final config, elapsed seconds at the end)."""
    step, elapsed = start, 0.0
    while step < cfg.max_steps:
        step += 1
        dt = seconds_per_step(step)
        elapsed += dt
        cfg = budget.after_step(cfg, step, elapsed, dt) or cfg
    return cfg, elapsed


def test_calibration_fits_the_plan_to_the_budget():
    cfg = TrainConfig(max_steps=100_000, warmup_steps=100, eval_interval=0)
    end, elapsed = drive(TimeBudget(minutes=1.0, start_step=0), cfg, lambda s: 5.0 if s == 1 else 0.1)
    assert 0.95 * 60 <= elapsed <= 60.0 + 0.1  # the first (warm-up) step is not taken as the speed
    assert end.max_steps == pytest.approx(600, abs=60)
    assert end.warmup_steps == 100  # a fifth of the plan is more than the configured warmup


def test_refits_follow_a_machine_that_slows_down_and_never_overrun():
    cfg = TrainConfig(max_steps=10, warmup_steps=50, eval_interval=0)
    budget = TimeBudget(minutes=0.5, start_step=0)
    end, elapsed = drive(budget, cfg, lambda s: 0.05 if s < 100 else 0.2)
    assert 0.9 * 30 <= elapsed <= 30.0 + 0.2
    assert 100 < end.max_steps < 30 / 0.05  # far fewer steps than the first 0.05 s/step promised


def test_a_short_plan_still_warms_up_and_decays_fully():
    cfg = TrainConfig(max_steps=10, warmup_steps=50, eval_interval=0)
    end, elapsed = drive(TimeBudget(minutes=0.1, start_step=0), cfg, lambda s: 0.06)
    assert end.max_steps == pytest.approx(100, abs=2) and 0 < end.warmup_steps <= end.max_steps // 5
    assert lr_at(end.warmup_steps, end) == pytest.approx(end.learning_rate, rel=0.01)
    assert lr_at(end.max_steps - 1, end) == pytest.approx(end.min_lr, rel=0.05)  # the cosine ends at the end


def test_evaluations_are_part_of_the_estimate():
    assert eval_overhead(TrainConfig(eval_interval=0)) == 0
    assert eval_overhead(TrainConfig(eval_interval=10, eval_steps=30)) == pytest.approx(1.0)


def test_a_resumed_run_calibrates_after_its_own_first_steps():
    budget = TimeBudget(minutes=1.0, start_step=500)
    cfg = TrainConfig(max_steps=1000)
    assert budget.after_step(cfg, 501, 10.0, 0.1) is None
    steps = [budget.after_step(cfg, 500 + k, 10.0 + k * 0.1, 0.1) for k in range(2, CALIBRATION_STEPS + 1)]
    assert steps[-1] is not None and steps[-1].max_steps > 500 + CALIBRATION_STEPS


def test_max_minutes_must_not_be_negative():
    with pytest.raises(ConfigError, match="max_minutes"):
        TrainConfig(max_minutes=-1)


def test_train_for_a_few_seconds(tmp_path):
    data = make_pretrain_dir(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "run", max_steps=100_000, max_minutes=0.05, eval_interval=0,
                      checkpoint_interval=100_000)
    result = train(cfg)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["max_steps"] == result["step"] < 100_000  # the refitted plan, which the run finished
    print(f"budget 3.0 s, trained {result['elapsed']:.2f} s ({result['elapsed'] / 3:.0%}), {result['step']} steps")
    assert result["elapsed"] < 3 * 3.0  # generous: shared CPUs; the fake-clock tests check the arithmetic
