"""Reading SFT input files: every accepted format -> examples, or one-line errors naming file:line.

Formats (one example per JSONL line; surrounding whitespace of every text is stripped):
  {"question": q, "answer": a}
  {"instruction": i, "input": x, "output": a}        question = i + "\\n" + x (x may be empty/absent)
  {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
      user/assistant alternate, starting with user and ending with assistant; an optional leading
      system message is prepended to the first question as "{system}\\n{question}" (the template has
      no system slot, and this way the instruction is seen exactly where a question is).
  a .json file holding one JSON array of such records (errors name the record index)
  plain text: blocks starting with a line `问：…` followed by a line `答：…`; a question may span
      lines until `答：`, an answer runs until the next line starting with `问：` (blank lines
      between blocks are dropped; `问:`/`答:` with an ASCII colon are accepted too).
The format is chosen by the file suffix (.jsonl/.ndjson/.json, .txt/.md) or, failing that, by the
first characters. A bad record (invalid JSON, a missing, empty or non-string field, an unknown
format, a non-UTF-8 line) raises `SFTDataError("file:line: ...")`, or with skip_bad is counted in
`BadInput` and skipped. An empty file is always an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miniglm.data import DataError
from miniglm.tokenizer import with_system


class SFTDataError(DataError):
    """Bad SFT input (file:line: what is wrong) or an unusable prepared SFT directory."""


class _RecordError(ValueError):
    """What is wrong with one record; the reader adds the file and line."""


Turns = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Example:
    turns: Turns  # ((question, answer), ...)
    where: str  # "file:line", for messages


@dataclass
class BadInput:
    """Malformed records met with skip_bad: how many, and the first few messages."""

    count: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, message: str, skip_bad: bool) -> None:
        if not skip_bad:
            raise SFTDataError(message)
        self.count += 1
        if len(self.messages) < 10:
            self.messages.append(message)


def _text_field(obj: dict[str, Any], key: str, required: bool = True) -> str:
    if key not in obj or (not required and obj[key] is None):
        if required:
            raise _RecordError(f"missing field '{key}'")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise _RecordError(f"field '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise _RecordError(f"empty field '{key}'")
    return value.strip()


def _messages_turns(messages: Any) -> Turns:
    if not isinstance(messages, list) or not messages:
        raise _RecordError("field 'messages' must be a non-empty list")
    system = ""
    texts: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _RecordError(f"messages[{i}] must be an object with 'role' and 'content'")
        try:
            role, content = _text_field(m, "role"), _text_field(m, "content")
        except _RecordError as e:
            raise _RecordError(f"messages[{i}]: {e}") from None
        if role == "system" and i == 0:
            system = content
            continue
        expected = "user" if len(texts) % 2 == 0 else "assistant"
        if role != expected:
            raise _RecordError(f"messages[{i}]: expected role '{expected}', got '{role}'")
        texts.append(content)
    if not texts or len(texts) % 2:
        raise _RecordError("messages must end with an assistant answer")
    if system:
        texts[0] = with_system(system, texts[0])
    return tuple(zip(texts[0::2], texts[1::2]))


def parse_record(obj: Any) -> Turns:
    """One JSON record in any accepted format -> ((question, answer), ...)."""
    if not isinstance(obj, dict):
        raise _RecordError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        return _messages_turns(obj["messages"])
    if "question" in obj or "answer" in obj:
        return ((_text_field(obj, "question"), _text_field(obj, "answer")),)
    if "instruction" in obj or "output" in obj:
        question = _text_field(obj, "instruction")
        extra = _text_field(obj, "input", required=False)
        return ((question + ("\n" + extra if extra else ""), _text_field(obj, "output")),)
    keys = ", ".join(sorted(map(str, obj))) or "none"
    raise _RecordError(f"unknown record format (fields: {keys}); expected question/answer, "
                       "instruction/input/output or messages")


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        yield lineno, raw.rstrip(b"\r")


def _decode(raw: bytes, lineno: int) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff") if lineno == 1 else raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _RecordError("not UTF-8 text") from None


def _jsonl_records(path: Path, data: bytes) -> Iterator[tuple[str, Turns | _RecordError]]:
    for lineno, raw in _lines(data):
        if not raw.strip():
            continue
        try:
            try:
                obj = json.loads(_decode(raw, lineno))
            except json.JSONDecodeError as e:
                raise _RecordError(f"invalid JSON ({e.msg}, column {e.colno})") from None
            yield f"{path}:{lineno}", parse_record(obj)
        except _RecordError as e:
            yield f"{path}:{lineno}", e


def _json_array_records(path: Path, data: bytes) -> Iterator[tuple[str, Turns | _RecordError]]:
    try:
        records = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise SFTDataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SFTDataError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(records, list):
        raise SFTDataError(f"{path}: expected a JSON array of records or one JSON object per line")
    for i, obj in enumerate(records):
        try:
            yield f"{path}: record {i}", parse_record(obj)
        except _RecordError as e:
            yield f"{path}: record {i}", e


def _marker(line: str, word: str) -> str | None:
    for colon in ("：", ":"):
        if line.startswith(word + colon):
            return line[len(word) + 1:]
    return None


def _qa_text_records(path: Path, data: bytes) -> Iterator[tuple[str, Turns | _RecordError]]:
    block: dict[str, Any] | None = None  # {"line", "q": [...], "a": [...] | None, "error": (line, msg) | None}

    def finish(b: dict[str, Any]) -> tuple[str, Turns | _RecordError]:
        where = f"{path}:{b['line']}"
        if b["error"]:
            return f"{path}:{b['error'][0]}", _RecordError(b["error"][1])
        if b["a"] is None:
            return where, _RecordError("问： without a following 答：")
        q, a = "\n".join(b["q"]).strip(), "\n".join(b["a"]).strip()
        if not q or not a:
            return where, _RecordError("empty question" if not q else "empty answer")
        return where, ((q, a),)

    for lineno, raw in _lines(data):
        try:
            line = _decode(raw, lineno)
        except _RecordError as e:
            if block is None:
                yield f"{path}:{lineno}", e
            else:  # the whole block is bad; reported (once) at this line when it ends
                block["error"] = block["error"] or (lineno, str(e))
            continue
        if (q := _marker(line, "问")) is not None:
            if block is not None:
                yield finish(block)
            block = {"line": lineno, "q": [q], "a": None, "error": None}
        elif (a := _marker(line, "答")) is not None and block is not None and block["a"] is None:
            block["a"] = [a]
        elif block is not None:
            block["q" if block["a"] is None else "a"].append(line)
        elif line.strip():
            yield f"{path}:{lineno}", _RecordError("text before the first 问： line")
    if block is not None:
        yield finish(block)


def _reader(path: Path, data: bytes):
    head = data[:4096].decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_records
    if head.startswith("["):
        return _json_array_records
    if suffix == ".json" or head.startswith("{"):
        return _jsonl_records
    if suffix in (".txt", ".md", ".text") or _marker(head, "问") is not None:
        return _qa_text_records
    raise SFTDataError(f"{path}: unknown format (expected JSONL records, a JSON array, "
                       "or a text file of 问：/答： blocks)")


def read_examples(path: str | Path, skip_bad: bool = False, bad: BadInput | None = None) -> list[Example]:
    """All examples of one input file; a bad record raises SFTDataError or, with skip_bad, is counted."""
    path = Path(path)
    bad = bad if bad is not None else BadInput()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SFTDataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data.strip():
        raise SFTDataError(f"{path}: empty file (no examples)")
    examples = []
    for where, rec in _reader(path, data)(path, data):
        if isinstance(rec, _RecordError):
            bad.add(f"{where}: {rec}", skip_bad)
        else:
            examples.append(Example(rec, where))
    return examples
