"""Checkpoints: save and load model weights (safetensors), training state and metadata, atomically.

A run directory (`runs/<name>/`) holds `config.json`, `metrics.jsonl` and `checkpoints/`:

    checkpoints/step_0000200/   model.safetensors  state.pt  meta.json  tokenizer.json
    checkpoints/best/           the same, for the lowest validation loss so far

A checkpoint is written into a temporary sibling directory and renamed into place, so a kill at any
moment leaves every earlier checkpoint intact (a half-written `*.tmp*` directory is ignored).
`state.pt` (optimizer, step, RNG, data position) holds only tensors and plain Python values and is
read with `torch.load(weights_only=True)`; nothing is ever unpickled. Loading is strict: a
different format version, tokenizer or tensor shape is an error that says exactly what differs.
A Hugging Face Llama directory (config.json + safetensors + tokenizer.json) reads as a checkpoint
too (`miniglm.export.hf_import`), so `--init-from` and every command that loads a model accept one.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from miniglm.config import ConfigError, ModelConfig, load_config
from miniglm.errors import UserError
from miniglm.export import hf_import
from miniglm.io import atomic_dir, atomic_write_json, write_new
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
STATE = "state.pt"
META = "meta.json"
TOKENIZER = "tokenizer.json"


class CheckpointError(UserError, ValueError):
    """A missing, incomplete or incompatible checkpoint."""


@dataclass
class Loaded:
    model: MiniGLM
    tokenizer: Tokenizer
    meta: dict[str, Any]
    path: Path


def _weights_dict(model: MiniGLM) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)  # shared with model.embed_tokens.weight; stored once
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_checkpoint(path: str | Path, model: MiniGLM, tokenizer: Tokenizer, step: int,
                    state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint directory at `path` (replacing one that exists), atomically."""
    path = Path(path)
    meta = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "model_config": asdict(model.config),
        "tokenizer_sha256": tokenizer.sha256,
        **(extra or {}),
    }
    # Serialised in memory and written by `write_new`: the serialisers' own file writers report a
    # full disk as an obscure RuntimeError; this way it is an OSError naming the file. Every file
    # is fsynced before `atomic_dir` renames the directory into place.
    with atomic_dir(path) as tmp:
        write_new(tmp / WEIGHTS, safetensors_bytes(_weights_dict(model), metadata={"format": "pt"}))
        if state is not None:
            buf = io.BytesIO()
            torch.save(state, buf)
            write_new(tmp / STATE, buf.getbuffer())
            del buf
        tokenizer.save(tmp / TOKENIZER)
        atomic_write_json(tmp / META, meta)
    return path


def is_checkpoint(path: Path) -> bool:
    return (path / WEIGHTS).is_file() and (path / META).is_file()


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete `step_*` checkpoints of a run, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    found = [p for p in ckdir.glob("step_*") if "." not in p.name and is_checkpoint(p)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def run_dir_of(ckpt: Path) -> Path | None:
    """RUN for RUN/checkpoints/<name>/, else None (a loose checkpoint or a Hugging Face directory)."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A checkpoint dir as given, or a run dir's `best` (or `latest`) checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint or run directory not found: {path}")
    if is_checkpoint(path) or hf_import.is_hf_directory(path):  # a Hugging Face Llama dir reads as one
        return path
    steps = list_checkpoints(path)
    best = path / "checkpoints" / "best"
    if which == "best" and is_checkpoint(best):
        return best
    if steps:
        return steps[-1]
    if is_checkpoint(best):
        return best
    raise CheckpointError(f"no complete checkpoint in {path} (expected {WEIGHTS} + {META}, "
                          f"or checkpoints/step_*/ inside a run directory)")


def read_meta(ckpt: Path) -> dict[str, Any]:
    if hf_import.is_hf_directory(ckpt):
        return hf_import.read_meta(ckpt)
    try:
        meta = json.loads((ckpt / META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{ckpt / META}: unreadable checkpoint metadata ({e})") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{ckpt}: checkpoint format version {version!r}, this MiniGLM reads "
                              f"version {FORMAT_VERSION}")
    return meta


def load_weights(model: MiniGLM, ckpt: Path) -> None:
    """Strictly load `ckpt`'s weights into `model`; every missing/extra/mis-shaped tensor is named."""
    if hf_import.is_hf_directory(ckpt):
        tensors = hf_import.read_tensors(ckpt, model.config.tie_word_embeddings)
    else:
        try:
            tensors = load_file(str(ckpt / WEIGHTS))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{ckpt / WEIGHTS}: unreadable weights ({e})") from None
    expected = _weights_dict(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:3]))
    if problems:
        raise CheckpointError(f"{ckpt}: weights do not fit the model: {' | '.join(problems)}")
    model.load_state_dict(tensors, strict=False)  # tied lm_head.weight comes with the embedding


def model_config_of(meta: dict[str, Any], ckpt: Path) -> ModelConfig:
    try:
        return load_config(ModelConfig, overrides=meta["model_config"])
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{ckpt / META}: bad model_config ({e})") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", which: str = "best",
                    dtype: torch.dtype | None = None) -> Loaded:
    """Model (eval mode), tokenizer and metadata of a checkpoint or run directory."""
    ckpt = resolve_checkpoint(path, which)
    meta = read_meta(ckpt)
    tok = Tokenizer.from_file(ckpt / TOKENIZER)
    if tok.sha256 != meta.get("tokenizer_sha256"):
        raise CheckpointError(f"{ckpt}: tokenizer.json (sha256 {tok.sha256[:12]}) is not the one the "
                              f"model was trained with ({str(meta.get('tokenizer_sha256'))[:12]})")
    model = MiniGLM(model_config_of(meta, ckpt))
    load_weights(model, ckpt)
    model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    model.eval()
    return Loaded(model, tok, meta, ckpt)


def load_state(ckpt: Path) -> dict[str, Any]:
    """Training state of a checkpoint, read without unpickling arbitrary objects."""
    if not (ckpt / STATE).is_file():
        raise CheckpointError(f"{ckpt}: no {STATE} (a weights-only checkpoint cannot be resumed)")
    try:
        with warnings.catch_warnings():  # torch's multi-line advice about foreign pickles is not for users
            warnings.simplefilter("ignore")
            return torch.load(ckpt / STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: never for a file we did not write
        raise CheckpointError(f"{ckpt / STATE}: not a valid training state (it holds objects other than "
                              f"tensors and plain values; refusing to load it)") from None
    except OSError:
        raise
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{ckpt / STATE}: not a valid training state ({reason[:200]})") from None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (the `best` copy is separate)."""
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else list_checkpoints(run_dir):
        shutil.rmtree(old, ignore_errors=True)
