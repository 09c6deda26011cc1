"""Corpus text: decoding and cleaning raw bytes, finding input files, reading them as documents.

Owns the rules that turn files into a list of documents, shared by `miniglm fetch` (decode,
clean), `miniglm tokenizer train` and `miniglm prepare` (find inputs, read, split):

- `decode_bytes` detects the encoding of downloaded/raw text: UTF-16 with a BOM, else strict UTF-8
  (with or without BOM), else strict GB18030 (a superset of GBK/GB2312); neither -> `DataError`.
- `clean_text` removes HTML remnants (known tags, comments, entities such as `&nbsp;`), BOMs,
  mojibake runs of three or more `?`/U+FFFD, and normalises CRLF/CR line endings to LF.
- Inputs to prepare must already be UTF-8 (a BOM is dropped, line endings are normalised to LF);
  any other bytes are an error naming the file and byte offset (fetch converts GB18030).
- Document rules (`split_on`): `document` = the whole file; `chapter` = a new document starts at
  every heading line such as `第一回　…`, `第1章 …`, `第一百二十回` (text before the first
  heading is a document of its own); a file without any heading falls back to paragraphs;
  `paragraph` = runs of lines separated by blank lines, or single lines if the file has no blank
  line. Every document runs from its first to its last non-blank line; text in between is kept
  exactly; blank-only documents are dropped. A JSONL record `{"text": ...}` is always one document.
"""

from __future__ import annotations

import codecs
import html
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from miniglm.data import DataError
from miniglm.io import iter_jsonl

TEXT_SUFFIXES = (".txt", ".jsonl")
UNITS = ("document", "chapter", "paragraph")
READ_CHUNK = 1 << 20  # bytes read at a time when streaming a file

_NUMERAL = "0-9０-９一二三四五六七八九十百千零〇两"
CHAPTER_HEADING = re.compile(
    rf"^[^\S\n]*第[{_NUMERAL}]{{1,8}}[回章](?:(?:[^\S\n]|[:：、.．])[^\n]{{0,60}})?[^\S\n]*$", re.M)
_LEADING_BLANK_LINES = re.compile(r"\A(?:[^\S\n]*\n)+")
_TRAILING_BLANK_LINES = re.compile(r"(?:\n[^\S\n]*)+\Z")
_BLANK_LINE_SEP = re.compile(r"\n(?:[^\S\n]*\n)+")

_HTML_TAGS = ("a|b|big|body|center|div|em|font|h[1-6]|head|hr|html|i|img|li|link|meta|nobr|nowiki|ol|"
              "ref|small|span|strong|sub|sup|table|tbody|td|th|thead|title|tr|u|ul")
_HTML_BREAK = re.compile(r"</?(?:br|p)\b[^<>\n]*>", re.I)
_HTML_TAG = re.compile(rf"</?(?:{_HTML_TAGS})\b[^<>\n]*>", re.I)
_HTML_BLOCK = re.compile(r"<!--.*?-->|<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_HTML_ENTITY = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
_MOJIBAKE = re.compile("[?\ufffd]{3,}")


# --------------------------------------------------------------------------- decoding and cleaning


def decode_bytes(data: bytes, name: str) -> tuple[str, str]:
    """Raw bytes -> (text, encoding name). Tries UTF-16 (BOM only), UTF-8, then GB18030, all strict."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as e:
        utf8_error = e
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        pass
    raise DataError(f"{name}: neither UTF-8 (invalid byte at offset {utf8_error.start}) nor GB18030 text")


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass
class CleanStats:
    """What `clean_text` removed or replaced (counts of occurrences)."""

    html_tags: int = 0
    html_entities: int = 0
    mojibake_runs: int = 0


def _unescape_entity(m: re.Match[str]) -> str:
    out = html.unescape(m.group(0))
    return " " if out == "\xa0" else out


def clean_text(text: str) -> tuple[str, CleanStats]:
    """Remove HTML remnants, BOMs and mojibake runs; normalise line endings to LF."""
    stats = CleanStats()
    text = normalize_newlines(text.replace("\ufeff", ""))
    text, n_blocks = _HTML_BLOCK.subn("", text)
    text, n_breaks = _HTML_BREAK.subn("\n", text)
    text, n_tags = _HTML_TAG.subn("", text)
    stats.html_tags = n_blocks + n_breaks + n_tags
    text, stats.html_entities = _HTML_ENTITY.subn(_unescape_entity, text)
    text, stats.mojibake_runs = _MOJIBAKE.subn("", text)
    return text, stats


# --------------------------------------------------------------------------- finding and reading inputs


def find_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Expand the command line's inputs: files as given, directories recursively (*.txt, *.jsonl)."""
    found: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"input not found: {p}")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in TEXT_SUFFIXES and f.is_file())
            if not files:
                raise DataError(f"{p}: directory holds no .txt or .jsonl files")
        else:
            files = [p]
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    if not found:
        raise DataError("no input files given")
    return found


def read_utf8(path: Path) -> str:
    """A UTF-8 file as text (BOM dropped, LF line endings); other bytes -> error naming the offset."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at offset {e.start}); "
                        f"`miniglm fetch {path}` converts GB18030/GBK text to UTF-8") from None
    return normalize_newlines(text.removeprefix("\ufeff"))


def read_jsonl_texts(path: Path) -> list[str]:
    """The "text" field of every record of a JSONL file (blank lines skipped)."""
    texts = []
    for lineno, record in iter_jsonl(path, read_utf8(path), DataError):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{lineno}: expected an object with a string "text" field')
        texts.append(normalize_newlines(record["text"]))
    return texts


def read_documents(path: Path, unit: str) -> tuple[list[str], str]:
    """One input file -> (its documents, the unit used: chapter may fall back to paragraph; JSONL: record).

    Reads the whole file: the reference that `iter_documents` (streaming) is tested against."""
    if path.suffix == ".jsonl":
        return _trimmed(read_jsonl_texts(path)), "record"
    return split_documents(read_utf8(path), unit)


# --------------------------------------------------------------------------- streaming (bounded memory)


def iter_lines(path: Path, chunk_bytes: int = READ_CHUNK) -> Iterator[str]:
    """The lines of a UTF-8 file as `read_utf8` would give them (BOM dropped, CR/CRLF -> LF, each
    with its "\n" but maybe the last), read `chunk_bytes` at a time: memory is bounded by the
    chunk and the longest line, not the file. A bad byte is an error naming its file offset."""
    offset, rest, first = 0, b"", True
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            data = rest + chunk
            # cut after the last LF: a UTF-8 sequence never contains the byte 0x0a, and a CRLF
            # never straddles the cut, so each block decodes and normalises on its own
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            block, rest = data[:cut], data[cut:]
            if block:
                try:
                    text = block.decode("utf-8")
                except UnicodeDecodeError as e:
                    at = offset + e.start
                    raise DataError(f"{path}: not UTF-8 text (invalid byte 0x{block[e.start]:02x} at offset {at}); "
                                    f"`miniglm fetch {path}` converts GB18030/GBK text to UTF-8") from None
                if first:
                    text, first = text.removeprefix("\ufeff"), False
                offset += len(block)
                lines = normalize_newlines(text).split("\n")
                yield from (line + "\n" for line in lines[:-1])
                if lines[-1]:
                    yield lines[-1]
            if not chunk:
                return


@dataclass(frozen=True)
class FileLayout:
    """How a file splits into documents, decided by a first pass (`scan_layout`)."""

    unit: str  # the unit used: document, chapter, paragraph or record (JSONL)
    blank_lines: bool = True  # paragraphs: separated by blank lines (else one document per line)


def _is_blank_line(line: str) -> bool:
    return line.endswith("\n") and not line[:-1].strip()


def scan_layout(path: Path, unit: str, chunk_bytes: int = READ_CHUNK) -> FileLayout:
    """The unit `split_documents` would use for this file, found by streaming it once."""
    if unit not in UNITS:
        raise DataError(f"split_on: must be one of {', '.join(UNITS)}; got {unit!r}")
    if path.suffix == ".jsonl":
        return FileLayout("record")
    if unit == "document":
        return FileLayout("document")
    blank = False
    for i, line in enumerate(iter_lines(path, chunk_bytes)):
        if unit == "chapter" and CHAPTER_HEADING.match(line.rstrip("\n")):
            return FileLayout("chapter")
        blank = blank or (i > 0 and _is_blank_line(line))  # a blank line after a line = a separator
    return FileLayout("paragraph", blank)


def iter_documents(path: Path, layout: FileLayout, chunk_bytes: int = READ_CHUNK) -> Iterator[str]:
    """The documents of one file, streamed; the same as `read_documents(path, unit)[0]`."""
    if layout.unit == "record":
        for lineno, line in enumerate(iter_lines(path, chunk_bytes), start=1):
            if line.strip():
                yield from _trimmed([_jsonl_text(path, lineno, line)])
        return
    block: list[str] = []
    for i, line in enumerate(iter_lines(path, chunk_bytes)):
        if layout.unit == "chapter" and CHAPTER_HEADING.match(line.rstrip("\n")):
            yield from _trimmed(["".join(block)])
            block = [line]
        elif layout.unit == "paragraph" and not layout.blank_lines:
            yield from _trimmed([line.rstrip("\n")])
        elif layout.unit == "paragraph" and i > 0 and _is_blank_line(line):
            yield from _trimmed(["".join(block)])
            block = []
        else:
            block.append(line)
    yield from _trimmed(["".join(block)])


def _jsonl_text(path: Path, lineno: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DataError(f'{path}:{lineno}: expected an object with a string "text" field')
    return normalize_newlines(record["text"])


# --------------------------------------------------------------------------- documents


def _trim_blank_lines(block: str) -> str:
    """From the first to the last non-blank line; '' if there is none."""
    if not block.strip():
        return ""
    return _TRAILING_BLANK_LINES.sub("", _LEADING_BLANK_LINES.sub("", block))


def _trimmed(blocks: Iterable[str]) -> list[str]:
    return [d for d in map(_trim_blank_lines, blocks) if d]


def split_documents(text: str, unit: str) -> tuple[list[str], str]:
    """Text of one file -> (documents, unit used). See the module docstring for the rules."""
    if unit not in UNITS:
        raise DataError(f"split_on: must be one of {', '.join(UNITS)}; got {unit!r}")
    if unit == "document":
        return _trimmed([text]), unit
    if unit == "chapter":
        starts = [m.start() for m in CHAPTER_HEADING.finditer(text)]
        if starts:
            bounds = [0, *starts, len(text)]
            return _trimmed(text[a:b] for a, b in zip(bounds, bounds[1:])), unit
    if _BLANK_LINE_SEP.search(text):
        return _trimmed(_BLANK_LINE_SEP.split(text)), "paragraph"
    return _trimmed(text.split("\n")), "paragraph"
