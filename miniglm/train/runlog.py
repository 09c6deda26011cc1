"""A run's log: `metrics.jsonl` (one flushed JSON object per line) and, optionally, TensorBoard.

Lines (every one has "type"):
    {"type": "start", "mode", "params", "non_embedding_params", "init_from"}
    {"type": "train", "step", "tokens", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "elapsed"}
    {"type": "eval", "step", "tokens", "val_loss", "val_ppl", "val_bpc", "val_tokens"}

Only rank 0 writes. A resumed run first drops the lines logged after its checkpoint (they are
logged again, identically), so the file always reads as one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from miniglm.errors import UserError

METRICS = "metrics.jsonl"


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
        self.file = open(path, "a", encoding="utf-8")

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
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "start" or record.get("step", 0) <= step:
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a `metrics.jsonl` (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
