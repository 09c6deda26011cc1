"""Files on disk: the one way MiniGLM writes a file or a directory, and the one JSON Lines reader.

- `atomic_write(path, data)`: the bytes/text go to a temporary file created exclusively, with a
  unique name, in the target's own directory (`tempfile.mkstemp`: O_CREAT|O_EXCL, never through
  an existing name or symlink), are fsynced, and are renamed over `path`. A kill at any moment
  leaves either the old file or the new one; a symlink at `path` is replaced, never written
  through. Special files (devices, FIFOs) are refused: they are not ours to replace.
- `atomic_dir(out)`: a context manager yielding an empty temporary sibling directory to fill;
  on success it takes `out`'s place (the old one is moved aside first and removed after, so one
  complete copy exists at every moment); on any error it is removed and `out` is untouched.
- `open_append(path)`: a text file for appending that refuses to follow a symlink (O_NOFOLLOW).
- `iter_jsonl(path, text, error)`: (line number, record) pairs with errors that name file:line;
  `allow_torn_tail` skips an incomplete last line, which is what a hard kill mid-append leaves.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from miniglm.errors import UserError


class OutputError(UserError, OSError):
    """An output path that cannot or must not be written."""


def check_writable_target(path: Path) -> None:
    """Refuse targets that are not regular files, symlinks or absent (directories, devices, FIFOs)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise OutputError(f"{path}: is a directory, expected a file path")
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OutputError(f"{path}: not a regular file (a device, FIFO or socket); refusing to replace it")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Replace `path` with `data` atomically (see the module docstring)."""
    path = Path(path)
    check_writable_target(path)
    payload = data.encode(encoding) if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Fill the yielded temporary directory; on success it replaces `out` in one rename."""
    out = Path(out)
    if out.is_symlink():
        raise OutputError(f"{out}: is a symlink; refusing to replace what it points to")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        _fsync_dir(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old)  # onto the empty placeholder: rename(2) may replace an empty directory
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:
                os.replace(old, out)
            raise
        _fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_append(path: str | Path) -> IO[str]:
    """Open a text file for appending, creating it, never through a symlink."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        if Path(path).is_symlink():
            raise OutputError(f"{path}: is a symlink; refusing to append through it") from None
        raise OutputError(f"{path}: cannot open for appending ({e.strerror})") from None
    return os.fdopen(fd, "a", encoding="utf-8")


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
