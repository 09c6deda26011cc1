"""Read a Hugging Face Llama model directory as if it were a MiniGLM checkpoint.

`miniglm.checkpoint` asks `is_hf_directory` and then takes its metadata from `read_meta` and its
tensors from `read_tensors`, so `--init-from HF_DIR` (continue training or fine-tune an exported or
any Llama-architecture model), `sample`, `chat`, `eval` and `export` all accept such a directory.
The directory needs `config.json`, safetensors weights (one file or an index of shards) and a
`tokenizer.json`. Anything MiniGLM's network does not compute (biases, rope scaling, another
activation, a head size other than hidden/heads) is refused with a message that names it, rather
than loaded into a model that would silently compute something else. Needs no `transformers`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from miniglm.config import ConfigError, ModelConfig
from miniglm.errors import UserError
from miniglm.tokenizer import Tokenizer

CONFIG = "config.json"
SAFETENSORS, INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# LlamaConfig's defaults, for keys a config.json leaves out (transformers fills them in the same way)
LLAMA_DEFAULTS = {"intermediate_size": 11008, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
                  "initializer_range": 0.02, "tie_word_embeddings": False, "rope_theta": 10000.0}


class HFImportError(UserError, ValueError):
    """A Hugging Face directory MiniGLM cannot read or whose model it does not compute."""


def is_hf_directory(path: Path) -> bool:
    """A directory with a Hugging Face config.json and weights beside it (a MiniGLM run directory
    also has a config.json, but no weights at the top and a meta.json in its checkpoints)."""
    return (path.is_dir() and (path / CONFIG).is_file() and not (path / "meta.json").is_file()
            and any((path / n).is_file() for n in (SAFETENSORS, INDEX, *PICKLED)))


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HFImportError(f"{path / CONFIG}: unreadable ({e})") from None
    if not isinstance(cfg, dict):
        raise HFImportError(f"{path / CONFIG}: not a JSON object")
    return cfg


def _rope_theta(cfg: dict[str, Any], where: Path) -> float:
    """The rotary base, refusing any scaled rope (transformers 4.x `rope_scaling`, 5.x `rope_parameters`)."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    for name, d in (("rope_parameters", params), ("rope_scaling", scaling)):
        kind = d.get("rope_type", d.get("type", "default")) if isinstance(d, dict) else d
        if kind != "default":
            raise HFImportError(f"{where}: {name} of type {kind!r} is not supported (MiniGLM computes plain "
                                f"rotary embeddings without scaling)")
    factor = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if factor != 1.0:
        raise HFImportError(f"{where}: partial_rotary_factor={factor} is not supported (MiniGLM rotates whole heads)")
    return float(params.get("rope_theta", cfg.get("rope_theta", LLAMA_DEFAULTS["rope_theta"])))


def model_config(path: str | Path) -> ModelConfig:
    """The MiniGLM ModelConfig of a Hugging Face Llama directory, or an error naming what does not fit."""
    path = Path(path)
    cfg, where = _read_config(path), path / CONFIG
    if cfg.get("model_type") != "llama":
        raise HFImportError(f"{where}: model_type {cfg.get('model_type')!r} is not supported "
                            f"(MiniGLM imports Llama-architecture models, model_type 'llama')")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise HFImportError(f"{where}: hidden_act {act!r} is not supported (MiniGLM's MLP is SwiGLU: silu)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise HFImportError(f"{where}: {key}=true is not supported (MiniGLM's projections have no bias)")
    try:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        values = dict(vocab_size=int(cfg["vocab_size"]), hidden_size=hidden,
                      num_hidden_layers=int(cfg["num_hidden_layers"]), num_attention_heads=heads,
                      num_key_value_heads=int(cfg.get("num_key_value_heads") or heads))
    except (KeyError, TypeError, ValueError) as e:
        raise HFImportError(f"{where}: missing or invalid {e}") from None
    head_dim = cfg.get("head_dim") or hidden // heads
    if head_dim * heads != hidden:
        raise HFImportError(f"{where}: head_dim={head_dim} x {heads} heads != hidden_size={hidden} "
                            f"(MiniGLM's head size is hidden_size / num_attention_heads)")
    values |= {k: cfg.get(k, d) for k, d in LLAMA_DEFAULTS.items() if k != "rope_theta"}
    values["rope_theta"] = _rope_theta(cfg, where)
    try:
        return ModelConfig(**values)
    except ConfigError as e:
        raise HFImportError(f"{where}: {e}") from None


def read_meta(path: str | Path) -> dict[str, Any]:
    """Checkpoint metadata (as `miniglm.checkpoint.read_meta` returns it) for a Hugging Face directory."""
    from miniglm.checkpoint import FORMAT_VERSION

    path = Path(path)
    if not any((path / n).is_file() for n in (SAFETENSORS, INDEX)):
        raise HFImportError(f"{path}: weights only as {PICKLED[0]} (a pickle, which MiniGLM never loads); "
                            f"re-save them with save_pretrained(..., safe_serialization=True)")
    if not (path / "tokenizer.json").is_file():
        raise HFImportError(f"{path}: no tokenizer.json (save the model's fast tokenizer beside it)")
    cfg = model_config(path)
    tok = Tokenizer.from_file(path / "tokenizer.json")
    if tok.vocab_size > cfg.vocab_size:
        raise HFImportError(f"{path}: tokenizer.json has {tok.vocab_size} tokens but config.json's vocab_size "
                            f"is {cfg.vocab_size}")
    # No "mode": whether the weights were pretrained or fine-tuned is not recorded in the directory.
    return {"format_version": FORMAT_VERSION, "step": None, "source": "huggingface",
            "model_config": asdict(cfg), "tokenizer_sha256": tok.sha256}


def read_tensors(path: str | Path, tie_word_embeddings: bool) -> dict[str, torch.Tensor]:
    """All weights of the directory under their Hugging Face names (= MiniGLM's), shards merged.

    Dropped: a stored `lm_head.weight` when the head is tied (transformers ties it on load too) and
    the `rotary_emb.inv_freq` buffers older transformers saved (MiniGLM recomputes them)."""
    path = Path(path)
    files = [path / SAFETENSORS]
    if not files[0].is_file():
        try:
            index = json.loads((path / INDEX).read_text(encoding="utf-8"))
            files = [path / f for f in dict.fromkeys(index["weight_map"].values())]
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise HFImportError(f"{path / INDEX}: unreadable shard index ({e})") from None
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors |= load_file(str(f))
        except Exception as e:  # safetensors raises its own error types
            raise HFImportError(f"{f}: unreadable weights ({e})") from None
    if tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    return {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
