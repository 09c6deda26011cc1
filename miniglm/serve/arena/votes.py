"""The arena's votes log: one JSON object per line, appended and fsynced, never rewritten.

    log = VoteLog("votes.jsonl")
    log.append(make_vote(mode="anonymous", left="alice", right="bob", vote="left", ...))
    read = read_votes("votes.jsonl")      # -> VotesRead(votes=[...], warnings=[...])

Owns the record schema, the one writer and the one reader. Both the arena page and
`miniglm judge` (issue 12, mode "judge") write records in this schema, and the leaderboard reads
them back. A record:

    {"ts": "2025-05-01T14:03:07.123+00:00",   # UTC, ISO 8601
     "session": "5f0c...",                      # one browser session (or one judge run)
     "mode": "anonymous" | "named" | "judge",   # battle tab / side-by-side tab / LLM judge
     "left": "alice", "right": "bob",           # contestant names in screen order (left = "A")
     "vote": "left" | "right" | "tie" | "both_bad",
     "conversation": [{"role": "user", "content": "..."}, ...],   # the user turns, shared by both
     "answers": {"left": "...", "right": "..."},                  # the answers voted on (last turn)
     "earlier_answers": {"left": [...], "right": [...]},          # optional: earlier turns, in order
     "settings": {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 200, "seed": 7},
     "anonymous": true,                         # names were hidden and no answer revealed one
     "revealed_by": ["left answer names 'alice'"]}   # optional: why anonymous is false

Rules:
- `anonymous` is false for every named vote, and for a battle vote where an answer names its own
  model or another contestant (`names_mentioned`): such a vote is kept, but by default the
  leaderboard does not count it. Judge votes are anonymous (the judge never sees names).
- Appends are one write of whole lines on an O_APPEND descriptor, then fsync, under a lock,
  so concurrent voters in one process never interleave and a vote the page acknowledged survives
  a crash or power loss. A crash can still tear the line being written; if the file does not end
  in a newline when a `VoteLog` opens it, one newline is appended first so the fragment stays on its
  own line and the next vote is not glued to it (nothing earlier is rewritten).
- The reader skips a line that is not valid JSON (a torn last line, or such a fragment) with a
  warning naming file:line; a parsed record that breaks the schema is an error naming file:line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miniglm.errors import UserError

MODES = ("anonymous", "named", "judge")
VOTES = ("left", "right", "tie", "both_bad")
SIDES = ("left", "right")


class VotesError(UserError, ValueError):
    """A votes log that cannot be read, or a record that breaks the schema."""


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def make_vote(*, session: str, mode: str, left: str, right: str, vote: str, conversation: list[dict[str, str]],
              answers: dict[str, str], settings: dict[str, Any], anonymous: bool,
              earlier_answers: dict[str, list[str]] | None = None, revealed_by: Sequence[str] = (),
              ts: str | None = None) -> dict[str, Any]:
    """A schema-checked vote record (raises VotesError on a bad field)."""
    record: dict[str, Any] = {"ts": ts or now_iso(), "session": session, "mode": mode, "left": left,
                              "right": right, "vote": vote, "conversation": conversation, "answers": answers,
                              "settings": settings, "anonymous": anonymous}
    if earlier_answers:
        record["earlier_answers"] = earlier_answers
    if revealed_by:
        record["revealed_by"] = list(revealed_by)
    problem = schema_problem(record)
    if problem:
        raise VotesError(f"bad vote record: {problem}")
    return record


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def schema_problem(rec: Any) -> str | None:
    """What is wrong with `rec` as a vote record, or None if it follows the schema."""
    if not isinstance(rec, dict):
        return "expected a JSON object"
    for key in ("ts", "session", "left", "right"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            return f'"{key}" must be a non-empty string'
    if rec.get("mode") not in MODES:
        return f'"mode" must be one of {", ".join(MODES)}; got {rec.get("mode")!r}'
    if rec.get("vote") not in VOTES:
        return f'"vote" must be one of {", ".join(VOTES)}; got {rec.get("vote")!r}'
    if rec["left"] == rec["right"]:
        return f'"left" and "right" are the same contestant ({rec["left"]!r})'
    conv = rec.get("conversation")
    if not isinstance(conv, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in conv):
        return '"conversation" must be a list of {"role", "content"} strings'
    answers = rec.get("answers")
    if not isinstance(answers, dict) or not all(isinstance(answers.get(s), str) for s in SIDES):
        return '"answers" must hold "left" and "right" strings'
    earlier = rec.get("earlier_answers", {})
    if not isinstance(earlier, dict) or not all(_is_str_list(earlier.get(s, [])) for s in SIDES):
        return '"earlier_answers" must hold "left" and "right" lists of strings'
    if not isinstance(rec.get("settings"), dict):
        return '"settings" must be an object'
    if not isinstance(rec.get("anonymous"), bool):
        return '"anonymous" must be true or false'
    if rec["mode"] == "named" and rec["anonymous"]:
        return 'a "named" vote cannot be anonymous'
    if not _is_str_list(rec.get("revealed_by", [])):
        return '"revealed_by" must be a list of strings'
    return None


def _name_pattern(name: str) -> re.Pattern[str]:
    # ASCII names match as whole words ("bob" is not in "bobsled"); CJK names as plain substrings
    # (Chinese has no word boundaries).
    edge = r"(?<![A-Za-z0-9_])" if name[:1].isascii() and name[:1].isalnum() else ""
    tail = r"(?![A-Za-z0-9_])" if name[-1:].isascii() and name[-1:].isalnum() else ""
    return re.compile(edge + re.escape(name) + tail, re.IGNORECASE)


def names_mentioned(answers: dict[str, str], aliases: dict[str, Iterable[str]]) -> list[str]:
    """Reasons a battle is no longer blind: each (side, contestant) where that side's answer names the
    contestant (by any of its aliases). `aliases` maps every contestant in the arena to its names."""
    reasons = []
    for side in SIDES:
        text = answers.get(side, "")
        for contestant, names in aliases.items():
            hit = next((n for n in names if len(n) >= 2 and _name_pattern(n).search(text)), None)
            if hit is not None:
                reasons.append(f"{side} answer names {hit!r} (contestant {contestant})")
    return reasons


class VoteLog:
    """Appends vote records to one JSONL file; safe to share between the threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.exists() and not self.path.is_file():
            raise VotesError(f"{self.path}: not a file; --votes needs a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seal_torn_tail()

    def _seal_torn_tail(self) -> None:
        """If a crash left a partial last line, end it so the next record starts on a line of its own."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
        self._write("\n")

    def _write(self, text: str) -> None:
        from miniglm.io import open_append

        with open_append(self.path) as f:  # O_APPEND, never through a symlink
            f.write(text)  # whole lines in one write: appends from other processes cannot interleave
            f.flush()
            os.fsync(f.fileno())

    def append(self, record: dict[str, Any]) -> None:
        self.extend([record])

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        """Append several records (e.g. a judge run's verdicts) with one fsync; all are checked first."""
        lines = []
        for record in records:
            problem = schema_problem(record)
            if problem:
                raise VotesError(f"refusing to log a bad vote record: {problem}")
            lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        if lines:
            with self._lock:
                self._write("".join(lines))


@dataclass
class VotesRead:
    votes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one per skipped line, naming file:line


def read_votes(path: str | Path) -> VotesRead:
    """All records of a votes log, in file order; unparseable lines skipped with a warning.

    A missing file is an error; an empty file is an empty log.
    """
    path = Path(path)
    if not path.is_file():
        raise VotesError(f"{path}: no such votes file")
    out = VotesRead()
    lines = path.read_bytes().split(b"\n")
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            what = "a torn last line" if lineno == len(lines) else "an incomplete line"
            out.warnings.append(f"{path}:{lineno}: skipped {what} (left by a crash mid-write?)")
            continue
        problem = schema_problem(rec)
        if problem:
            raise VotesError(f"{path}:{lineno}: {problem}")
        out.votes.append(rec)
    return out
