"""Export a checkpoint as a Hugging Face `transformers` model directory:

    config.json             LlamaForCausalLM; rope written for transformers 4.x and 5.x alike
    model.safetensors       MiniGLM's parameter names are Llama's, so this is a copy (tied head stored once)
    generation_config.json  end/pad ids and MiniGLM's default sampling settings
    tokenizer.json          the checkpoint's tokenizer, unchanged (same sha256, so it re-imports)
    tokenizer_config.json   PreTrainedTokenizerFast with bos/eos/pad set and the chat template in Jinja
    README.md               model card (`miniglm.export.card`)

Writing needs neither `transformers` nor network access; `tests/export/test_export_hf.py` proves
the directory with transformers itself: logits, greedy generation and chat-template token ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from miniglm.config import ModelConfig, SampleConfig
from miniglm.export.card import render_card
from miniglm.export.output import ExportError, check_target
from miniglm.export.source import Source
from miniglm.io import atomic_dir
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import ASSISTANT_PREFIX, USER_PREFIX, Tokenizer

# --dtype name -> (torch dtype, name in config.json)
HF_DTYPES = {"f32": (torch.float32, "float32"), "f16": (torch.float16, "float16"),
             "bf16": (torch.bfloat16, "bfloat16")}


def _jinja_str(s: str) -> str:
    """`s` as a single-quoted Jinja string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def chat_template(eot_token: str) -> str:
    """MiniGLM's one chat template (`Tokenizer.render_conversation`) in Jinja: `问：{q}` for a user
    turn, `\\n答：{a}<|endoftext|>` for an assistant turn, and `\\n答：` as the generation prompt.
    Turns must alternate starting with the user: the template has no system role."""
    user, assistant, eot = _jinja_str(USER_PREFIX), _jinja_str(ASSISTANT_PREFIX), _jinja_str(eot_token)
    return (
        "{%- for message in messages -%}"
        "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
        "{{- raise_exception('MiniGLM chat turns alternate user/assistant, starting with user "
        "(there is no system role)') -}}"
        "{%- endif -%}"
        f"{{%- if message['role'] == 'user' -%}}{{{{- {user} + message['content'] -}}}}"
        f"{{%- else -%}}{{{{- {assistant} + message['content'] + {eot} -}}}}{{%- endif -%}}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{- {assistant} -}}}}{{%- endif -%}}"
    )


def hf_config(cfg: ModelConfig, tok: Tokenizer, dtype: str) -> dict[str, Any]:
    """config.json. transformers 5.x reads rope from `rope_parameters`, 4.x from `rope_theta`
    (and `rope_scaling: null`); both are written, with the same value."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings, "initializer_range": cfg.initializer_range,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta, "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "pretraining_tp": 1,
        "tie_word_embeddings": cfg.tie_word_embeddings, "use_cache": True,
        # MiniGLM has no BOS token and never prepends one; the end-of-text token stands in, as in GPT-2.
        "bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id, "pad_token_id": tok.pad_id,
        "torch_dtype": HF_DTYPES[dtype][1], "dtype": HF_DTYPES[dtype][1],  # 4.x name, 5.x name
    }


def tokenizer_config(tok: Tokenizer, cfg: ModelConfig) -> dict[str, Any]:
    eot = tok.id_to_token(tok.eot_id)
    return {
        # The generic fast tokenizer loads tokenizer.json as it is; a model-specific class (LlamaTokenizer)
        # would rebuild the pre-tokenizer its own way and tokenize differently.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eot, "eos_token": eot, "pad_token": tok.id_to_token(tok.pad_id), "unk_token": None,
        "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False,  # decode exactly as MiniGLM does
        "model_max_length": cfg.max_position_embeddings,
        "chat_template": chat_template(eot),
    }


def generation_config(tok: Tokenizer) -> dict[str, Any]:
    s = SampleConfig()
    return {"bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id, "pad_token_id": tok.pad_id,
            "do_sample": True, "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
            "repetition_penalty": s.repetition_penalty, "max_new_tokens": s.max_new_tokens}


def hf_state_dict(model: MiniGLM, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights under their (already Hugging Face) names; a tied head is stored once, as the embedding."""
    sd = model.state_dict()
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight")
    return {k: v.detach().to(device="cpu", dtype=dtype).contiguous() for k, v in sd.items()}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_hf(src: Source, out: str | Path, dtype: str = "f32", overwrite: bool = False) -> Path:
    """Write `src` as a Hugging Face model directory at `out` (atomically); returns `out`."""
    if dtype not in HF_DTYPES:
        raise ExportError(f"--dtype {dtype} is not supported for --format hf (choose from {', '.join(HF_DTYPES)})")
    out = Path(out)
    model, tok = src.loaded.model, src.loaded.tokenizer
    cfg = hf_config(model.config, tok, dtype)
    check_target(out, overwrite, src.path, is_dir=True)
    with atomic_dir(out) as tmp:
        save_file(hf_state_dict(model, HF_DTYPES[dtype][0]), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", cfg)
        _write_json(tmp / "generation_config.json", generation_config(tok))
        tok.save(tmp / "tokenizer.json")
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(tok, model.config))
        (tmp / "README.md").write_text(render_card(src, dtype), encoding="utf-8")
    return out
