"""One optimizer step: AdamW with decay on matrices (or Muon on the blocks' matrices and AdamW on the
rest, `optimizer = "muon"`), the warmup + cosine schedule, and `Stepper`.

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
from miniglm.device import resolve_dtype


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (>= 2-D: linear weights, embedding) and none on norm gains;
    with `cfg.optimizer == "muon"`, Muon takes the matrices inside the blocks instead, and the AdamW
    side learns at `cfg.adamw_lr_scale` times the scheduled rate (its groups' "lr_scale")."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type in ("cuda", "cpu")  # one kernel per step instead of one per tensor
    matrices = [p for p in params if p.dim() >= 2]
    gains = [p for p in params if p.dim() < 2]
    if cfg.optimizer == "muon":  # the blocks' matrices; the embedding and an untied head stay with AdamW
        blocks = {id(p) for name, p in model.named_parameters() if ".layers." in name and p.dim() == 2}
        scale = cfg.adamw_lr_scale
        adamw = torch.optim.AdamW([{"params": [p for p in matrices if id(p) not in blocks],
                                    "weight_decay": cfg.weight_decay, "lr_scale": scale},
                                   {"params": gains, "weight_decay": 0.0, "lr_scale": scale}],
                                  lr=cfg.learning_rate * scale, betas=(cfg.beta1, cfg.beta2), fused=fused)
        # Newton-Schulz in bfloat16 where the run computes in it (native bf16 hardware), else float32
        ns_dtype = torch.bfloat16 if resolve_dtype(cfg.dtype, device) == torch.bfloat16 else torch.float32
        muon = Muon([p for p in matrices if id(p) in blocks], lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                    ns_dtype=ns_dtype)
        return Optimizers(adamw, muon)
    groups = [{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": gains, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024) for 2-D weights: Nesterov momentum, then the update orthogonalized by
    five quintic Newton-Schulz steps and scaled by 0.2·sqrt(max(rows, cols)) so that AdamW's
    learning rate and weight decay carry over (Liu et al. 2025, "Muon is Scalable for LLM Training").

    The update is `torch.optim.Muon(adjust_lr_fn="match_rms_adamw")`'s, but Newton-Schulz runs in
    `ns_dtype`: `build_optimizer` passes bfloat16 (torch's choice) only when the run computes in
    bfloat16, i.e. on hardware that multiplies it natively, and float32 otherwise: CPUs without native
    bf16 emulate it at under 1 GFLOP/s (a 0.66M-parameter model's step took 0.56 s instead of 0.10 s
    on a 2-core AVX2 CPU). On a 2-core AVX-512 EPYC with native bf16 the bfloat16 Newton-Schulz of the
    budget recipe's 3 x 192 model took 23 ms instead of 51 (of a 0.20 s step under bf16 autocast)."""

    NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
    NS_STEPS = 5

    def __init__(self, params, lr: float, weight_decay: float, momentum: float = 0.95,
                 ns_dtype: torch.dtype | None = None):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})
        self.ns_dtype = ns_dtype  # None: the weights' own dtype

    @staticmethod
    def orthogonalize(updates: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Newton-Schulz on a stack (k, rows, cols) of updates with rows <= cols, each scaled to norm 1
        first, computed in `dtype` (None: the updates' own) and returned in the updates' dtype."""
        a, b, c = Muon.NS_COEFFICIENTS
        x = (updates / updates.norm(dim=(1, 2), keepdim=True).clamp(min=1e-7)).to(dtype or updates.dtype)
        for _ in range(Muon.NS_STEPS):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x.to(updates.dtype)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, decay, mom = group["lr"], group["weight_decay"], group["momentum"]
            wide: dict[torch.Size, list[tuple[torch.Tensor, torch.Tensor, bool]]] = {}  # shape -> (param, update, transposed)
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mom)
                update, tall = p.grad.lerp(buf, mom), p.size(0) > p.size(1)
                update = update.T if tall else update
                wide.setdefault(update.shape, []).append((p, update, tall))
            for shape, items in wide.items():  # one batched Newton-Schulz per shape: fewer, larger products
                ortho = self.orthogonalize(torch.stack([u for _, u, _ in items]), self.ns_dtype)
                for (p, _, tall), o in zip(items, ortho):
                    p.mul_(1 - lr * decay)
                    p.add_(o.T if tall else o, alpha=-lr * 0.2 * math.sqrt(max(shape)))


class Optimizers:
    """Several optimizers over disjoint parameters, driven as one (step, zero_grad, param_groups, state_dict)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("optimizers", ())) != len(self.optimizers):
            raise ValueError(f"optimizer state holds {len(state.get('optimizers', ()))} optimizers, "
                             f"this run has {len(self.optimizers)}")
        for o, s in zip(self.optimizers, state["optimizers"]):
            scales = [g.get("lr_scale") for g in o.param_groups]
            o.load_state_dict(s)
            for g, scale in zip(o.param_groups, scales):  # this run's rates, not the saved run's
                if scale is not None:
                    g["lr_scale"] = scale


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
        """Forward/backward `accum` micro-batches, clip, update; (mean loss, grad norm) as tensors.
        `lr` is the schedule's rate; a group with an "lr_scale" (Muon's AdamW side) takes that multiple."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
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
