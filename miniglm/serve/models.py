"""The served models: which checkpoints, under which ids, loaded in the background, one scheduler each.

    specs = parse_model_specs(["runs/sft", "pre=runs/small/checkpoints/best"])   # ids "sft", "pre"
    registry = Registry(specs, SampleConfig(device="cpu"), max_batch=16, max_queue=64)
    registry.start_loading(on_failure=print)    # the server answers /health with 503 meanwhile
    served = registry.get("sft")                # ServedModel: tokenizer, context, scheduler

A model id is `NAME=PATH`'s NAME, or else the run's name: the directory given, or for a checkpoint
inside `RUN/checkpoints/` the RUN directory's name. Paths are resolved to a checkpoint when the
specs are parsed, so a typo is an error before the server starts; the weights load afterwards.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from miniglm.checkpoint import model_config_of, read_meta, resolve_checkpoint
from miniglm.config import SampleConfig
from miniglm.errors import UserError
from miniglm.serve.scheduler import Scheduler
from miniglm.tokenizer import Tokenizer

MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    path: Path  # the checkpoint directory
    context: int  # the model's context (max_position_embeddings), from its metadata


def default_model_id(path: Path) -> str:
    path = path.resolve()
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.name


def parse_model_specs(items: list[str]) -> list[ModelSpec]:
    """`[NAME=]PATH` strings -> specs with resolved checkpoint paths; UserError names the bad one."""
    specs: list[ModelSpec] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        ckpt = resolve_checkpoint(path)  # CheckpointError (a UserError) if there is none
        meta = read_meta(ckpt)  # a checkpoint this MiniGLM cannot read fails now, not after startup
        name = name or default_model_id(Path(path))
        if not MODEL_ID.fullmatch(name):
            raise UserError(f"bad model id {name!r} in {item!r}: use letters, digits and . _ : / - "
                            "(NAME=PATH sets it)")
        if any(s.id == name for s in specs):
            raise UserError(f"model id {name!r} is used twice; name them with NAME=PATH")
        specs.append(ModelSpec(name, ckpt, int(model_config_of(meta, ckpt).max_position_embeddings)))
    if not specs:
        raise UserError("no model to serve")
    return specs


@dataclass
class ServedModel:
    id: str
    path: Path
    created: int  # unix time it was loaded (OpenAI's `created` of a model)
    tokenizer: Tokenizer
    context: int  # most tokens of prompt + answer one request may use
    scheduler: Scheduler


class Registry:
    """All served models; `state` is "loading", "ready" or "failed" (then `error` says why)."""

    def __init__(self, specs: list[ModelSpec], cfg: SampleConfig, max_batch: int = 16, max_queue: int = 64,
                 max_context: int | None = None):
        self.specs, self.cfg = specs, cfg
        self.max_batch, self.max_queue, self.max_context = max_batch, max_queue, max_context
        self.models: dict[str, ServedModel] = {}
        self.state = "loading"
        self.error: str | None = None
        self.closed = False
        self.lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.specs]

    def get(self, model_id: str) -> ServedModel:
        """The loaded model with this id; KeyError if there is none (or it is still loading)."""
        return self.models[model_id]

    def load(self) -> None:
        """Load every model and start its scheduler (blocking); on failure `state` is "failed"."""
        from miniglm.generate.text import load_for_generation

        try:
            for spec in self.specs:
                loaded = load_for_generation(spec.path, self.cfg)
                context = loaded.model.config.max_position_embeddings
                if self.max_context:
                    context = min(context, self.max_context)
                scheduler = Scheduler(loaded.model, loaded.tokenizer, self.max_batch, self.max_queue, spec.id)
                with self.lock:
                    if self.closed:
                        return
                    scheduler.start()
                    self.models[spec.id] = ServedModel(spec.id, spec.path, int(time.time()), loaded.tokenizer,
                                                       context, scheduler)
            self.state = "ready"
        except Exception as e:  # a UserError (bad checkpoint) or anything else: the server cannot serve
            self.error = f"{type(e).__name__}: {e}" if not isinstance(e, UserError) else str(e)
            self.state = "failed"
            raise

    def start_loading(self, on_failure: Callable[[str], None],
                      on_ready: Callable[[], None] | None = None) -> threading.Thread:
        """Load in a thread of its own; then call on_ready, or on_failure(message)."""
        def run() -> None:
            try:
                self.load()
            except Exception:
                on_failure(self.error or "loading failed")
                return
            if on_ready is not None and self.state == "ready":
                on_ready()

        thread = threading.Thread(target=run, name="miniglm-serve-load", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop every scheduler (their open requests end with an error event)."""
        with self.lock:
            self.closed = True
            models = list(self.models.values())
        for served in models:
            served.scheduler.stop()
