"""The one JSON Lines reader: (line number, record) pairs, errors that name file:line.

Callers pass their own error class so a bad line surfaces as that stage's `UserError` (DataError,
EvalError, PlotError). `allow_torn_tail` skips an incomplete last line with no newline after it,
which is what a hard kill in the middle of an append leaves behind (e.g. in metrics.jsonl).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(path: Path, text: str, error: type[Exception], allow_torn_tail: bool = False
               ) -> Iterator[tuple[int, Any]]:
    """Parsed records of `text` (the contents of `path`), blank lines skipped."""
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if allow_torn_tail and lineno == len(lines):  # last line, not newline-terminated
                return
            raise error(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        yield lineno, record
