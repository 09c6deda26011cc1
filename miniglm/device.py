"""Where training runs: the device, the autocast dtype, and this process's place in a torchrun job.

- `resolve_device("auto")`: CUDA if available, else the CPU (MPS only when asked for).
- `resolve_dtype("auto", device)`: bfloat16 on CUDA GPUs that support it (float16 with loss
  scaling on older ones); on a CPU, bfloat16 only if it has native bf16 instructions (the
  avx512_bf16 or amx_bf16 flag in /proc/cpuinfo), else float32. A fixed rule, not a timing, so
  every process of a run decides the same (the trainer also records the choice and reuses it on
  resume). With native bf16 a CPU multiplies bf16 matrices about twice as fast as float32; without
  it bf16 is emulated and far slower (figures in bench/README.md).
- `tune_cpu_allocator()`: on Linux/glibc, keeps freed memory in the process instead of handing
  it back to the kernel after every step. Training frees and re-allocates the same large buffers
  every step (logit chunks, weight casts, gradients); returned memory must be page-faulted in
  again at a cost that showed in every CPU training step (bench/README.md). Called by the
  trainer when it trains on a CPU.
- `setup_distributed(device)`: under `torchrun` (WORLD_SIZE > 1 in the environment) joins the
  process group, NCCL on GPUs and gloo on CPUs; each rank on GPU `LOCAL_RANK`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass

import torch

from miniglm.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bf16 matmul instructions


class DeviceError(UserError, RuntimeError):
    """A device or dtype that this machine cannot provide."""


@dataclass(frozen=True)
class Dist:
    """This process's rank among `world_size` training processes (1 = not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device=cuda, but no CUDA GPU is available (use device=cpu or auto)")
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device=mps, but MPS is not available (use device=cpu or auto)")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device, scoring: bool = False, quantize: str = "none") -> torch.dtype:
    """The ONE dtype rule. `name` is the config's dtype; "auto" picks per device (module docstring).

    scoring: for held-out losses and perplexities, "auto" stays float32 on a CPU even where bf16
    is faster: scoring is a small cost next to training, and its numbers should not move with
    the CPU's instruction set. quantize: "int8" weights run on a CPU with float32 activations.
    """
    if quantize != "none":
        if device.type != "cpu":
            raise DeviceError(f"quantize={quantize} runs on the CPU; this run's device is {device.type} "
                              f"(use device=cpu, or quantize=none)")
        if name not in ("auto", "float32"):
            raise DeviceError(f"quantize={quantize} runs float32 activations: dtype={name} cannot be combined "
                              f"with it (use dtype=auto or float32)")
        return torch.float32
    if name != "auto":
        dtype = DTYPES[name]
        if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise DeviceError("dtype=bfloat16, but this GPU does not support it (use float16 or float32)")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and not scoring:
        return torch.bfloat16 if cpu_prefers_bf16() else torch.float32
    return torch.float32


@functools.cache
def cpu_prefers_bf16() -> bool:
    """True if this CPU multiplies bf16 natively (see NATIVE_BF16_FLAGS); read once per process."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as the Linux kernel lists them (empty where there is no such file)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86, ARM
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def tune_cpu_allocator() -> bool:
    """glibc: serve large blocks from the heap and never trim it (True if applied)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


def setup_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if there is one; (this rank, its device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(), resolve_device(device_name)
    import torch.distributed as td

    dist = Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist, device


def teardown_distributed() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place (a no-op in a single process)."""
    if dist.is_distributed:
        import torch.distributed as td

        td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor


def barrier(dist: Dist) -> None:
    if dist.is_distributed:
        import torch.distributed as td

        td.barrier()
