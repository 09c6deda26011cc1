"""One optimizer step: AdamW with decay on matrices, the warmup + cosine schedule, and `Stepper`.

`Stepper.step` runs `accum` micro-batches (forward under autocast, backward; DDP all-reduces only
on the last one, thanks to `no_sync`), clips the gradient norm, and leaves the update to `apply`,
so the trainer can refuse a NaN step before it touches the weights. It is the part of training a
benchmark times (bench/train.py) and the budgeted demo calibrates on.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from miniglm.config import TrainConfig


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
