"""The ONE training loop, for pretraining and SFT: step, evaluate, log, checkpoint, resume, DDP.

    train(cfg, resume=False) -> final metrics

A step (`miniglm.train.step`) is `grad_accum_steps` micro-batches, gradient clipping, then AdamW
at the learning rate of a linear warmup + cosine decay to `min_lr`. The loss is the model's masked
mean cross-entropy, sum(mask * token_loss) / max(sum(mask), 1) (`kernels.linear_cross_entropy`),
with no mask (pretraining) the plain mean; SFT feeds its `loss_mask` through the same step.

The run is a `Run` object built from its named pieces (data, model, optimizer, batches, log) and
driven by a short loop: `step` (one optimizer step, NaN check), `log_step`, `evaluate_now` (and
the best checkpoint), `save`. Its mutable progress is one small `Progress` record, which is also
what `state.pt` restores. The run directory (`cfg.out`, see `miniglm.train.run`): config.json,
metrics.jsonl (rank 0), `checkpoints/step_XXXXXXX/` (the last `keep_last`) and `checkpoints/best/`
(lowest validation loss). A checkpoint holds the weights, the optimizer state, the progress, RNG
states and the data position (tensors and plain values only), so `resume=True` continues the same
run bit for bit on a CPU. SIGINT/SIGTERM save a checkpoint at the end of the current step and
stop; a NaN/inf loss raises `TrainingDiverged` and leaves the last good checkpoint. With
`max_minutes`, `miniglm.train.budget` refits max_steps (and so the schedule) to the measured speed. SFT rows
carry their length: SFT takes `block_size` from the data's meta.json.

Distributed: run under `torchrun`; RANK/WORLD_SIZE/LOCAL_RANK come from the environment (see
`miniglm.device`), every rank draws different batches, only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import signal
import time
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from miniglm import checkpoint as ckpt
from miniglm.config import ModelConfig, TrainConfig, save_config
from miniglm.data import DataError, loader, store
from miniglm.device import (
    Dist,
    all_reduce_sum,
    barrier,
    setup_distributed,
    teardown_distributed,
    tune_cpu_allocator,
)
from miniglm.errors import UserError
from miniglm.evaluate.heldout import bits_per_char
from miniglm.model.kernels import use_float32_matmul
from miniglm.model.model import MiniGLM
from miniglm.train.budget import TimeBudget
from miniglm.train.mfu import model_flops_per_token, peak_flops
from miniglm.train.run import (
    MetricsLog,
    StopSignals,
    check_run_dir,
    kernels_record,
    latest_checkpoint,
    prepare_run_dir,
    resolve_kernels,
    rng_state,
    set_rng_state,
)
from miniglm.train.step import Stepper, build_optimizer, lr_at


class TrainingDiverged(UserError, RuntimeError):
    """The loss (or gradient norm) became NaN or infinite."""


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: MiniGLM, batches, device: torch.device, dtype: torch.dtype, dist: Dist) -> tuple[float, int]:
    """(mean loss over all counted target tokens, number of counted tokens), summed over ranks."""
    was_training = model.training
    model.eval()
    acc = torch.float64 if device.type != "mps" else torch.float32
    totals = torch.zeros(2, dtype=acc, device=device)  # [sum of token losses, token count]
    for x, y, mask in batches:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            _, loss = model(x, y, mask)
        count = torch.as_tensor(y.numel() if mask is None else mask.sum(), dtype=acc, device=device)
        totals += torch.stack([loss.to(acc) * count, count])
    all_reduce_sum(totals, dist)
    model.train(was_training)
    total, count = totals.tolist()
    return (total / count if count else float("nan")), int(count)


def val_batches(cfg: TrainConfig, meta: dict[str, Any], dist: Dist, device: torch.device):
    if cfg.mode == "sft":
        return loader.sft_val_batches(cfg.data, meta, cfg.batch_size, cfg.eval_steps, dist.rank,
                                      dist.world_size, device)
    return loader.pretrain_val_batches(cfg.data, meta, cfg.block_size, cfg.batch_size, cfg.eval_steps,
                                       dist.rank, dist.world_size, device)


def train_batches(cfg: TrainConfig, meta: dict[str, Any], dist: Dist, device: torch.device):
    if cfg.mode == "sft":
        return loader.SFTBatches(cfg.data, meta, cfg.batch_size, cfg.seed, dist.rank, dist.world_size, device)
    return loader.PretrainBatches(cfg.data, meta, cfg.block_size, cfg.batch_size, cfg.seed, dist.rank,
                                  dist.world_size, device)


def has_validation(cfg: TrainConfig, meta: dict[str, Any]) -> bool:
    """False for SFT data without validation rows; a DataError if val.bin cannot hold one window."""
    if cfg.mode == "sft":
        return len(store.open_rows(cfg.data, "val", meta)[0]) > 0
    next(iter(loader.pretrain_val_batches(cfg.data, meta, cfg.block_size, 1)))
    return True


def val_bits_per_char(val_loss: float, meta: dict[str, Any]) -> float | None:
    """Nats per token -> bits per character of the validation text (pretraining data only)."""
    if meta.get("kind") != "pretrain" or not meta.get("val_tokens"):
        return None
    return bits_per_char(val_loss * meta["val_tokens"], meta.get("val_chars"))


# --------------------------------------------------------------------------- the run: data, model, directory


def config_diff(a: ModelConfig, b: ModelConfig) -> str:
    return ", ".join(f"{k}: {v} vs {getattr(b, k)}" for k, v in asdict(a).items() if getattr(b, k) != v)


def model_for_run(cfg: TrainConfig, meta: dict[str, Any], source: Path | None,
                  resuming: bool) -> tuple[MiniGLM, TrainConfig]:
    """A fresh model (vocabulary from the data), or one loaded strictly from `source`."""
    vocab = meta["vocab_size"]
    if cfg.model.vocab_size not in (0, vocab):
        raise DataError(f"model.vocab_size={cfg.model.vocab_size}, but the tokenizer of {cfg.data} has "
                        f"{vocab} tokens (leave model.vocab_size at 0 to take it from the data)")
    wanted = replace(cfg.model, vocab_size=vocab)
    if source is None:
        cfg = replace(cfg, model=wanted)
        torch.manual_seed(cfg.seed)
        return MiniGLM(cfg.model), cfg
    cmeta = ckpt.read_meta(source)
    if cmeta.get("tokenizer_sha256") != meta["tokenizer_sha256"]:
        raise ckpt.CheckpointError(
            f"{source}: trained with tokenizer {str(cmeta.get('tokenizer_sha256'))[:12]}, but {cfg.data} was "
            f"prepared with tokenizer {meta['tokenizer_sha256'][:12]} (prepare the data with "
            f"--tokenizer {source / 'tokenizer.json'})")
    mcfg = ckpt.model_config_of(cmeta, source)
    if resuming and mcfg != wanted:
        raise ckpt.CheckpointError(f"{source}: the checkpoint's model differs from the config "
                                   f"(checkpoint vs config: {config_diff(mcfg, wanted)})")
    if cfg.block_size > mcfg.max_position_embeddings:
        raise DataError(f"block_size={cfg.block_size} of {cfg.data} exceeds the context of {source} "
                        f"(max_position_embeddings={mcfg.max_position_embeddings})")
    cfg = replace(cfg, model=mcfg)
    model = MiniGLM(mcfg)
    ckpt.load_weights(model, source)
    return model, cfg


FALLBACK_SFT_RATES = (5e-4, 5e-5)  # learning_rate = 0 from a checkpoint without a training config


def inherit_learning_rate(cfg: TrainConfig, source: Path | None, say: Callable[..., None]) -> TrainConfig:
    """learning_rate = 0 (the sft preset's): the peak and final rates of the --init-from run, and the
    optimizer they were set for (a Muon rate is not an AdamW one), with its AdamW side's scale.

    Fine-tuning a small model pretrained for minutes at the rate it was pretrained with fitted the
    held-out answers better than a quarter of it (bench/README.md, "Answers after SFT"), and a
    rate that follows the run scales with the model (each preset's rate falls with its width). A
    checkpoint without a training run around it (an imported Hugging Face directory) gets
    FALLBACK_SFT_RATES. The resolved rates are what config.json records, so --resume keeps them."""
    if cfg.learning_rate > 0:
        return cfg
    run = ckpt.run_dir_of(source) if source is not None else None
    saved = run / "config.json" if run is not None else None
    if saved is not None and saved.is_file():
        try:
            saved_cfg = json.loads(saved.read_text(encoding="utf-8"))
            rates = float(saved_cfg["learning_rate"]), float(saved_cfg["min_lr"])
            optimizer = saved_cfg.get("optimizer", "adamw")  # runs from before the choice existed used AdamW
            scale = float(saved_cfg.get("adamw_lr_scale", 1.0))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{saved}: no learning_rate/min_lr to take for learning_rate = 0 ({e}); "
                            "set --learning_rate") from None
        if not 0 <= rates[1] <= rates[0] or rates[0] <= 0 or scale <= 0:
            raise DataError(f"{saved}: learning_rate {rates[0]}, min_lr {rates[1]}, adamw_lr_scale {scale}: "
                            "not usable; set --learning_rate")
        if optimizer not in (known := typing.get_args(typing.get_type_hints(TrainConfig)["optimizer"])):
            raise DataError(f"{saved}: optimizer {optimizer!r}: not one of {', '.join(known)}; set --learning_rate")
        side = f" (AdamW side x{scale:g})" if scale != 1 else ""
        say(f"learning rate: {rates[0]:g} -> {rates[1]:g} with {optimizer}{side}, the --init-from run's ({saved})")
    else:
        rates, optimizer, scale = FALLBACK_SFT_RATES, cfg.optimizer, cfg.adamw_lr_scale
        say(f"learning rate: {rates[0]:g} -> {rates[1]:g} (--init-from {cfg.init_from} has no training config "
            "to take them from)")
    return replace(cfg, learning_rate=rates[0], min_lr=rates[1], optimizer=optimizer,
                   adamw_lr_scale=scale if optimizer == "muon" else 1.0)


def fit_to_data(cfg: TrainConfig, meta: dict[str, Any]) -> TrainConfig:
    """SFT rows have a fixed length (meta.json `block_size`): the run uses it, not the config's."""
    if cfg.mode != "sft":
        return cfg
    return replace(cfg, block_size=meta["block_size"], model=replace(
        cfg.model, max_position_embeddings=max(cfg.model.max_position_embeddings, meta["block_size"])))


def describe_model(model: MiniGLM) -> str:
    c = model.config
    return (f"model: {model.num_params() / 1e6:.2f}M parameters ({model.num_params(True) / 1e6:.2f}M without "
            f"embeddings): {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, "
            f"intermediate {c.intermediate_size}, vocab {c.vocab_size}")


@dataclass
class Progress:
    """What changes as a run goes on; restored from `state.pt` on resume."""

    step: int = 0
    best_val_loss: float | None = None
    interval_loss: float = 0.0  # summed since the last metrics line
    interval_steps: int = 0
    elapsed: float = 0.0  # seconds of training before this session
    last: dict[str, Any] = field(default_factory=lambda: {"loss": None, "val_loss": None, "val_ppl": None,
                                                          "val_bpc": None})

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "best_val_loss": self.best_val_loss, "interval_loss": self.interval_loss,
                "interval_steps": self.interval_steps}


class Run:
    """One training run: its config, data, model, optimizer, batches, log and progress."""

    def __init__(self, cfg: TrainConfig, resume: bool, overwrite: bool, dist: Dist, device: torch.device):
        self.dist, self.device, self.master = dist, device, dist.is_master
        self.say = print if self.master else (lambda *a, **k: None)
        self.run_dir = Path(cfg.out)
        self.meta = store.read_meta(cfg.data, cfg.mode)
        cfg = fit_to_data(cfg, self.meta)
        self.has_val = has_validation(cfg, self.meta)
        if not self.has_val:
            self.say(f"{cfg.data}: no validation rows; training without evaluation (best = none)")
        self.tokenizer = store.load_tokenizer(cfg.data, self.meta)
        if self.master:  # before anything is read from or written to it
            check_run_dir(self.run_dir)
        source = latest_checkpoint(self.run_dir) if resume else (
            ckpt.resolve_checkpoint(cfg.init_from) if cfg.init_from else None)
        self.model, self.cfg = model_for_run(cfg, self.meta, source, resume)
        self.cfg = inherit_learning_rate(self.cfg, source, self.say)
        if self.master and not resume:
            prepare_run_dir(self.run_dir, overwrite)
        barrier(dist)
        # dtype and GEMM routine: the checkpoint's recorded choice on resume, so results match bit for bit
        self.cfg, self.dtype = resolve_kernels(self.cfg, device, ckpt.read_meta(source).get("kernels") if resume else None)
        self._matmul_before = use_float32_matmul(self.cfg.matmul)
        if device.type == "cpu":
            tune_cpu_allocator()
        self.model.to(device).set_dropout(self.cfg.dropout)
        self.optimizer = build_optimizer(self.model, self.cfg, device)
        self.batches = train_batches(self.cfg, self.meta, dist, device)
        self.progress, state = Progress(), {}
        if resume:
            state = ckpt.load_state(source)
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (KeyError, ValueError) as e:
                raise ckpt.CheckpointError(f"{source}: its optimizer state does not fit optimizer = "
                                           f"{self.cfg.optimizer} ({e}); resume with the run's own optimizer") from None
            self.batches.load_state_dict(state["loader"])
            set_rng_state(state["rng"])
            self.progress = Progress(state.get("step", 0), state.get("best_val_loss"), state.get("interval_loss", 0.0),
                                     state.get("interval_steps", 0), state.get("elapsed", 0.0))
        self.saved: Path | None = source if resume else None
        self.tokens_per_step = self.cfg.batch_size * self.cfg.block_size * self.cfg.grad_accum_steps * dist.world_size
        self._open_log(resume, source)
        self.stepper = Stepper(self._wrap(), self.optimizer, device, self.dtype, self.cfg.grad_accum_steps,
                               self.cfg.grad_clip, dist.is_distributed)
        if state.get("scaler"):
            self.stepper.scaler.load_state_dict(state["scaler"])
        self.flops = model_flops_per_token(self.model, self.cfg.block_size)
        self.peak = peak_flops(device, self.dtype)[0] if self.master else 0.0
        self.t_start = time.perf_counter()

    def _open_log(self, resume: bool, source: Path | None) -> None:
        cfg, model = self.cfg, self.model
        if self.master:
            save_config(cfg, self.run_dir / "config.json")
        self.log = MetricsLog(self.run_dir, self.master, cfg.tensorboard, self.progress.step if resume else None)
        self.say(describe_model(model))
        self.say(f"{cfg.mode} on {self.device.type} x{self.dist.world_size} in {str(self.dtype).removeprefix('torch.')}: "
                 f"{self.tokens_per_step:,} tokens per step" + (f", resuming {source}" if resume else "")
                 + (f", initialised from {source}" if source and not resume else ""))
        if not resume:
            self.log.write({"type": "start", "mode": cfg.mode, "params": model.num_params(),
                            "non_embedding_params": model.num_params(non_embedding=True),
                            "init_from": str(source) if source else None, "device": self.device.type,
                            "dtype": str(self.dtype).removeprefix("torch."), "world_size": self.dist.world_size,
                            "tokens_per_step": self.tokens_per_step})

    def _wrap(self) -> torch.nn.Module:
        """The module the step runs: compiled and/or wrapped for DDP as configured."""
        net = torch.compile(self.model) if self.cfg.compile else self.model
        if self.dist.is_distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model.model.embed_tokens.sparse = False  # DDP insists on sparse gradients from a "sparse" module
            net = DDP(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return net

    @property
    def elapsed(self) -> float:
        return self.progress.elapsed + time.perf_counter() - self.t_start

    def clock(self, step_seconds: float) -> tuple[float, float]:
        """(elapsed, step seconds), averaged over ranks so a time budget stops every rank at the same step."""
        t = all_reduce_sum(torch.tensor([self.elapsed, step_seconds], device=self.device),
                           self.dist) / self.dist.world_size
        return t[0].item(), t[1].item()

    def step(self, lr: float, wants_stop: Callable[[], bool]) -> tuple[float, float, bool]:
        """One optimizer step; (mean loss, grad norm, whether any rank asked to stop)."""
        loss_t, norm_t = self.stepper.step(self.batches, lr)
        flags = all_reduce_sum(torch.stack([loss_t, torch.tensor(float(wants_stop()), device=self.device)]),
                               self.dist)
        loss, norm = flags[0].item() / self.dist.world_size, norm_t.item()
        if not math.isfinite(loss) or (not math.isfinite(norm) and not self.stepper.scaler.is_enabled()):
            raise TrainingDiverged(
                f"loss {loss:.4g}, gradient norm {norm:.4g} at step {self.progress.step + 1} (lr {lr:.3g}): "
                f"training diverged; stopped before applying this step. Last good checkpoint: "
                f"{self.saved or 'none yet'}. Try a lower learning_rate"
                + (" or dtype=float32" if self.dtype != torch.float32 else ""))
        self.stepper.apply()
        self.progress.step += 1
        return loss, norm, flags[1].item() > 0

    def log_step(self, loss: float, lr: float, norm: float, timer: _Timer) -> None:
        p = self.progress
        p.interval_loss, p.interval_steps = p.interval_loss + loss, p.interval_steps + 1
        if p.step % self.cfg.log_interval and p.step != self.cfg.max_steps:
            return
        tps = timer.take() * self.tokens_per_step
        p.last["loss"] = p.interval_loss / p.interval_steps
        self.log.write({"type": "train", "step": p.step, "tokens": p.step * self.tokens_per_step,
                        "loss": p.last["loss"], "lr": lr, "grad_norm": norm, "tokens_per_sec": tps,
                        "mfu": tps / self.dist.world_size * self.flops / self.peak if self.peak else None,
                        "elapsed": self.elapsed})
        p.interval_loss, p.interval_steps = 0.0, 0

    def evaluate_now(self, write: Callable[[str], None]) -> None:
        """Validation loss (all ranks), logged; a new best is saved as checkpoints/best."""
        p, cfg = self.progress, self.cfg
        val_loss, count = evaluate(self.model, val_batches(cfg, self.meta, self.dist, self.device), self.device,
                                   self.dtype, self.dist)
        p.last.update(val_loss=val_loss, val_ppl=math.exp(min(val_loss, 700.0)),
                      val_bpc=val_bits_per_char(val_loss, self.meta))
        self.log.write({"type": "eval", "step": p.step, "tokens": p.step * self.tokens_per_step,
                        "val_loss": val_loss, "val_ppl": p.last["val_ppl"], "val_bpc": p.last["val_bpc"],
                        "val_tokens": count})
        bpc = f", {p.last['val_bpc']:.4f} bits/char" if p.last["val_bpc"] is not None else ""
        if self.master:
            write(f"step {p.step}: val loss {val_loss:.4f}, ppl {p.last['val_ppl']:.2f}{bpc}")
        if self.master and (p.best_val_loss is None or val_loss < p.best_val_loss):
            p.best_val_loss = val_loss
            ckpt.save_checkpoint(self.run_dir / "checkpoints" / "best", self.model, self.tokenizer, p.step, None,
                                 {"mode": cfg.mode, "tokens": p.step * self.tokens_per_step, "val_loss": val_loss,
                                  "val_bpc": p.last["val_bpc"], "data": cfg.data})

    def save(self) -> None:
        """A step checkpoint on rank 0 (every rank waits for it)."""
        p = self.progress
        if self.master:
            state = {**p.state(), "optimizer": self.optimizer.state_dict(), "loader": self.batches.state_dict(),
                     "rng": rng_state(), "elapsed": self.elapsed, "scaler": self.stepper.scaler.state_dict()}
            extra = {"mode": self.cfg.mode, "tokens": p.step * self.tokens_per_step,
                     "val_loss": p.last["val_loss"], "data": self.cfg.data, **kernels_record(self.cfg)}
            self.saved = ckpt.save_checkpoint(self.run_dir / "checkpoints" / f"step_{p.step:07d}", self.model,
                                              self.tokenizer, p.step, state, extra)
            ckpt.prune_checkpoints(self.run_dir, self.cfg.keep_last)
        barrier(self.dist)

    def close(self) -> None:
        self.log.close()
        use_float32_matmul(self._matmul_before)


class _Timer:
    """Seconds of training steps since the last `take` (for tokens/s), and over the whole session."""

    def __init__(self):
        self.steps = self.seconds = self.session_steps = self.session_seconds = 0

    def add(self, seconds: float) -> None:
        self.steps, self.seconds = self.steps + 1, self.seconds + seconds
        self.session_steps, self.session_seconds = self.session_steps + 1, self.session_seconds + seconds

    def take(self) -> float:
        """Steps per second since the last call."""
        rate = self.steps / self.seconds
        self.steps = self.seconds = 0
        return rate


# --------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
          stop_after: Callable[[int], bool] | None = None) -> dict[str, Any]:
    """Train per `cfg` into the run directory `cfg.out`; returns the final metrics.

    `resume` continues the run in `cfg.out` from its latest checkpoint; `overwrite` replaces a run
    that is there. `stop_after(step)` is asked after every step; True stops the run the way
    SIGINT does (checkpoint, then return with "interrupted" set).
    """
    dist, device = setup_distributed(cfg.device)
    try:
        run = Run(cfg, resume, overwrite, dist, device)
        try:
            return _loop(run, stop_after)
        finally:
            run.close()
    finally:
        teardown_distributed()


def _loop(run: Run, stop_after: Callable[[int], bool] | None) -> dict[str, Any]:
    cfg, p, timer = run.cfg, run.progress, _Timer()
    if p.step >= cfg.max_steps:
        run.say(f"the run is already at step {p.step} = max_steps; pass a larger --max_steps to continue it")
    bar = tqdm(total=cfg.max_steps, initial=p.step, disable=not (cfg.progress and run.master), unit="step",
               dynamic_ncols=True, desc=cfg.mode)
    stopped_by = None
    budget = TimeBudget(cfg.max_minutes, p.step) if cfg.max_minutes else None
    run.model.train()
    try:
        with StopSignals() as signals:
            while p.step < cfg.max_steps:
                t0, lr = time.perf_counter(), lr_at(p.step, cfg)
                loss, norm, stopping = run.step(lr, lambda: bool(signals.signum) or (
                    stop_after is not None and stop_after(p.step + 1)))
                timer.add(time.perf_counter() - t0)
                if budget and (refit := budget.after_step(cfg, p.step, *run.clock(time.perf_counter() - t0))):
                    cfg = run.cfg = refit  # the schedule (lr_at) and the end of the loop follow the new plan
                    bar.total = cfg.max_steps
                    if run.master:
                        bar.write(budget.describe(cfg) if p.step < cfg.max_steps else f"time budget spent at step {p.step}")
                        save_config(cfg, run.run_dir / "config.json")
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                run.log_step(loss, lr, norm, timer)
                if run.has_val and ((cfg.eval_interval and p.step % cfg.eval_interval == 0) or p.step == cfg.max_steps):
                    run.evaluate_now(bar.write)
                if p.step % cfg.checkpoint_interval == 0 or p.step == cfg.max_steps or stopping:
                    run.save()
                if stopping:
                    stopped_by = signal.Signals(signals.signum).name if signals.signum else "stop_after"
                    run.say(f"stopped at step {p.step}; checkpoint {run.saved}; continue with --resume")
                    break
    finally:
        bar.close()
    return {"step": p.step, "tokens": p.step * run.tokens_per_step, "loss": p.last["loss"],
            "val_loss": p.last["val_loss"], "val_ppl": p.last["val_ppl"], "val_bpc": p.last["val_bpc"],
            "best_val_loss": p.best_val_loss,
            "tokens_per_sec": timer.session_steps * run.tokens_per_step / timer.session_seconds
            if timer.session_seconds else None,
            "elapsed": run.elapsed, "interrupted": stopped_by, "signal": signals.signum,
            "checkpoint": str(run.saved) if run.saved else None, "run_dir": str(run.run_dir)}
