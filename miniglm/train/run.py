"""The run directory: everything that makes a training run logged, stoppable and exactly resumable.

    runs/<name>/config.json      the resolved config (written by the trainer)
    runs/<name>/metrics.jsonl    one flushed JSON object per line, every one with "type":
        {"type": "start", "mode", "params", "non_embedding_params", "init_from", ...}
        {"type": "train", "step", "tokens", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "elapsed"}
        {"type": "eval", "step", "tokens", "val_loss", "val_ppl", "val_bpc", "val_tokens"}
    runs/<name>/checkpoints/     step_*/ and best/ (format: `miniglm.checkpoint`)

Owns:
- `MetricsLog` (rank 0 writes; a resumed run first drops the lines logged after its checkpoint,
  which are logged again identically, so the file reads as one uninterrupted run) and
  `read_metrics`, the one reader of metrics.jsonl (a torn last line from a hard kill is skipped);
- `rng_state()` / `set_rng_state()`: torch (CPU and CUDA), numpy and Python RNG states as tensors
  and plain values, so `state.pt` loads with `torch.load(weights_only=True)`;
- `StopSignals`: SIGINT/SIGTERM only raise a flag; the trainer checks it at the end of a step,
  saves a checkpoint and returns. A second SIGINT aborts at once;
- `latest_checkpoint(run_dir)`: the checkpoint `--resume` continues from;
- `check_run_dir(run_dir)`: before any work, refuses a run directory with symlinks leading outside
  it or one that cannot be written, and cleans what killed checkpoint writes left behind;
- `prepare_run_dir(run_dir, overwrite)`: refuses to start a second run on top of an existing one;
- `resolve_kernels(cfg, device, recorded)`: the autocast dtype and the float32 GEMM routine of the
  run, decided once by fixed rules (never by timing), recorded in config.json and in every
  checkpoint's meta.json ("kernels"), and taken from the checkpoint on resume, so a resumed run
  computes exactly what an uninterrupted one would. An explicit config value overrides.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miniglm import checkpoint as ckpt
from miniglm.config import TrainConfig
from miniglm.device import DTYPES, resolve_dtype
from miniglm.errors import UserError
from miniglm.io import atomic_write, check_confined, check_output_dir, clean_stale, iter_jsonl, open_append
from miniglm.model import kernels

METRICS = "metrics.jsonl"


class RunError(UserError, ValueError):
    """A run directory that cannot be used: unreadable metrics, or a run where none may start."""


class MetricsLog:
    """Append-only writer of `metrics.jsonl` (+ TensorBoard scalars); a no-op when disabled."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = False,
                 resume_step: int | None = None):
        self.file = self.tb = None
        if not enabled:
            return
        if tensorboard:  # checked first: a missing package must not leave a half-opened log behind
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("tensorboard=true needs the tensorboard package "
                                "(pip install tensorboard)") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
        path = run_dir / METRICS
        if resume_step is not None:
            truncate_metrics(path, resume_step)
        self.file = open_append(path)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.tb is not None and "step" in record:
            for key, value in record.items():
                if key not in ("type", "step") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the start line and lines up to `step`; drop later ones and a torn last line."""
    if not path.is_file():
        return
    kept = [json.dumps(r, ensure_ascii=False) + "\n" for r in read_metrics(path)
            if r["type"] == "start" or r.get("step", 0) <= step]
    atomic_write(path, "".join(kept))


def read_metrics(path: str | Path, error: type[Exception] = RunError) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (or of a run directory's), checked; a torn last line is skipped.

    A malformed line elsewhere is an `error` naming file:line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    records = []
    for lineno, rec in iter_jsonl(path, text, error, allow_torn_tail=True):
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            raise error(f"{path}:{lineno}: expected a JSON object with a \"type\"")
        if rec["type"] in ("train", "eval") and not isinstance(rec.get("step"), int):
            raise error(f"{path}:{lineno}: a {rec['type']} record needs an integer \"step\"")
        records.append(rec)
    return records


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


def check_run_dir(run_dir: Path) -> None:
    """Refuse outward symlinks and unwritable run directories; clean leftovers of killed writes."""
    check_confined(run_dir)
    check_output_dir(run_dir)
    for d in (run_dir, run_dir / "checkpoints"):
        for entry in clean_stale(d):
            print(f"removed {entry.name} in {d} (left by a killed write)")


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory; with `overwrite`, clear the old run's files.

    Nothing is deleted before every path has been checked (`check_run_dir`): a symlink among them
    is an error, not something followed or half-removed.
    """
    old = [p for p in (run_dir / "config.json", run_dir / "metrics.jsonl", run_dir / "checkpoints",
                       run_dir / "tensorboard") if p.exists() or p.is_symlink()]
    if old and not overwrite:
        started = "" if ckpt.list_checkpoints(run_dir) else " that stopped before its first checkpoint"
        raise RunError(f"{run_dir} already holds a run{started} ({', '.join(p.name for p in old)}); "
                       + ("start it again with --overwrite" if started else
                          "continue it with --resume, or start afresh with --overwrite"))
    check_confined(run_dir)
    for p in old:
        if p.is_symlink():
            raise RunError(f"{p}: a symlink; refusing to delete through it (remove it yourself)")
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def latest_checkpoint(run_dir: Path) -> Path:
    found = ckpt.list_checkpoints(run_dir)
    if not found:
        if (run_dir / "config.json").is_file():  # killed before its first checkpoint
            raise ckpt.CheckpointError(f"nothing to resume in {run_dir}: the run stopped before its first "
                                       f"checkpoint; start it again with --overwrite (same --out)")
        raise ckpt.CheckpointError(f"nothing to resume in {run_dir}: no complete checkpoints/step_*/ "
                                   f"(start without --resume)")
    return found[-1]


def resolve_kernels(cfg: TrainConfig, device: torch.device,
                    recorded: dict[str, Any] | None) -> tuple[TrainConfig, torch.dtype]:
    """The run's dtype and float32 GEMM routine, `cfg` with both resolved, and the torch dtype.

    "auto" takes the `recorded` choice (a checkpoint's meta.json "kernels", on resume) where there
    is one, else the fixed rule for this machine; an explicit value always wins. The routine is
    switched on for this process (`kernels.use_float32_matmul`).
    """
    recorded = recorded if isinstance(recorded, dict) else {}
    dtype_name = cfg.dtype
    if dtype_name == "auto" and recorded.get("dtype") in DTYPES:
        dtype_name = recorded["dtype"]
    dtype = resolve_dtype(dtype_name, device)
    matmul = cfg.matmul
    if matmul == "auto" and recorded.get("matmul") in kernels.MATMULS:
        matmul = recorded["matmul"]
    matmul = kernels.resolve_float32_matmul(matmul)
    return replace(cfg, dtype=str(dtype).removeprefix("torch."), matmul=matmul), dtype


def kernels_record(cfg: TrainConfig) -> dict[str, Any]:
    """What a checkpoint's meta.json records of `resolve_kernels`' decision."""
    return {"kernels": {"dtype": cfg.dtype, "matmul": cfg.matmul}}
