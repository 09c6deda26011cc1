"""Optional dependencies: import one lazily, or fail with one line naming the extra to install.

    gr = require("gradio", "serve")        # -> the module, or MissingExtra (exit code 2)

Core MiniGLM (prepare, train, sample, chat) needs only torch, numpy, tokenizers, safetensors and
tqdm. Everything heavier lives in an extra declared in pyproject.toml and is imported through
`require` where it is used, so `import miniglm` stays light and a missing package is a hint, not a
traceback. Commands call `require` for what they need before doing any work.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from miniglm.errors import UserError

# extra -> what it is for (shown in the hint)
EXTRAS = {
    "eval": "evaluation metrics and plots",
    "hf": "Hugging Face transformers interop",
    "serve": "the HTTP API, web chat, arena and judge",
    "export": "export to Hugging Face and GGUF",
}


class MissingExtra(UserError, ImportError):
    """An optional package is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise MissingExtra saying which extra of miniglm provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise  # the package is there but broken inside: show the real error
        what = EXTRAS.get(extra, extra)
        raise MissingExtra(f"{top} is not installed; {what} need(s) the '{extra}' extra: "
                           f"pip install \"miniglm[{extra}]\"") from None
