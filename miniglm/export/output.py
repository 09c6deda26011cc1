"""Where an export goes, and the rules for replacing what is there.

A directory export is filled through `miniglm.io.atomic_dir`; a file export (GGUF, written by a
library that wants a path) goes to a uniquely named temporary file beside the target and is renamed
over it. Either way a kill or an error leaves nothing new, or the previous export intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from miniglm.errors import UserError
from miniglm.io import check_writable_target


class ExportError(UserError, ValueError):
    """A bad export request: an existing target, an unsupported dtype, an unexportable model."""


def check_target(out: Path, overwrite: bool, source: Path, is_dir: bool) -> None:
    """Refuse an existing target without `overwrite`, a target of the other kind (file vs
    directory), and any target that would replace the checkpoint being exported."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise ExportError(f"{out} already exists (pass --overwrite to replace it)")
        if out.is_symlink() or out.is_dir() != is_dir:
            kind = "a symlink" if out.is_symlink() else "a directory" if out.is_dir() else "a file"
            raise ExportError(f"{out} is {kind}; refusing to replace it with {'a directory' if is_dir else 'a file'}")
    src, dst = source.resolve(), out.resolve()
    if src == dst or dst in src.parents:
        raise ExportError(f"{out} contains the checkpoint being exported ({source}); choose another --out")
    if not is_dir:
        check_writable_target(out)


@contextlib.contextmanager
def atomic_file(out: Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside `out` to write; on success it is renamed over `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an export is an ordinary file
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
