"""The recipe for a time budget: which model, vocabulary, batch and learning rate N minutes buy here.

    rung, trials = choose(seconds=600, tokens_per_second=lambda r: measure_tokens_per_second(r, "auto"))
    cfg = load_config(TrainConfig, BASE_PRESET, rung.overrides())     # then --max_minutes fits the steps

A budget of wall-clock minutes buys a number of training tokens, and how many depends on the
model: on the 2-core AVX2 EPYC the smallest rung trains ~2x more tokens per second than the next one and
~4.5x more than the one after. Too big a model sees too few tokens, too small a one stops gaining.
The rule: train the largest rung of the ladder (`LADDER`, smallest first) whose measured speed buys
at least `TOKENS_PER_PARAM` = 2 training tokens per parameter in the budget; when none does, the
smallest. Speeds are measured on this machine (a few optimizer steps per rung, smallest first,
stopping at the first rung that falls short, since bigger ones are slower and need more tokens),
never assumed, so the same budget picks a bigger model on a faster machine or in a faster hour.

The ratio is fitted on this corpus, not taken from Hoffmann et al. (2022, "Chinchilla": ~20 tokens
per parameter, for models of 70M parameters and more, where the embedding is a small share; here
it is 54-72% of the two smallest rungs). `bench/quality.py --only miniglm --rung R --minutes 10`,
held-out bits/char of the Four Classic Novels, EPYC-AVX2, 2026-12-04, one after another (table in
bench/README.md): xs 6.058 with 10.4 tokens per parameter, s 5.954 with 2.3, m 6.138 with 0.57;
at 30 minutes (later that session) s 5.904 with 6.3, m 5.949 with 1.6. A threshold between 1.6
and 2.3 picks the winner at both budgets; 2 is the 10-minute winner's ratio rounded down. In the
same table xs trained 7,222 steps in 10 minutes; in a slower hour two days before it trained 2,662
(6.142) and 7,049 in 30 minutes (6.046): the rung had stopped gaining after ~6 passes over the
~2.4M training tokens, which is why the old ratio (20, which picked xs at any budget under hours
here) was wrong for budgets past a few minutes. The rule counts tokens trained, not distinct ones;
on this corpus the fitted ratio is what weighs the repetition. The vocabulary stays at 4k up to `m`
(measured on xs: on tiny budgets a 16k vocabulary would spend most parameters and most FLOPs on the
LM head); the larger rungs keep the 8k/16k vocabularies and AdamW rates chosen before the smaller
ones were measured.

How every rung trains (measured on xs, 3 minutes on EPYC-AVX2, held-out bits/char; bench/README.md):
- `OPTIMIZER` Muon on the blocks' matrices (`miniglm.train.step.Muon`), AdamW on the rest: 7.068 with
  AdamW at its best rate -> 6.834-6.848 with Muon at 3e-3 to 1.2e-2, despite ~20% fewer steps
  (Newton-Schulz costs ~0.02 s of a 0.1 s step here). xs takes 6e-3, the middle of that flat
  optimum, and so do `s` and `m` (trained with it at 10 minutes, rate not swept); `l` and `xl` keep
  rates measured with AdamW before, which Muon's AdamW-matched update size is meant to carry over
  (not measured with Muon).
- `BATCH_SIZE` 16 windows of `BLOCK_SIZE` 128 tokens: with Muon 16 beat 8 (6.766 vs 6.834) and tied
  with 32 (6.641 vs 6.645 with the untied head); with AdamW 8 had beaten 16. 256-token windows lost
  (6.673 for 8 x 256, 6.702 for 16 x 256).
- `TIED` False, a separate LM head: more parameters for the same FLOPs, and the embedding's gradient
  is dense (a tied one took the slower sparse path): 6.766 -> 6.641 at batch 16, with 23% more steps.
- xs's vocabulary, with the three above: 2k 6.547 and 6.514 (two runs, 1,422 and 1,528 steps), 3k
  6.453 (1,224), 4k 6.369 (1,231), 8k 6.399 (911), so 4k, although its head is then 56% of a token's
  FLOPs (with a tied head and AdamW, 4k had only tied with 2k).
- `ADAMW_LR_SCALE` 2: Muon's AdamW side (embedding, separate head, norm gains) at twice the rung's
  rate (`adamw_lr_scale`): 6.489/6.501 at x1 -> 6.383 at x2 (x0.5 6.572, x4 6.435, x8 6.461).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

TOKENS_PER_PARAM = 2.0  # fitted on the novels: see the module docstring
BASE_PRESET = "small"  # every other field (warmup, evaluation, checkpoints) comes from this preset
BATCH_SIZE, BLOCK_SIZE = 16, 128
OPTIMIZER = "muon"
ADAMW_LR_SCALE = 2.0  # Muon's AdamW side (embedding, LM head, norm gains) at twice the rung's rate
TIED = False  # a separate LM head: more parameters for no more FLOPs, and a dense (faster) embedding gradient


@dataclass(frozen=True)
class Rung:
    name: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int
    learning_rate: float

    def params(self, vocab: int | None = None) -> int:
        """Parameters of this shape (a tied embedding counted once), as `MiniGLM.num_params`."""
        v, h = vocab or self.vocab, self.hidden
        block = 4 * h * h + 3 * h * self.intermediate + 2 * h  # q, k, v, o; gate, up, down; two norms
        return (1 if TIED else 2) * v * h + self.layers * block + h

    def overrides(self, vocab: int | None = None) -> list[str]:
        """`key=value` TrainConfig overrides (as `load_config` and `miniglm train --key=value` take them)."""
        fields = {"model.num_hidden_layers": self.layers, "model.hidden_size": self.hidden,
                "model.num_attention_heads": self.heads, "model.num_key_value_heads": self.heads,
                "model.intermediate_size": self.intermediate, "model.max_position_embeddings": BLOCK_SIZE,
                "model.vocab_size": vocab or self.vocab, "model.tie_word_embeddings": TIED,
                "block_size": BLOCK_SIZE, "batch_size": BATCH_SIZE, "grad_accum_steps": 1, "optimizer": OPTIMIZER,
                "adamw_lr_scale": ADAMW_LR_SCALE, "learning_rate": self.learning_rate, "min_lr": self.learning_rate / 10}
        return [f"{k}={v:g}" if isinstance(v, float) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                for k, v in fields.items()]

    def describe(self, vocab: int | None = None) -> str:
        return (f"{self.name}: {self.layers} layers, hidden {self.hidden}, vocab {vocab or self.vocab}, "
                f"{self.params(vocab) / 1e6:.2f}M parameters, lr {self.learning_rate:g}")


LADDER = (
    Rung("xs", 2, 128, 4, 352, 4000, 6e-3),  # measured: see the module docstring
    Rung("s", 3, 192, 6, 512, 4000, 6e-3),  # xs's vocabulary and rate, 32-wide heads, one layer more
    Rung("m", 4, 256, 8, 704, 4000, 6e-3),  # the same; trained and scored at 10 and 30 minutes (bench/README.md)
    Rung("l", 6, 384, 6, 1024, 8000, 1.5e-3),  # rates measured with AdamW, before Muon; not trained with it
    Rung("xl", 6, 512, 8, 1408, 16000, 1e-3),
)


@dataclass(frozen=True)
class Trial:
    rung: Rung
    tokens_per_second: float
    tokens: float  # in the budget
    params: int

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    @property
    def fits(self) -> bool:
        return self.tokens_per_param >= TOKENS_PER_PARAM


def choose(seconds: float, tokens_per_second: Callable[[Rung], float], vocab: int | None = None,
           ladder: tuple[Rung, ...] | None = None) -> tuple[Rung, list[Trial]]:
    """The rung for `seconds` of training, and the trials behind the choice (smallest rung first).

    `vocab`: the vocabulary when it is already fixed (prepared data), else each rung's own. The
    smallest rung is the answer when none fits: a model is trained whatever the budget."""
    trials: list[Trial] = []
    for rung in ladder or LADDER:
        speed = tokens_per_second(rung)
        trial = Trial(rung, speed, speed * seconds, rung.params(vocab))
        trials.append(trial)
        if not trial.fits:
            break
    fitting = [t for t in trials if t.fits]
    return (fitting[-1] if fitting else trials[0]).rung, trials


def measure_step_seconds(cfg, steps: int = 2) -> float:
    """Seconds per optimizer step of `cfg`'s model and batch on this machine (cfg.device, cfg.dtype):
    real steps on random tokens, the median after one warm-up step."""
    import torch

    from miniglm.device import resolve_device, resolve_dtype
    from miniglm.model.model import MiniGLM
    from miniglm.train.step import Stepper, build_optimizer

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    model = MiniGLM(cfg.model).to(device).set_dropout(cfg.dropout)
    stepper = Stepper(model, build_optimizer(model, cfg, device), device, dtype, cfg.grad_accum_steps, cfg.grad_clip)
    gen = torch.Generator().manual_seed(0)
    vocab = cfg.model.vocab_size

    def batches():
        while True:
            x = torch.randint(0, vocab, (cfg.batch_size, cfg.block_size + 1), generator=gen).to(device)
            yield x[:, :-1], x[:, 1:], None

    it, times = batches(), []
    for _ in range(steps + 1):  # the first step warms up the allocator and kernels
        t0 = time.perf_counter()
        stepper.step(it, cfg.learning_rate)
        stepper.apply()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def measure_tokens_per_second(rung: Rung, device_name: str = "auto", vocab: int | None = None) -> float:
    """Training tokens per second of this rung on this machine."""
    from miniglm.config import TrainConfig, load_config

    cfg = load_config(TrainConfig, BASE_PRESET, [*rung.overrides(vocab), f"device={device_name}"])
    return cfg.batch_size * cfg.block_size * cfg.grad_accum_steps / measure_step_seconds(cfg)


def report(seconds: float, chosen: Rung, trials: list[Trial], vocab: int | None = None) -> str:
    """Lines that show the choice: each measured rung, its speed and tokens per parameter."""
    lines = [f"recipe for {seconds / 60:g} min: the largest model that trains on at least "
             f"{TOKENS_PER_PARAM:g} tokens per parameter (see miniglm/train/recipe.py)"]
    for t in trials:
        mark = "->" if t.rung is chosen else "  "
        lines.append(f"  {mark} {t.rung.describe(vocab)}: {t.tokens_per_second:,.0f} tokens/s measured, "
                     f"{t.tokens / 1e6:.2f}M tokens = {t.tokens_per_param:.2f} per parameter"
                     f"{'' if t.fits else ' (too few)'}")
    return "\n".join(lines)
