"""Export a checkpoint as one GGUF file for llama.cpp (and Ollama, LM Studio), written with `gguf`.

Architecture `llama`; tensors under llama.cpp's names (one mapping table below). Two details
decide whether the file computes what MiniGLM computes, and both are tested:

- Rotary layout. MiniGLM (like Hugging Face Llama) rotates dimension i with i + D/2
  (`rotate_half`); llama.cpp's `llama` architecture rotates adjacent pairs (2i, 2i + 1). The rows of
  q_proj and k_proj are therefore reordered per head (`interleave_rotary`), as llama.cpp's own
  convert_hf_to_gguf.py does; attention scores are unchanged because q and k move together.
- Tokenizer. Vocabulary model `gpt2` (byte-level BPE: tokens in GPT-2's byte-to-unicode spelling,
  exactly as in tokenizer.json, plus the merges) and pre-tokenizer `gpt-2`. MiniGLM trains its
  tokenizer with `ByteLevel(add_prefix_space=False, use_regex=True)`, whose split regex is GPT-2's
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`; llama.cpp's
  `gpt-2` pre-type splits with that same expression (`unicode_regex_split_custom_gpt2`), so it is
  the honest name, not a guess. A tokenizer built any other way (a normalizer, another
  pre-tokenizer, e.g. one imported from a non-MiniGLM model) is refused rather than mislabelled.
  Special tokens (`<|endoftext|>`, `<|pad|>`) are CONTROL tokens: llama.cpp matches them in text
  only when asked to parse specials, as MiniGLM's encoder always does.

dtypes: f32 (exact), f16, q8_0 (2-D weights in blocks of 32 with one f16 scale; a matrix whose rows
are not a multiple of 32 stays f16, as in llama.cpp's converter). Norm weights always stay f32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miniglm.export.hf import chat_template
from miniglm.export.output import ExportError, check_target
from miniglm.export.source import Source
from miniglm.extras import require
from miniglm.io import atomic_file
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer

GGUF_DTYPES = ("f32", "f16", "q8_0")
PRE_TOKENIZER = "gpt-2"
Q8_BLOCK = 32

# MiniGLM (= Hugging Face) name -> llama.cpp name; per-layer names below, under blk.{i}.
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(name: str) -> str:
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    prefix, _, rest = name.partition(".layers.")
    index, _, local = rest.partition(".")
    if prefix != "model" or local not in LAYER_NAMES:
        raise ExportError(f"no GGUF name for tensor {name}")
    return f"blk.{int(index)}.{LAYER_NAMES[local]}"


def interleave_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q/k_proj rows reordered per head: row i -> 2i, row i + D/2 -> 2i + 1 (see the module docstring)."""
    out, inp = w.shape
    return w.reshape(n_heads, 2, out // n_heads // 2, inp).transpose(1, 2).reshape(out, inp)


def deinterleave_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `interleave_rotary`."""
    out, inp = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def gguf_tensors(model: MiniGLM) -> dict[str, torch.Tensor]:
    """float32 tensors under llama.cpp's names, q/k rows interleaved; a tied head is left out
    (llama.cpp then uses token_embd for the output, as the model does)."""
    cfg = model.config
    heads = {"attn_q.weight": cfg.num_attention_heads, "attn_k.weight": cfg.num_key_value_heads}
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        g = gguf_name(name)
        t = t.detach().float().cpu()
        kind = g.split(".", 2)[-1]
        out[g] = interleave_rotary(t, heads[kind]) if kind in heads else t
    return out


def _tokenizer_json(tok: Tokenizer) -> dict[str, Any]:
    """The tokenizer's JSON, checked to be a byte-level BPE that llama.cpp's `gpt2` vocab + `gpt-2`
    pre-tokenizer reproduces; anything else is an ExportError that says what differs."""
    spec = json.loads(tok.to_json())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    problems = []
    odd = [k for k in ("byte_fallback", "ignore_merges", "dropout", "continuing_subword_prefix", "end_of_word_suffix")
           if model.get(k)]
    if model.get("type") != "BPE" or odd:
        problems.append(f"its model is not a plain BPE ({model.get('type')}{', ' if odd else ''}{', '.join(odd)})")
    if spec.get("normalizer") is not None:
        problems.append(f"it has a normalizer ({spec['normalizer'].get('type')})")
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        problems.append(f"its pre-tokenizer is not ByteLevel(add_prefix_space=False, use_regex=True): {pre}")
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        problems.append("its decoder is not ByteLevel")
    if problems:
        raise ExportError("the tokenizer cannot be written as llama.cpp's gpt2/gpt-2 vocabulary: "
                          + "; ".join(problems))
    return spec


def vocabulary(tok: Tokenizer, n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, token types, merges "a b") as llama.cpp's gpt2 vocabulary wants them.
    Ids the tokenizer does not use (an embedding larger than the vocabulary) become unused `[PAD{i}]`."""
    gguf = require("gguf", "export")
    spec = _tokenizer_json(tok)
    tokens: list[str | None] = [None] * n_vocab
    types = [int(gguf.TokenType.UNUSED)] * n_vocab
    for text, i in spec["model"]["vocab"].items():
        tokens[i], types[i] = text, int(gguf.TokenType.NORMAL)
    for added in spec.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        tokens[added["id"]], types[added["id"]] = added["content"], int(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    return [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)], types, merges


def _add_metadata(w: Any, src: Source, ftype: int) -> None:
    gguf = require("gguf", "export")
    model, tok = src.loaded.model, src.loaded.tokenizer
    c = model.config
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(src.run_dir.name if src.run_dir else src.path.name)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, types, merges = vocabulary(tok, c.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    # No BOS token exists and none is prepended; end-of-text is also BOS, as in GPT-2.
    w.add_bos_token_id(tok.eot_id)
    w.add_eos_token_id(tok.eot_id)
    w.add_eot_token_id(tok.eot_id)
    w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(chat_template(tok.id_to_token(tok.eot_id)))


def _encode(t: torch.Tensor, dtype: str) -> tuple[np.ndarray, Any]:
    """(array to write, its GGML type): norms (1-D) f32 always, matrices per `dtype`."""
    gguf = require("gguf", "export")
    q = gguf.GGMLQuantizationType
    a = t.numpy()
    if a.ndim == 1 or dtype == "f32":
        return a.astype(np.float32), q.F32
    if dtype == "q8_0" and a.shape[-1] % Q8_BLOCK == 0:
        return gguf.quants.quantize(a, q.Q8_0), q.Q8_0  # uint8 blocks; the writer derives the shape
    return a.astype(np.float16), q.F16


def export_gguf(src: Source, out: str | Path, dtype: str = "f16", overwrite: bool = False) -> Path:
    """Write `src` as a GGUF file at `out` (atomically); returns `out`."""
    if dtype not in GGUF_DTYPES:
        raise ExportError(f"--dtype {dtype} is not supported for --format gguf (choose from {', '.join(GGUF_DTYPES)})")
    gguf = require("gguf", "export")
    out = Path(out)
    check_target(out, overwrite, src.path, is_dir=False)
    tensors = gguf_tensors(src.loaded.model)
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        try:
            _add_metadata(w, src, int(ftype))
            for name, t in tensors.items():
                data, kind = _encode(t, dtype)
                w.add_tensor(name, data, raw_dtype=kind if kind == gguf.GGMLQuantizationType.Q8_0 else None)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()
    return out


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, str]]]:
    """(metadata key -> value, tensor name -> (float32 array in row-major shape, GGML type name)),
    quantized tensors dequantized. For tests, and for looking inside an exported file."""
    gguf = require("gguf", "export")
    reader = gguf.GGUFReader(str(path))
    meta = {k: _field_value(f, gguf.GGUFValueType) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        tensors[t.name] = (data.reshape([int(n) for n in reversed(t.shape)]).astype(np.float32),
                           t.tensor_type.name)
    return meta, tensors


def _field_value(field: Any, kinds: Any) -> Any:
    """A metadata value as Python data (`ReaderField.contents()` does this, but only from gguf 0.11)."""
    def one(index: int, kind: Any) -> Any:
        part = field.parts[index]
        return bytes(part).decode("utf-8") if kind == kinds.STRING else part.tolist()[0]

    if field.types[0] == kinds.ARRAY:
        return [one(i, field.types[-1]) for i in field.data]
    return one(field.data[0], field.types[0])
