"""Where an export goes, and the rules for replacing what is there.

A directory export is filled through `miniglm.io.atomic_dir`; a file export (GGUF, written by a
library that wants a path) through `miniglm.io.atomic_file`: a uniquely named temporary file beside
the target, renamed over it. Either way a kill or an error leaves nothing new, or the previous export intact.
"""

from __future__ import annotations

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
