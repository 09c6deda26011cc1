"""Data stages: corpus fetching (`fetch`), text reading and document splitting (`text`),
pretraining token files (`prepare`), SFT rows (`sft`) and batches (`loader`).

Importing this package imports nothing heavy; each stage is its own module. `DataError` is the
bad-input error every data module raises (a `UserError`: one line, exit code 2).
"""

from miniglm.errors import UserError


class DataError(UserError, ValueError):
    """Bad or unusable input data; the message names the file (and line or byte offset)."""
