"""Model FLOPs utilisation: FLOPs per trained token, and the peak FLOP/s of the device it runs on.

MFU = (tokens/s * FLOPs per token) / peak FLOP/s, as in the PaLM paper and nanoGPT.

FLOPs per token (forward + backward) = 6 * N + 12 * L * C * T, where N counts every parameter
that takes part in a matrix multiply (all of them except a lookup-only embedding: with tied
weights the shared matrix is counted once, as the LM head, because the lookup costs nothing), and
12 * L * C * T is the attention score/value work (C = H * D) at context T, counted in full as
PaLM does even though causal attention skips half of it.

Peak FLOP/s, in order: the environment variable `MINIGLM_PEAK_FLOPS` (FLOP/s, e.g. `989e12`);
for CUDA in bf16/fp16 the vendor's dense tensor-core peak looked up by device name; otherwise a
measured peak: the best rate of square matrix multiplies in the training dtype (through
`kernels.matmul_nt`, i.e. the fastest GEMM the model uses: oneDNN for float32 on CPUs where it
beats the default BLAS), measured once per process (about half a second) and cached. On a CPU the measured peak is the honest reference: it
is what the BLAS library reaches on this machine, with the cores it has now.
"""

from __future__ import annotations

import os
import time

import torch

# Dense bf16/fp16 tensor-core peaks (FLOP/s); matched by substring of the device name, first hit wins.
CUDA_BF16_PEAKS: list[tuple[str, float]] = [
    ("B200", 2250e12), ("H200", 989e12), ("GH200", 989e12), ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H800", 989e12), ("A100", 312e12), ("A800", 312e12),
    ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12), ("T4", 65e12),
]

_measured: dict[tuple[str, torch.dtype], float] = {}


def flops_per_token(num_matmul_params: int, num_layers: int, hidden_size: int, block_size: int) -> int:
    """Training FLOPs (forward + backward) for one token at context `block_size`."""
    return 6 * num_matmul_params + 12 * num_layers * hidden_size * block_size


def model_flops_per_token(model: torch.nn.Module, block_size: int) -> int:
    """`flops_per_token` for a MiniGLM (or anything with the same config fields)."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    if not cfg.tie_word_embeddings:  # the input embedding is a lookup, not a matmul
        n -= cfg.vocab_size * cfg.hidden_size
    return flops_per_token(n, cfg.num_hidden_layers, cfg.hidden_size, block_size)


def measure_matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        seconds: float = 0.4) -> float:
    """Best FLOP/s of square matmuls in `dtype` on `device` (cached for the process)."""
    device = torch.device(device)
    key = (device.type, dtype)
    if key in _measured:
        return _measured[key]
    from miniglm.model.kernels import (
        matmul_nt,  # the fastest GEMM the model itself uses (oneDNN for float32 CPU)
    )

    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):  # warm-up: thread pools, kernel selection
        matmul_nt(a, b)
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            matmul_nt(a, b)
        sync()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    _measured[key] = best
    return best


def peak_flops(device: torch.device | str, dtype: torch.dtype) -> tuple[float, str]:
    """(peak FLOP/s, where the number comes from) for training in `dtype` on `device`."""
    env = os.environ.get("MINIGLM_PEAK_FLOPS")
    if env:
        try:
            return float(env), "MINIGLM_PEAK_FLOPS"
        except ValueError:
            pass
    device = torch.device(device)
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        name = torch.cuda.get_device_name(device)
        for key, peak in CUDA_BF16_PEAKS:
            if key in name:
                return peak, f"spec sheet ({name})"
    return measure_matmul_peak(device, dtype), f"measured {str(dtype).removeprefix('torch.')} matmul"
