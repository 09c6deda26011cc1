"""The ONE training loop, for pretraining and SFT: step, evaluate, log, checkpoint, resume, DDP.

    train(cfg, resume=False) -> final metrics

A step is `grad_accum_steps` micro-batches (forward under autocast, backward; DDP all-reduces only
on the last one, thanks to `no_sync`), gradient clipping, then AdamW (fused where available;
weight decay on matrices only) at the learning rate of a linear warmup + cosine decay to `min_lr`.
The loss is the model's masked mean cross-entropy, sum(mask * token_loss) / max(sum(mask), 1)
(`kernels.linear_cross_entropy`, reference `model.masked_cross_entropy`), with no mask
(pretraining) the plain mean; SFT feeds its `loss_mask` through the same step.

Run directory `cfg.out`: `config.json` (resolved config), `metrics.jsonl` (written by rank 0, one
flushed JSON line per event: "start", "train", "eval"), `checkpoints/step_XXXXXXX/` (the last
`keep_last`) and `checkpoints/best/` (lowest validation loss). A checkpoint holds the weights, the
optimizer state, the step, RNG states and the data position (`state.pt`, tensors and plain values
only), so `resume=True` continues the same run bit for bit on a CPU. SIGINT/SIGTERM save a
checkpoint at the end of the current step and stop; a NaN/inf loss raises `TrainingDiverged` and
leaves the last good checkpoint.

Distributed: run under `torchrun`; RANK/WORLD_SIZE/LOCAL_RANK come from the environment (see
`miniglm.device`), every rank draws different batches, only rank 0 writes.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from miniglm import checkpoint as ckpt
from miniglm.config import ModelConfig, TrainConfig, save_config
from miniglm.data import DataError, loader
from miniglm.device import (
    Dist,
    all_reduce_sum,
    barrier,
    resolve_dtype,
    setup_distributed,
    teardown_distributed,
    tune_cpu_allocator,
)
from miniglm.errors import UserError
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer
from miniglm.train.mfu import model_flops_per_token, peak_flops
from miniglm.train.run import (
    MetricsLog,
    StopSignals,
    latest_checkpoint,
    prepare_run_dir,
    rng_state,
    set_rng_state,
)

LN2 = math.log(2)


class TrainingDiverged(UserError, RuntimeError):
    """The loss (or gradient norm) became NaN or infinite."""


# --------------------------------------------------------------------------- optimisation


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (>= 2-D: linear weights, embedding) and none on norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = device.type in ("cuda", "cpu")  # one kernel per step instead of one per tensor
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of (0-based) step `step`: linear warmup, then cosine decay to `min_lr`."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


class Stepper:
    """One optimizer step over `accum` micro-batches; the part of training a benchmark times."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 dtype: torch.dtype, accum: int, grad_clip: float, ddp: bool = False):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.accum, self.grad_clip, self.ddp = accum, grad_clip, ddp
        self.autocast = dtype != torch.float32
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def step(self, batches, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward/backward `accum` micro-batches, clip, update; (mean loss, grad norm) as tensors."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            x, y, mask = next(batches)
            last = micro == self.accum - 1
            sync = nullcontext() if (last or not self.ddp) else self.model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
                    _, loss = self.model(x, y, mask)
                self.scaler.scale(loss / self.accum).backward()
            loss_sum += loss.detach().float()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip if self.grad_clip > 0 else math.inf)
        return loss_sum / self.accum, norm

    def apply(self) -> None:
        """Take the optimizer step prepared by `step` (split so a NaN can be caught in between)."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


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
        return loader.sft_val_batches(cfg.data, cfg.block_size, cfg.batch_size, cfg.eval_steps,
                                      dist.rank, dist.world_size, device)
    return loader.pretrain_val_batches(cfg.data, meta, cfg.block_size, cfg.batch_size, cfg.eval_steps,
                                       dist.rank, dist.world_size, device)


def train_batches(cfg: TrainConfig, meta: dict[str, Any], dist: Dist, device: torch.device):
    if cfg.mode == "sft":
        return loader.SFTBatches(cfg.data, cfg.block_size, cfg.batch_size, cfg.seed, dist.rank,
                                 dist.world_size, device)
    return loader.PretrainBatches(cfg.data, meta, cfg.block_size, cfg.batch_size, cfg.seed, dist.rank,
                                  dist.world_size, device)


def has_validation(cfg: TrainConfig, meta: dict[str, Any]) -> bool:
    """False for SFT data without validation rows; a DataError if val.bin cannot hold one window."""
    if cfg.mode == "sft":
        return len(loader.open_rows(cfg.data, "val", cfg.block_size)[0]) > 0
    next(iter(loader.pretrain_val_batches(cfg.data, meta, cfg.block_size, 1)))
    return True


def bits_per_char(val_loss: float, meta: dict[str, Any]) -> float | None:
    """Nats per token -> bits per character of the validation text (pretraining data only)."""
    if meta.get("kind") != "pretrain" or not meta.get("val_chars") or not meta.get("val_tokens"):
        return None
    return val_loss * meta["val_tokens"] / meta["val_chars"] / LN2


# --------------------------------------------------------------------------- the run: data, model, directory


def data_tokenizer(cfg: TrainConfig, meta: dict[str, Any]) -> Tokenizer:
    """The data directory's tokenizer, checked against its meta.json."""
    path = Path(cfg.data) / meta.get("tokenizer", "tokenizer.json")
    tok = Tokenizer.from_file(path)
    if tok.sha256 != meta["tokenizer_sha256"]:
        raise DataError(f"{path}: sha256 {tok.sha256[:12]} differs from tokenizer_sha256 "
                        f"{str(meta['tokenizer_sha256'])[:12]} in {Path(cfg.data) / 'meta.json'}")
    if tok.vocab_size != meta["vocab_size"]:
        raise DataError(f"{path}: {tok.vocab_size} tokens, but meta.json says vocab_size={meta['vocab_size']}")
    return tok


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
    if cfg.mode == "sft" and cfg.block_size > mcfg.max_position_embeddings:
        raise DataError(f"block_size={cfg.block_size} of the SFT rows exceeds the context of {source} "
                        f"(max_position_embeddings={mcfg.max_position_embeddings})")
    cfg = replace(cfg, model=mcfg)
    model = MiniGLM(mcfg)
    ckpt.load_weights(model, source)
    return model, cfg


def check_data_fits(cfg: TrainConfig, meta: dict[str, Any]) -> None:
    if cfg.mode == "sft" and meta.get("block_size") != cfg.block_size:
        raise DataError(f"block_size={cfg.block_size}, but the SFT rows in {cfg.data} have block_size="
                        f"{meta.get('block_size')} (meta.json); set --block_size {meta.get('block_size')} "
                        f"or re-run prepare-sft with --block-size {cfg.block_size}")


def describe_model(model: MiniGLM) -> str:
    c = model.config
    return (f"model: {model.num_params() / 1e6:.2f}M parameters ({model.num_params(True) / 1e6:.2f}M without "
            f"embeddings): {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, "
            f"intermediate {c.intermediate_size}, vocab {c.vocab_size}")


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
        return _train(cfg, resume, overwrite, stop_after, dist, device)
    finally:
        teardown_distributed()


def _train(cfg: TrainConfig, resume: bool, overwrite: bool, stop_after: Callable[[int], bool] | None,
           dist: Dist, device: torch.device) -> dict[str, Any]:
    master = dist.is_master
    say = print if master else (lambda *a, **k: None)
    run_dir = Path(cfg.out)
    meta = loader.read_meta(cfg.data, cfg.mode)
    check_data_fits(cfg, meta)
    has_val = has_validation(cfg, meta)
    if not has_val:
        say(f"{cfg.data}: no validation rows; training without evaluation (best = none)")
    tokenizer = data_tokenizer(cfg, meta)
    source = latest_checkpoint(run_dir) if resume else (ckpt.resolve_checkpoint(cfg.init_from)
                                                         if cfg.init_from else None)
    model, cfg = model_for_run(cfg, meta, source, resume)
    if master and not resume:
        prepare_run_dir(run_dir, overwrite)
    barrier(dist)
    dtype = resolve_dtype(cfg.dtype, device)
    if device.type == "cpu":
        tune_cpu_allocator()
    model.to(device)
    optimizer = build_optimizer(model, cfg, device)
    batches = train_batches(cfg, meta, dist, device)
    state: dict[str, Any] = {}
    if resume:
        state = ckpt.load_state(source)
        optimizer.load_state_dict(state["optimizer"])
        batches.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
    if master:
        save_config(cfg, run_dir / "config.json")
    log = MetricsLog(run_dir, master, cfg.tensorboard, state.get("step", 0) if resume else None)
    say(describe_model(model))
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps * dist.world_size
    say(f"{cfg.mode} on {device.type} x{dist.world_size} in {str(dtype).removeprefix('torch.')}: "
        f"{tokens_per_step:,} tokens per step" + (f", resuming {source}" if resume else "")
        + (f", initialised from {source}" if source and not resume else ""))
    if not resume:
        log.write({"type": "start", "mode": cfg.mode, "params": model.num_params(),
                   "non_embedding_params": model.num_params(non_embedding=True),
                   "init_from": str(source) if source else None, "device": device.type,
                   "dtype": str(dtype).removeprefix("torch."), "world_size": dist.world_size,
                   "tokens_per_step": tokens_per_step})

    net = torch.compile(model) if cfg.compile else model
    if dist.is_distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model.model.embed_tokens.sparse = False  # DDP insists on sparse gradients from a "sparse" module

        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    stepper = Stepper(net, optimizer, device, dtype, cfg.grad_accum_steps, cfg.grad_clip, dist.is_distributed)
    if state.get("scaler"):
        stepper.scaler.load_state_dict(state["scaler"])
    flops = model_flops_per_token(model, cfg.block_size)
    peak = peak_flops(device, dtype)[0] if master else 0.0

    step = state.get("step", 0)
    best = state.get("best_val_loss")
    interval_loss, interval_steps = state.get("interval_loss", 0.0), state.get("interval_steps", 0)
    elapsed0, t_start = state.get("elapsed", 0.0), time.perf_counter()
    timed_steps, timed_seconds, session_steps, session_seconds = 0, 0.0, 0, 0.0
    last: dict[str, Any] = {"loss": None, "val_loss": None, "val_ppl": None, "val_bpc": None}
    saved: Path | None = source if resume else None
    stopped_by = None

    def save(step: int) -> Path:
        state = {"step": step, "optimizer": optimizer.state_dict(), "loader": batches.state_dict(),
                 "rng": rng_state(), "best_val_loss": best, "elapsed": elapsed0 + time.perf_counter() - t_start,
                 "interval_loss": interval_loss, "interval_steps": interval_steps,
                 "scaler": stepper.scaler.state_dict()}
        extra = {"mode": cfg.mode, "tokens": step * tokens_per_step, "val_loss": last["val_loss"], "data": cfg.data}
        path = ckpt.save_checkpoint(run_dir / "checkpoints" / f"step_{step:07d}", model, tokenizer, step,
                                    state, extra)
        ckpt.prune_checkpoints(run_dir, cfg.keep_last)
        return path

    if step >= cfg.max_steps:
        say(f"the run is already at step {step} = max_steps; pass a larger --max_steps to continue it")
    def run_eval(step: int) -> None:
        nonlocal best
        val_loss, count = evaluate(model, val_batches(cfg, meta, dist, device), device, dtype, dist)
        last.update(val_loss=val_loss, val_ppl=math.exp(min(val_loss, 700.0)), val_bpc=bits_per_char(val_loss, meta))
        log.write({"type": "eval", "step": step, "tokens": step * tokens_per_step, "val_loss": val_loss,
                   "val_ppl": last["val_ppl"], "val_bpc": last["val_bpc"], "val_tokens": count})
        bpc = f", {last['val_bpc']:.4f} bits/char" if last["val_bpc"] is not None else ""
        if master:
            bar.write(f"step {step}: val loss {val_loss:.4f}, ppl {last['val_ppl']:.2f}{bpc}")
        if master and (best is None or val_loss < best):
            best = val_loss
            ckpt.save_checkpoint(run_dir / "checkpoints" / "best", model, tokenizer, step, None,
                                 {"mode": cfg.mode, "tokens": step * tokens_per_step, "val_loss": val_loss,
                                  "val_bpc": last["val_bpc"], "data": cfg.data})

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (cfg.progress and master), unit="step",
               dynamic_ncols=True, desc=cfg.mode)
    model.train()
    try:
        with StopSignals() as signals:
            while step < cfg.max_steps:
                t0 = time.perf_counter()
                lr = lr_at(step, cfg)
                loss_t, norm_t = stepper.step(batches, lr)
                wants_stop = bool(signals.signum) or (stop_after is not None and stop_after(step + 1))
                flags = all_reduce_sum(torch.stack([loss_t, torch.tensor(float(wants_stop), device=device)]), dist)
                loss, norm = flags[0].item() / dist.world_size, norm_t.item()
                if not math.isfinite(loss) or (not math.isfinite(norm) and not stepper.scaler.is_enabled()):
                    raise TrainingDiverged(
                        f"loss {loss:.4g}, gradient norm {norm:.4g} at step {step + 1} (lr {lr:.3g}): training "
                        f"diverged; stopped before applying this step. Last good checkpoint: "
                        f"{saved or 'none yet'}. Try a lower learning_rate"
                        + (" or dtype=float32" if dtype != torch.float32 else ""))
                stepper.apply()
                step += 1
                seconds = time.perf_counter() - t0
                timed_steps, timed_seconds = timed_steps + 1, timed_seconds + seconds
                session_steps, session_seconds = session_steps + 1, session_seconds + seconds
                interval_loss, interval_steps = interval_loss + loss, interval_steps + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                stopping = flags[1].item() > 0
                if step % cfg.log_interval == 0 or step == cfg.max_steps:
                    tps = timed_steps * tokens_per_step / timed_seconds
                    last["loss"] = interval_loss / interval_steps
                    log.write({"type": "train", "step": step, "tokens": step * tokens_per_step,
                               "loss": last["loss"], "lr": lr, "grad_norm": norm, "tokens_per_sec": tps,
                               "mfu": tps / dist.world_size * flops / peak if peak else None,
                               "elapsed": elapsed0 + time.perf_counter() - t_start})
                    interval_loss, interval_steps, timed_steps, timed_seconds = 0.0, 0, 0, 0.0
                if has_val and ((cfg.eval_interval and step % cfg.eval_interval == 0) or step == cfg.max_steps):
                    run_eval(step)
                if step % cfg.checkpoint_interval == 0 or step == cfg.max_steps or stopping:
                    if master:
                        saved = save(step)
                    barrier(dist)
                if stopping:
                    stopped_by = signal.Signals(signals.signum).name if signals.signum else "stop_after"
                    say(f"stopped at step {step}; checkpoint {saved}; continue with --resume")
                    break
    finally:
        bar.close()
        log.close()
    return {"step": step, "tokens": step * tokens_per_step, "loss": last["loss"], "val_loss": last["val_loss"],
            "val_ppl": last["val_ppl"], "val_bpc": last["val_bpc"], "best_val_loss": best,
            "tokens_per_sec": session_steps * tokens_per_step / session_seconds if session_seconds else None,
            "elapsed": elapsed0 + time.perf_counter() - t_start, "interrupted": stopped_by,
            "signal": signals.signum, "checkpoint": str(saved) if saved else None, "run_dir": str(run_dir)}
