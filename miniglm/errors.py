"""The one exception family for bad user input.

Library code raises a `UserError` subclass with a one-line message that names the file, line or
field at fault; `miniglm <command>` prints it as `miniglm <command>: error: ...` and exits with 2.
Anything else is an internal error (exit 1, traceback shown).
"""


class UserError(Exception):
    """Bad input or usage: a clear one-line message, exit code 2."""
