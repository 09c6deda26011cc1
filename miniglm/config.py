"""Typed configuration for every stage: dataclasses with defaults, TOML presets, CLI overrides.

This module owns *what* can be configured and how values are checked; it imports no torch.
Every field has a one-line help text (shown by `miniglm <cmd> --help`). Values come from, in
order of precedence: command-line `--key=value` / `--key value`, a TOML file (`--config`), the
defaults below. Unknown keys, wrong types and impossible values raise `ConfigError`, whose
message names the key; the CLI turns it into a one-line error and exit code 2.

Presets live in `miniglm/configs/*.toml` (also reachable as `configs/` at the repo root);
`--config small` finds the preset named `small`, `--config path/to/file.toml` reads that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from miniglm.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "configs"


class ConfigError(UserError, ValueError):
    """A bad configuration value or key; the message is one line that names the key."""


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (the "short comment per field")."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


# --------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """Llama-style decoder shape; names follow Hugging Face `LlamaConfig`."""

    vocab_size: int = opt(0, "vocabulary size; 0 = take it from the tokenizer of the data")
    hidden_size: int = opt(512, "model width C")
    num_hidden_layers: int = opt(6, "number of transformer blocks")
    num_attention_heads: int = opt(8, "query heads H (head size D = hidden_size / H)")
    num_key_value_heads: int = opt(0, "key/value heads for grouped-query attention; 0 = same as heads")
    intermediate_size: int = opt(1408, "SwiGLU hidden width")
    max_position_embeddings: int = opt(512, "longest context the rotary tables are built for")
    rms_norm_eps: float = opt(1e-5, "epsilon inside RMSNorm")
    rope_theta: float = opt(10000.0, "rotary embedding base")
    initializer_range: float = opt(0.02, "std of the normal initialisation")
    tie_word_embeddings: bool = opt(True, "share the embedding matrix with the LM head")

    def __post_init__(self) -> None:
        if self.num_key_value_heads == 0:
            self.num_key_value_heads = self.num_attention_heads
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings"):
            _require(getattr(self, k) > 0, f"model.{k}", f"must be > 0, got {getattr(self, k)}")
        _require(self.vocab_size >= 0, "model.vocab_size", "must be >= 0")
        _require(self.hidden_size % self.num_attention_heads == 0, "model.hidden_size",
                 f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}")
        _require((self.hidden_size // self.num_attention_heads) % 2 == 0, "model.hidden_size",
                 "head size must be even for rotary embeddings")
        _require(self.num_attention_heads % self.num_key_value_heads == 0, "model.num_key_value_heads",
                 f"{self.num_key_value_heads} does not divide num_attention_heads={self.num_attention_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# --------------------------------------------------------------------------- data


@dataclass
class PrepareConfig:
    """`miniglm prepare`: text -> tokenizer.json + train.bin/val.bin + meta.json."""

    vocab_size: int = opt(16000, "BPE vocabulary size (capped for tiny corpora)")
    min_frequency: int = opt(2, "a pair must occur this often to be merged")
    val_fraction: float = opt(0.05, "fraction of documents held out for validation")
    seed: int = opt(1337, "seed of the document-level train/val split")
    split_on: Literal["document", "chapter", "paragraph"] = opt(
        "chapter", "what a 'document' is inside a .txt file: the whole file, a chapter (第…回/章), or a paragraph")
    encode_batch_size: int = opt(256, "documents per batch handed to the (multi-threaded) encoder")
    tokenizer_sample_mb: float = opt(0.0, "train the tokenizer on about this many MB of train documents; 0 = all")

    def __post_init__(self) -> None:
        _require(256 + 2 <= self.vocab_size <= 4_294_967_295, "vocab_size", f"must be >= 258, got {self.vocab_size}")
        _require(0.0 < self.val_fraction < 1.0, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        _require(self.min_frequency >= 1, "min_frequency", "must be >= 1")
        _require(self.encode_batch_size >= 1, "encode_batch_size", "must be >= 1")
        _require(self.tokenizer_sample_mb >= 0, "tokenizer_sample_mb", "must be >= 0")


@dataclass
class SFTDataConfig:
    """`miniglm prepare-sft`: Q&A -> fixed-length token rows + loss_mask."""

    block_size: int = opt(256, "tokens per row (the model's context for SFT)")
    val_fraction: float = opt(0.05, "fraction of examples held out for validation")
    seed: int = opt(1337, "seed of the train/val split")
    pack: bool = opt(False, "pack several short examples into one row")
    skip_bad: bool = opt(False, "skip malformed lines (and count them) instead of stopping")
    dedup: bool = opt(True, "drop exact duplicate examples")
    max_question_tokens: int = opt(0, "prompt token budget when an example must be cut; 0 = block_size // 2")

    def __post_init__(self) -> None:
        _require(self.block_size >= 8, "block_size", f"must be >= 8, got {self.block_size}")
        _require(0.0 <= self.val_fraction < 1.0, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        _require(self.max_question_tokens >= 0, "max_question_tokens", "must be >= 0")


# --------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """`miniglm train`: one loop for pretraining and SFT."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "model shape ([model] table)"})
    mode: Literal["pretrain", "sft"] = opt("pretrain", "pretrain on train.bin windows, or SFT on masked rows")
    data: str = opt("data/prepared", "directory made by `miniglm prepare` or `miniglm prepare-sft`")
    out: str = opt("runs/default", "run directory (config, metrics, checkpoints)")
    init_from: str = opt("", "start from this run's weights (SFT from a pretrained run)")
    max_steps: int = opt(1000, "optimizer steps")
    max_minutes: float = opt(0.0, "time budget: fit max_steps (and the cosine schedule) to the measured speed; 0 = off")
    batch_size: int = opt(16, "sequences per micro-batch (per process)")
    grad_accum_steps: int = opt(1, "micro-batches per optimizer step")
    block_size: int = opt(512, "tokens per sequence (<= model.max_position_embeddings); SFT takes it from its rows")
    learning_rate: float = opt(6e-4, "peak learning rate; 0 = the --init-from run's peak and final rates and "
                                      "its optimizer (its config.json; 5e-4 and 5e-5 when it has none)")
    min_lr: float = opt(6e-5, "learning rate at the end of the cosine decay")
    warmup_steps: int = opt(100, "linear warmup steps")
    weight_decay: float = opt(0.1, "AdamW weight decay (matrices only)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.95, "AdamW beta2")
    optimizer: Literal["adamw", "muon"] = opt(
        "adamw", "adamw, or muon: Muon (miniglm.train.step.Muon, update scaled to AdamW's size, so the same "
                 "learning rate) on the blocks' matrices and AdamW on the embedding, head and norm gains")
    adamw_lr_scale: float = opt(
        1.0, "with optimizer = muon: the AdamW side's learning rate (embedding, LM head, norm gains) as a "
             "multiple of learning_rate (Muon's), at every step of the schedule")
    grad_clip: float = opt(1.0, "clip the gradient norm to this; 0 = off")
    dropout: float = opt(0.0, "residual dropout while training: this share of the embedding output and of each "
                              "block's attention and MLP outputs is zeroed (GPT-2's embd/resid_pdrop); 0 = off; "
                              "evaluation and generation never drop")
    eval_interval: int = opt(200, "evaluate on val every N steps (and at the end); 0 = only at the end")
    eval_steps: int = opt(20, "val batches per evaluation; 0 = the whole validation set")
    log_interval: int = opt(10, "write a metrics line every N steps")
    checkpoint_interval: int = opt(200, "save a checkpoint every N steps (and at the end)")
    keep_last: int = opt(2, "step checkpoints kept (>= 1), besides the best one")
    seed: int = opt(1337, "seed for init, batches and dropout-free sampling")
    device: Literal["auto", "cpu", "cuda", "mps"] = opt("auto", "where to train; auto = cuda if available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt(
        "auto", "autocast dtype; auto = bfloat16 on CUDA with bf16 support and on CPUs with native bf16 "
                "(avx512_bf16/amx_bf16), else float32; resolved once and recorded, so --resume keeps it")
    matmul: Literal["auto", "onednn", "blas"] = opt(
        "auto", "float32 CPU matrix products: onednn or the default blas; auto = onednn on CPUs with "
                "AVX-512; resolved once and recorded, so --resume keeps it (the two round differently)")
    compile: bool = opt(False, "torch.compile the model")
    tensorboard: bool = opt(False, "also log to TensorBoard (needs the tensorboard package)")
    progress: bool = opt(True, "show a progress bar")

    def __post_init__(self) -> None:
        for k in ("max_steps", "batch_size", "grad_accum_steps", "block_size", "log_interval",
                  "checkpoint_interval", "keep_last"):
            _require(getattr(self, k) > 0, k, f"must be > 0, got {getattr(self, k)}")
        for k in ("warmup_steps", "eval_interval", "eval_steps", "weight_decay", "grad_clip"):
            _require(getattr(self, k) >= 0, k, f"must be >= 0, got {getattr(self, k)}")
        _require(self.max_minutes >= 0, "max_minutes", f"must be >= 0, got {self.max_minutes}")
        _require(self.learning_rate > 0 or (self.learning_rate == 0 and self.init_from), "learning_rate",
                 f"must be > 0 (or 0 with init_from: that run's rate), got {self.learning_rate}")
        _require(0 <= self.min_lr <= self.learning_rate or self.learning_rate == 0, "min_lr",
                 "must be in [0, learning_rate]")
        _require(self.adamw_lr_scale > 0, "adamw_lr_scale", f"must be > 0, got {self.adamw_lr_scale}")
        _require(self.adamw_lr_scale == 1 or self.optimizer == "muon", "adamw_lr_scale",
                 f"{self.adamw_lr_scale:g} applies to optimizer = muon only (with adamw, set learning_rate)")
        _require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        _require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1", "betas must be in [0, 1)")
        _require(self.block_size <= self.model.max_position_embeddings, "block_size",
                 f"{self.block_size} exceeds model.max_position_embeddings={self.model.max_position_embeddings}")


# --------------------------------------------------------------------------- generation / eval


@dataclass
class SampleConfig:
    """Generation settings shared by sample, chat and eval."""

    max_new_tokens: int = opt(200, "tokens to generate at most")
    temperature: float = opt(0.8, "softmax temperature; 0 = greedy")
    top_k: int = opt(50, "sample from the k most likely tokens; 0 = off")
    top_p: float = opt(0.95, "nucleus sampling mass; 1 = off")
    repetition_penalty: float = opt(
        1.1, "penalise tokens already in prompt or output: positive logits / this, negative * this; 1 = off")
    no_repeat_ngram_size: int = opt(0, "forbid any n-gram of this size that prompt or output already holds; 0 = off")
    seed: int = opt(1337, "sampling seed (same seed and prompt, same output)")
    device: Literal["auto", "cpu", "cuda", "mps"] = opt("auto", "where to run; auto = cuda if available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt(
        "auto", "weights/compute dtype; auto = as for training: bfloat16 on GPUs and CPUs with fast bf16, else float32")
    quantize: Literal["none", "int8"] = opt(
        "none", "int8 = per-channel int8 weights for every matrix product (CPU, float32 activations): "
                "a quarter of the bytes read per token; none = weights as stored")

    def __post_init__(self) -> None:
        _require(self.max_new_tokens > 0, "max_new_tokens", f"must be > 0, got {self.max_new_tokens}")
        _require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        _require(self.top_k >= 0, "top_k", f"must be >= 0, got {self.top_k}")
        _require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _require(self.repetition_penalty > 0, "repetition_penalty", "must be > 0")
        _require(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be >= 0")


# --------------------------------------------------------------------------- loading and overrides


def _check_value(key: str, tp: Any, value: Any) -> Any:
    """Coerce/check one value against a field's annotation (values from TOML or the command line)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_value(key, args[0], value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp}")  # pragma: no cover


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


def _from_mapping(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build `cls` from a (possibly nested) mapping, checking every key and value."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = prefix + key
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{full}' (known: {known})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                kwargs[key] = value
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a table of {tp.__name__} fields, got {value!r}")
            kwargs[key] = _from_mapping(tp, value, prefix=full + ".")
        else:
            kwargs[key] = _check_value(full, tp, value)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not str(e).startswith(prefix):
            raise ConfigError(prefix + str(e)) from None
        raise


def resolve_preset(name_or_path: str) -> Path:
    """`small` -> the bundled preset; anything else is a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and (PRESET_DIR / f"{name_or_path}.toml").is_file():
        return PRESET_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
        raise ConfigError(f"config file not found: {name_or_path} (bundled presets: {presets})")
    return path


def read_toml(path: str | Path) -> dict[str, Any]:
    path = resolve_preset(str(path))
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid onto `base`, nested dicts merged key by key (neither argument is changed)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(cls: type, items: list[str]) -> dict[str, Any]:
    """`["batch_size=8", "model.hidden_size=64"]` -> nested dict (values still strings)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


STAGE_SECTIONS = ("prepare", "prepare_sft")  # preset tables read by `miniglm prepare` / `prepare-sft`


def load_config(cls: type, path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                section: str | None = None) -> Any:
    """Defaults <- TOML file (optionally one `[section]` of it) <- overrides; checked, typed."""
    data: dict[str, Any] = {}
    if path:
        raw = read_toml(path)
        if section is not None:
            # A preset may hold several stages; take this stage's table plus shared top-level keys.
            raw = {k: v for k, v in raw.items() if k in {f.name for f in dataclasses.fields(cls)}} | raw.get(section, {})
        else:  # training reads the top level; the data stages' tables are theirs
            raw = {k: v for k, v in raw.items() if k not in STAGE_SECTIONS}
        data = raw
    if isinstance(overrides, list):
        overrides = parse_overrides(cls, overrides)
    return _from_mapping(cls, merge(data, overrides or {}))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON beside an artifact (atomically)."""
    from miniglm.io import atomic_write_json

    atomic_write_json(path, to_dict(cfg))


# --------------------------------------------------------------------------- argparse glue


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                         skip: tuple[str, ...] = ()) -> None:
    """Register `--field-name` / `--field_name` for every field of `cls` (nested: `--model.hidden_size`).

    Values are kept as strings and checked by `load_config`, so a TOML file and the command line
    go through the same checks. Defaults are suppressed so only given flags override the file.
    """
    group = parser.add_argument_group(f"{cls.__name__} fields (override with --key=value)")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        name = prefix + f.name
        if dataclasses.is_dataclass(tp):
            add_config_arguments(parser, tp, prefix=name + ".")
            continue
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        tname = ("|".join(map(str, typing.get_args(tp))) if typing.get_origin(tp) is Literal
                 else getattr(tp, "__name__", str(tp)))
        kwargs: dict[str, Any] = {"dest": "cfg::" + name, "default": argparse.SUPPRESS,
                                  "help": f"{f.metadata.get('help', '')} [{tname}, default: {default}]"}
        if tp is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        else:
            kwargs.update(metavar=f.name.upper())
        group.add_argument(*flags, **kwargs)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    return [f"{k[5:]}={v}" for k, v in vars(args).items() if k.startswith("cfg::")]
