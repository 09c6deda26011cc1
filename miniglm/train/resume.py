"""What makes a training run stoppable and exactly resumable, and keeps a run directory to one run.

- `rng_state()` / `set_rng_state()`: torch (CPU and CUDA), numpy and Python RNG states as tensors
  and plain values, so `state.pt` loads with `torch.load(weights_only=True)`.
- `StopSignals`: SIGINT/SIGTERM only raise a flag; the trainer checks it at the end of a step,
  saves a checkpoint and returns. A second SIGINT aborts at once.
- `latest_checkpoint(run_dir)`: the checkpoint `--resume` continues from.
- `prepare_run_dir(run_dir, overwrite)`: refuses to start a second run on top of an existing one.
"""

from __future__ import annotations

import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miniglm import checkpoint as ckpt
from miniglm.errors import UserError


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype("int64")), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopSignals:
    """SIGINT/SIGTERM set a flag checked at the end of each step; a second SIGINT aborts at once."""

    def __init__(self):
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay with whoever owns them
            pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint at the end of this step "
              f"(press Ctrl-C again to abort without saving)", flush=True)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory; with `overwrite`, clear the old run's files."""
    old = [p for p in (run_dir / "config.json", run_dir / "metrics.jsonl", run_dir / "checkpoints",
                       run_dir / "tensorboard") if p.exists()]
    if old and not overwrite:
        raise UserError(f"{run_dir} already holds a run ({', '.join(p.name for p in old)}); "
                        f"continue it with --resume, or start afresh with --overwrite")
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def latest_checkpoint(run_dir: Path) -> Path:
    found = ckpt.list_checkpoints(run_dir)
    if not found:
        raise ckpt.CheckpointError(f"nothing to resume in {run_dir}: no complete checkpoints/step_*/ "
                                   f"(start without --resume)")
    return found[-1]
