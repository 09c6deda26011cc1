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
- `write_new(path, data)`: a new file created exclusively (O_EXCL|O_NOFOLLOW), for filling a
  directory from `atomic_dir`; serialisers' own writers (torch.save, safetensors) turn a full disk
  into an obscure RuntimeError, so their bytes go through here and fail as a plain OSError.
- `write_output(path, data)`: a user-named output: `-` is stdout, a device or FIFO is written
  directly (it is not ours to replace), anything else goes through `atomic_write`.
- `check_output_dir(path)`: fails early (before long work) if files cannot be created in `path`.
- `check_confined(root)`: refuses a run/data directory whose entries are symlinks leading outside it.
- `clean_stale(directory)`: removes what killed `atomic_write`/`atomic_dir` calls left behind, and
  puts back a directory that was moved aside but never replaced.
Every OSError raised here carries the path it concerns, so one line can say what failed where.
- `iter_jsonl(path, text, error)`: (line number, record) pairs with errors that name file:line;
  `allow_torn_tail` skips an incomplete last line, which is what a hard kill mid-append leaves.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import sys
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


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise an OSError without a file name (a failed write(2)) as one naming `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None and not isinstance(e, UserError):
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from None
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a fresh, exclusively created temporary path beside `path` to write (by us, or by a
    library that wants a path); on success it is fsynced and renamed over `path`, on any error removed."""
    path = Path(path)
    check_writable_target(path)
    with _naming(path):
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with _naming(path):
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Replace `path` with `data` atomically (see the module docstring)."""
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_file(path) as tmp, _naming(Path(path)), open(tmp, "wb") as f:
        f.write(payload)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Fill the yielded temporary directory; on success it replaces `out` in one rename."""
    out = Path(out)
    if out.is_symlink():
        raise OutputError(f"{out}: is a symlink; refusing to replace what it points to")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:  # the `finally` removes the temporary directory on every error: a full disk stays usable
        yield tmp
        _fsync_dir(tmp)
        old = None
        if out.exists():
            # onto an empty placeholder (rename(2) may replace an empty directory); if a kill lands
            # before the next rename, `clean_stale` moves it back
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old)
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


def write_new(path: str | Path, data: bytes) -> Path:
    """Create `path` (it must not exist, not even as a symlink), write `data`, fsync it."""
    path = Path(path)
    with _naming(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_output(path: str | Path, text: str) -> str:
    """Write a user-named output (see the module docstring); returns where it went, for messages."""
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return "stdout"
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(path).st_mode  # follows a symlink: /dev/stdout is one
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            with _naming(path), open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return str(path)
    check_output_dir(path.parent)
    with _naming(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return str(path)


def check_output_dir(path: str | Path) -> Path:
    """Fail now, not after hours of work, if files cannot be created in directory `path`.

    A missing directory is checked at its nearest existing ancestor (it is created later, by
    whoever writes). Probed by creating a file, since permission bits say nothing for root.
    """
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{path}: exists and is not a directory" if probe == path else
                          f"{probe}: not a directory, so {path} cannot be created")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".miniglm-probe.")
    except OSError as e:
        raise OutputError(f"{path}: cannot write there ({e.strerror})") from None
    os.close(fd)
    os.unlink(name)
    return path


def check_confined(root: str | Path, depth: int = 2) -> None:
    """Refuse `root` if an entry within `depth` levels is a symlink leading outside it.

    Files of a run or data directory are replaced, appended to and deleted; through such a link
    those writes would land elsewhere. Links that stay inside `root` are harmless.
    """
    root = Path(root)
    if not root.is_dir():
        return
    base = root.resolve()
    level = [root]
    for _ in range(depth):
        nxt = []
        for d in level:
            for entry in sorted(d.iterdir()):
                if entry.is_symlink():
                    target = entry.resolve()
                    if target != base and base not in target.parents:
                        raise OutputError(f"{entry}: a symlink to {os.readlink(entry)}, outside {root}; "
                                          f"refusing to write through it (replace it with a real file)")
                elif entry.is_dir():
                    nxt.append(entry)
        level = nxt


# what killed atomic_write / atomic_dir calls leave: ".NAME.RANDOM.tmp" and ".NAME.RANDOM.old";
# also the fixed names of older versions ("step_0000010.tmp123", "best.old123")
_STALE = re.compile(r"^\.(?P<name>.+)\.[^.]+\.(?P<kind>tmp|old)$|^(?P<oldname>[^.]+)\.(?P<oldkind>tmp|old)\d+$")


def clean_stale(directory: str | Path) -> list[Path]:
    """Remove leftovers of killed writes in `directory`; returns what was removed or restored.

    Call it only where no other process is writing (a run directory at the start of training).
    A `.old` copy whose original is gone (a kill between the two renames of `atomic_dir`) is the
    last complete version: it is renamed back instead of deleted.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    touched = []
    for entry in sorted(directory.iterdir()):
        m = _STALE.match(entry.name)
        if m is None or entry.is_symlink():
            continue
        name, kind = (m["name"], m["kind"]) if m["name"] else (m["oldname"], m["oldkind"])
        original = directory / name
        if kind == "old" and entry.is_dir() and any(entry.iterdir()) and not os.path.lexists(original):
            os.replace(entry, original)
        elif entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        touched.append(entry)
    return touched


def describe_os_error(e: OSError) -> str | None:
    """One line for an OSError caused by the environment (disk full, permissions, ...), else None."""
    if e.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = f"{e.filename}: " if e.filename is not None else ""
    if e.filename2 is not None:
        where = f"{e.filename} -> {e.filename2}: "
    hint = ENVIRONMENT_ERRNOS[e.errno]
    return f"{where}{e.strerror or os.strerror(e.errno)}" + (f" ({hint})" if hint else "")


# errno -> a hint; these are problems of the machine or the paths given, not bugs (exit 2, one line)
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full; free some space", errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
    errno.EROFS: "choose a writable location", errno.EISDIR: "expected a file, not a directory",
    errno.ENOTDIR: "a part of the path is not a directory", errno.EEXIST: "",
    errno.ENOENT: "", errno.ENAMETOOLONG: "", errno.ELOOP: "", errno.EFBIG: "file too large",
    errno.EIO: "an input/output error of the device", errno.EMFILE: "", errno.ENOTEMPTY: "",
    errno.EXDEV: "",
}


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
