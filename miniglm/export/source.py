"""What an export reads: one checkpoint (float32, CPU), and, when it sits in a run directory, that
run's resolved config (`config.json`) and eval report (`eval/report.json`) for the model card."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miniglm.checkpoint import Loaded, load_checkpoint, run_dir_of


@dataclass
class Source:
    loaded: Loaded  # model in float32 on the CPU, eval mode; tokenizer; checkpoint meta and path
    run_dir: Path | None  # the run the checkpoint belongs to, if it is inside one
    run_config: dict[str, Any] | None  # RUN/config.json
    report: dict[str, Any] | None  # RUN/eval/report.json, checked by the report's own reader
    report_note: str | None = None  # why a report that is there could not be used

    @property
    def path(self) -> Path:
        return self.loaded.path


def load_source(path: str | Path, which: str = "best") -> Source:
    loaded = load_checkpoint(path, device="cpu", which=which)
    run = run_dir_of(loaded.path)
    config = None
    if run is not None and (run / "config.json").is_file():
        try:
            config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None  # the card then says less; the weights are what must be right
    report, note = _read_report(run)
    return Source(loaded, run, config, report, note)


def _read_report(run: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    if run is None or not (run / "eval" / "report.json").is_file():
        return None, None
    from miniglm.evaluate.report import ReportError, load_report

    try:
        return load_report(run / "eval" / "report.json"), None
    except ReportError as e:
        return None, str(e)
