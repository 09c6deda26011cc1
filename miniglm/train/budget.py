"""Training for a time budget (`max_minutes`): fit `max_steps`, and with it the cosine schedule, to
the speed this machine actually reaches.

    budget = TimeBudget(minutes=60, start_step=0)
    new_cfg = budget.after_step(cfg, step, elapsed, step_seconds)   # None: keep the plan

Step counts sized on one machine are wrong on the next (a CPU without fast bf16 is 3x slower,
a GPU 50x faster), so the plan is measured, not assumed:
- calibration: after the first `CALIBRATION_STEPS` steps, seconds per step = the median of those
  steps without the first (it pays for allocator and kernel warm-up), plus the share evaluations
  will add (an evaluation batch is a forward pass, about a third of a training micro-batch);
- refits: at half of the remaining plan, again and again while at least `MIN_REFIT_STEPS` remain,
  from the wall-clock rate since calibration, which includes evaluations and checkpoints;
- a hard stop: once the budget is spent, the current step becomes the last one (final
  evaluation and checkpoint included), so a machine slowing down mid-run cannot overrun it.
Each refit changes `max_steps`, so the learning rate follows a cosine over the steps that will
really run; `warmup_steps` is capped at a fifth of the plan so a short budget still reaches the
peak rate. `elapsed` counts the whole run (a resumed run keeps its earlier time), so
`--max_minutes 60` means an hour of training in all.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace

from miniglm.config import TrainConfig

CALIBRATION_STEPS = 5
MIN_REFIT_STEPS = 20
EVAL_FORWARD_SHARE = 1 / 3  # one forward pass / (forward + backward), roughly
WHOLE_SET_EVAL_BATCHES = 10  # a guess for eval_steps = 0 (the whole validation set) until measured


def eval_overhead(cfg: TrainConfig) -> float:
    """Expected evaluation time per training step, as a fraction of the step's own time."""
    if not cfg.eval_interval:
        return 0.0
    batches = cfg.eval_steps or WHOLE_SET_EVAL_BATCHES
    return batches * EVAL_FORWARD_SHARE / (cfg.grad_accum_steps * cfg.eval_interval)


def fit_steps(cfg: TrainConfig, max_steps: int) -> TrainConfig:
    """`cfg` with `max_steps`, the warmup capped at a fifth of it."""
    return replace(cfg, max_steps=max_steps, warmup_steps=min(cfg.warmup_steps, max(1, max_steps // 5)))


@dataclass
class TimeBudget:
    minutes: float
    start_step: int  # the step this session started at (> 0 when resuming)
    step_seconds: list[float] = field(default_factory=list)
    calibrated_at: tuple[int, float] | None = None  # (step, elapsed) at calibration
    refit_at: int | None = None
    seconds_per_step: float | None = None  # the latest estimate, for the message

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def after_step(self, cfg: TrainConfig, step: int, elapsed: float, step_seconds: float) -> TrainConfig | None:
        """A refitted config after `step` (1-based count of steps done), or None to keep the plan."""
        self.step_seconds.append(step_seconds)
        if elapsed >= self.seconds:
            return replace(cfg, max_steps=step) if step < cfg.max_steps else None
        if self.calibrated_at is None:
            if step < self.start_step + CALIBRATION_STEPS and step < cfg.max_steps:
                return None
            timed = self.step_seconds[1:] or self.step_seconds
            per_step = statistics.median(timed) * (1.0 + eval_overhead(cfg))
            self.calibrated_at = (step, elapsed)
        elif step == self.refit_at:
            cal_step, cal_elapsed = self.calibrated_at
            per_step = (elapsed - cal_elapsed) / (step - cal_step)
        else:
            return None
        self.seconds_per_step = per_step
        remaining = max(1, int((self.seconds - elapsed) / per_step))
        self.refit_at = step + remaining // 2 if remaining >= MIN_REFIT_STEPS else None
        return fit_steps(cfg, step + remaining)

    def describe(self, cfg: TrainConfig) -> str:
        return (f"time budget {self.minutes:g} min: {self.seconds_per_step:.3g} s/step measured -> "
                f"max_steps {cfg.max_steps} (warmup {cfg.warmup_steps})")
