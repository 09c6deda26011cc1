"""What every command shares: an argparse parser whose errors are one line, and the error policy.

Exit codes: 0 success, 2 bad input or usage (one line on stderr, no traceback), 1 an unexpected
internal error (traceback shown), 130 interrupted. An OSError that the environment causes (disk
full, permission denied, read-only file system, a directory where a file was expected, ...) is bad
input too: one line naming the path and the cause, exit 2, handled here once for every command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from miniglm.errors import UserError
from miniglm.io import describe_os_error


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are a single line and exit with code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def run_command(prog: str, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        message = describe_os_error(e)
        if message is None:  # not the environment's fault: a bug, shown with its traceback
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
