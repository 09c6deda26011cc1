"""The MiniGLM transformer, top to bottom in one file: the ONE definition of the network.

A Llama-style decoder: token embedding -> N x [RMSNorm -> causal self-attention with rotary
position embedding -> residual, RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head, tied to
the embedding or not (`tie_word_embeddings`). While training, `set_dropout` can drop a share of the
embedding and of each branch's output before the residual sum (a training setting, not a shape).
Module and parameter names are Hugging Face Llama's (`model.embed_tokens`,
`model.layers.{i}.self_attn.q_proj`, ..., `lm_head`), and rotary embedding uses the same
`rotate_half` convention, so exporting to `transformers.LlamaForCausalLM` is a renaming-free copy.

Shape letters: B batch, T query length, S key length (cache + T), C hidden size, H query heads,
K key/value heads, D head size, V vocabulary.

One forward serves training, scoring and decoding (`MiniGLM.forward`):
- with targets it returns the loss, computed chunk by chunk from the final hidden states so the
  (B, T, V) logits are never materialised (`kernels.linear_cross_entropy`): the masked mean for
  training, or per-token losses (`reduction="none"`) for evaluation;
- without targets it returns logits (all positions, or the last one with `last_only`);
- with a `KVCache` (from `new_cache`) it appends this call's keys/values and attends over the
  cache; `position_ids` + `attn_mask` let rows of different lengths share one cache (left padding).
Decoding is memory-bound (every weight is read once per token), so `new_cache` also lays the
weights out for it (`fuse`): q/k/v fused into one matrix and gate/up into another (4 products per
block instead of 7), each laid out for the kernel that reads it fastest (`kernels.pack_linear`). The fused
weights are derived from the parameters, rebuilt whenever a parameter changes, and used only on
the cached path; the arithmetic is the same (tests compare both paths, and both with transformers).
On a CPU the cache holds float32 keys/values whatever the weights' dtype, and attention over it
runs in float32, where CPU kernels are several times faster for one query than in bfloat16.
One row, one position at a time (chat, sample, streaming) in float32 or int8 on a CPU goes through
`MiniGLM.step`: the same decode arithmetic in numpy, whose ~1 us per small operation (against
torch's 5-30 us) leaves a token's time to reading the weights; each block has its `step` beside
its `decode` and `forward`.
`quantize("int8")` (inference on a CPU) builds those decode-time matrices, the LM head included,
as per-channel int8 (`kernels.int8_linear`) and then routes EVERY forward through them, scoring
too (token losses from the int8 head a chunk at a time), so what is measured is what generates.
This file knows nothing of training or generation loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from miniglm.config import ModelConfig
from miniglm.model.kernels import (
    Linear,
    LinearFn,
    causal_attention,
    default_int8_kernel,
    int8_linear,
    linear_cross_entropy,
    pack_linear,
    token_losses,
)

Layout = Callable[[torch.Tensor], LinearFn]  # a weight -> its decode-time product (packed or int8)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 (as Llama does) so bf16 activations don't lose the small variances.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_tables(cfg: ModelConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables, each (max_position_embeddings, D), HF layout [f0..f(D/2-1), f0..f(D/2-1)].

    The sin table carries rotate_half's sign (-sin on the first half): rotating is then one cat and
    two products, and since negation is exact the result is bit for bit HF's x*cos + rotate_half(x)*sin.
    """
    D = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float32, device=device) / D))
    t = torch.arange(cfg.max_position_embeddings, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (P, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (P, D)
    sin = emb.sin()
    return emb.cos(), torch.cat((-sin[:, :D // 2], sin[:, D // 2:]), dim=-1)


def normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without its weight (decoding folds the weight into the next product), in float32."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.size(-1),), None, eps)  # one op: a quarter less time than the five of RMSNorm
    return F.rms_norm(x.float(), (x.size(-1),), None, eps).to(x.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, with the sign in the table; x: (B, H, T, D), cos/sin: (T, D) or (B, 1, T, D)."""
    half = x.size(-1) // 2
    return x * cos + torch.cat((x[..., half:], x[..., :half]), dim=-1) * sin


class KVCache:
    """Preallocated keys/values for every layer: (B, K, max_len, D) each, filled up to `pos`.

    All rows share one write position; rows of different prompt lengths are left-padded by the
    caller, which passes `position_ids` and an `attn_mask` that hides the padding.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        self.max_len = max_len
        self.pos = 0  # positions filled so far (advanced by the model after the last layer)
        self.weights_key: object | None = None  # set by MiniGLM.new_cache: decode with the fused weights
        self._views: tuple | None = None  # see numpy_rows

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k.size(2)
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def reset(self) -> None:
        self.pos = 0

    def numpy_rows(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer, numpy views (K, max_len, D) of row 0's keys and values (shared memory),
        made once for the tensors the cache holds now."""
        if self._views is None or self._views[0] is not self.k or self._views[1] is not self.v:
            self._views = (self.k, self.v, [(k[0].numpy(), v[0].numpy()) for k, v in zip(self.k, self.v)])
        return self._views[2]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        C = cfg.hidden_size
        self.q_proj = Linear(C, self.n_head * self.head_dim, bias=False)
        self.k_proj = Linear(C, self.n_kv * self.head_dim, bias=False)
        self.v_proj = Linear(C, self.n_kv * self.head_dim, bias=False)
        self.o_proj = Linear(self.n_head * self.head_dim, C, bias=False)
        self.fused: tuple[LinearFn, LinearFn] | None = None  # (qkv, o) for decoding; see MiniGLM.fuse

    def fuse(self, layout: Layout, norm_weight: torch.Tensor) -> None:
        """Decode-time weights: q/k/v stacked, with the preceding RMSNorm's weight folded in."""
        qkv = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # ((H+2K)D, C)
        self.fused = (layout(qkv * norm_weight), layout(self.o_proj.weight))

    def forward(self, x, cos, sin, kv_cache: KVCache | None = None, attn_mask: torch.Tensor | None = None):
        B, T, C = x.shape
        H, K, D = self.n_head, self.n_kv, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)  # rotate in the compute dtype (bf16 under autocast)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return self.o_proj(self._attend(q, k, v, kv_cache, attn_mask, x))

    def decode(self, x, cos, sin, kv_cache: KVCache | None, attn_mask: torch.Tensor | None):
        """forward with the fused weights; x is normalised but not yet scaled by the norm's weight,
        cos/sin already in x's dtype. One product for q, k and v, one rotation for q and k."""
        B, T, C = x.shape
        H, K, D = self.n_head, self.n_kv, self.head_dim
        qkv = self.fused[0](x).view(B, T, H + 2 * K, D).transpose(1, 2)  # (B, H+2K, T, D)
        qk = qkv[:, :H + K]
        # roll by D/2 swaps the halves: rotate_half without its sign, which the sin table carries
        q, k = torch.addcmul(qk * cos, qk.roll(D // 2, dims=-1), sin).split([H, K], dim=1)
        return self.fused[1](self._attend(q, k, qkv[:, H + K:], kv_cache, attn_mask, x))

    def step(self, h: np.ndarray, cos: np.ndarray, sin: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray,
             slot: int, visible: np.ndarray | None) -> np.ndarray:
        """decode for one row and one position, in numpy (see MiniGLM.step): h (C,) normalised, cos/sin
        (D,), k_cache/v_cache (K, max_len, D) views of this layer's cache, written at `slot`;
        visible (slot + 1,) bool or None = every position so far."""
        H, K, D = self.n_head, self.n_kv, self.head_dim
        qkv = self.fused[0].row(h).reshape(H + 2 * K, D)
        qk = qkv[:H + K]
        # the halves swapped (rotate_half; its sign is in the sin table)
        qk = qk * cos + qk.reshape(H + K, 2, D // 2)[:, ::-1].reshape(H + K, D) * sin
        k_cache[:, slot], v_cache[:, slot] = qk[H:], qkv[H + K:]
        S = slot + 1
        scores = np.matmul(qk[:H].reshape(K, H // K, D), k_cache[:, :S].transpose(0, 2, 1))  # (K, H/K, S)
        scores *= D**-0.5
        if visible is not None:
            scores[..., ~visible] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        return self.fused[1].row(np.matmul(scores, v_cache[:, :S]).reshape(H * D))

    def _attend(self, q, k, v, kv_cache: KVCache | None, attn_mask: torch.Tensor | None, x: torch.Tensor):
        """Attention of q (B, H, T, D) over k, v (B, K, T, D) and the cache -> (B, T, H*D) in x's dtype."""
        B, _, T, _ = q.shape
        if kv_cache is None:
            y = causal_attention(*self._repeat_kv(q, k, v)) if attn_mask is None else \
                F.scaled_dot_product_attention(*self._repeat_kv(q, k, v), attn_mask=attn_mask)
        else:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, K, S, D) in the cache's dtype
            if T == 1 and k.device.type == "cpu":
                return self._attend_one(q.to(k.dtype), k, v, attn_mask).to(x.dtype)
            q, k, v = self._repeat_kv(q.to(k.dtype), k, v)
            causal = attn_mask is None and T > 1 and past == 0
            if attn_mask is None and T > 1 and past > 0:  # a chunk after a cached prefix: causal with an offset
                attn_mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
            if y.dtype != x.dtype:
                y = y.to(x.dtype)
        return y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H*D)

    def _attend_one(self, q, k, v, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """One query per row over the cache, q (B, H, 1, D), k/v (B, K, S, D) -> (B, 1, H*D).

        Two batched products and a softmax, each group of H/K query heads against its K/V head
        without repeating it: for a single query on a CPU this takes ~2/3 of the time of SDPA's
        flash kernel, whose tiling buys nothing here."""
        B, H, _, D = q.shape
        K = k.size(1)
        scores = torch.matmul(q.reshape(B, K, H // K, D), k.transpose(-1, -2)).mul_(D**-0.5)  # (B, K, H/K, S)
        if attn_mask is not None:  # (B, 1, 1, S) bool, True = may attend
            scores.masked_fill_(~attn_mask, float("-inf"))
        return torch.matmul(scores.softmax(dim=-1), v).view(B, 1, H * D)  # (B, K, H/K, D) = heads in order

    def _repeat_kv(self, q, k, v):
        if self.n_kv != self.n_head:  # grouped-query attention: share each K/V head among H/K query heads
            k = k.repeat_interleave(self.n_head // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv, dim=1)
        return q, k, v


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

        self.fused: tuple[LinearFn, LinearFn] | None = None  # (gate_up, down) for decoding

    def fuse(self, layout: Layout, norm_weight: torch.Tensor) -> None:
        """Decode-time weights: gate/up stacked, with the preceding RMSNorm's weight folded in."""
        gate_up = torch.cat([self.gate_proj.weight, self.up_proj.weight])  # (2I, C)
        self.fused = (layout(gate_up * norm_weight), layout(self.down_proj.weight))

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def decode(self, x):
        """forward with the fused weights; x normalised but not yet scaled by the norm's weight."""
        gate, up = self.fused[0](x).chunk(2, dim=-1)
        return self.fused[1](F.silu(gate).mul_(up))

    def step(self, h: np.ndarray) -> np.ndarray:
        """decode for one row in numpy; silu(g) = g * sigmoid(g) with sigmoid(g) = (1 + tanh(g/2)) / 2,
        which cannot overflow."""
        gate_up = self.fused[0].row(h)
        gate, up = gate_up[:gate_up.size // 2], gate_up[gate_up.size // 2:]
        return self.fused[1].row(gate * (0.5 + 0.5 * np.tanh(0.5 * gate)) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, kv_cache=None, attn_mask=None, dropout: float = 0.0):
        """dropout: the share of each branch's output zeroed before the residual sum (0: none)."""
        x = x + F.dropout(self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, attn_mask), dropout)
        return x + F.dropout(self.mlp(self.post_attention_layernorm(x)), dropout)

    def fuse(self, layout: Layout) -> None:
        self.self_attn.fuse(layout, self.input_layernorm.weight)
        self.mlp.fuse(layout, self.post_attention_layernorm.weight)

    def decode(self, x, cos, sin, kv_cache, attn_mask):
        """forward with the fused weights (the norms' weights are inside them); plain method calls,
        no nn.Module call machinery: decoding runs this for every token."""
        eps = self.input_layernorm.eps
        x = x + self.self_attn.decode(normalize(x, eps), cos, sin, kv_cache, attn_mask)
        return x + self.mlp.decode(normalize(x, eps))

    def step(self, x: np.ndarray, cos, sin, k_cache, v_cache, slot: int, visible) -> np.ndarray:
        """decode for one row and one position in numpy (see MiniGLM.step)."""
        eps = self.input_layernorm.eps
        x = x + self.self_attn.step(normalize_row(x, eps), cos, sin, k_cache, v_cache, slot, visible)
        return x + self.mlp.step(normalize_row(x, eps))


def normalize_row(x: np.ndarray, eps: float) -> np.ndarray:
    """`normalize` for one row (C,) in numpy."""
    return x * (1.0 / np.sqrt(np.dot(x, x) / x.size + eps))


class Backbone(nn.Module):
    """`model.*` in Hugging Face naming: embeddings, blocks, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # Tied to the LM head, whose (dense) gradient always arrives first: a sparse gradient for the
        # lookup is then added to it row by row instead of as a second dense (V, C) tensor.
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, sparse=cfg.tie_word_embeddings)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MiniGLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (> 0) before building the model")
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rotary_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._fused_key: tuple | None = None  # what the decode-time weights were built from (see fuse)
        self.quantization: tuple[str, str] | None = None  # ("int8", kernel) once quantize() ran
        self.fused_head: LinearFn | None = None
        self.numpy_step = True  # batch-1 decoding on a CPU through `step` (False: the torch decode path)
        self.dropout = 0.0  # see set_dropout
        self.apply(self._init_weights)
        # GPT-2 style: scale the projections that write into the residual stream by 1/sqrt(2N),
        # so the residual's variance does not grow with depth.
        std = cfg.initializer_range / math.sqrt(2 * cfg.num_hidden_layers)
        for layer in self.model.layers:
            nn.init.normal_(layer.self_attn.o_proj.weight, mean=0.0, std=std)
            nn.init.normal_(layer.mlp.down_proj.weight, mean=0.0, std=std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def set_dropout(self, p: float) -> MiniGLM:
        """While training (`self.training`), zero a share p of the embedding output and of each block's
        attention and MLP outputs before they join the residual stream, scaling the rest by 1/(1-p)
        (GPT-2's embd_pdrop/resid_pdrop; attention weights are not dropped). A training setting, not
        part of the shape: checkpoints and exports do not carry it; evaluation and decoding never drop."""
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.dropout = float(p)
        return self

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights are counted once
        if non_embedding:
            n -= self.model.embed_tokens.weight.numel()
            if not self.config.tie_word_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    # ----------------------------------------------------------------------- decoding

    def _fingerprint(self) -> tuple:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())

    @torch.no_grad()
    def fuse(self, kernel: str | None = None) -> MiniGLM:
        """Lay the weights out for decoding (see the module docstring); a no-op while they are current.

        kernel: the float32 products' kernel (`kernels.pack_linear`): None = the rule for this
        CPU, or "onednn" / "openblas" / "torch" for every matrix (ignored once the model is
        quantized: its matrices are int8).
        """
        fingerprint = self._fingerprint()
        current = (self._fused_key is not None and self._fused_key[0] == fingerprint
                   and self._fused_key[2] == self.quantization)
        if not current or (kernel is not None and kernel != self._fused_key[1]):
            if self.quantization is not None:
                int8_kernel = self.quantization[1]
                layout: Layout = lambda w: int8_linear(w, int8_kernel)  # noqa: E731
            else:
                layout = lambda w: pack_linear(w, kernel)  # noqa: E731
            for layer in self.model.layers:
                layer.fuse(layout)
            self.fused_head = layout(self.lm_head.weight * self.model.norm.weight)
            self._fused_key = (fingerprint, kernel, self.quantization)
        return self

    @torch.no_grad()
    def quantize(self, kind: str = "int8", kernel: str | None = None) -> MiniGLM:
        """Run every matrix product (blocks and LM head) with per-channel int8 weights from now on.

        For inference on a CPU with float32 activations: generation, scoring and evaluation all
        go through the int8 products (the embedding lookup stays float32: it reads one row per
        token). kernel: "dynamic" or "weight_only" (see `kernels.int8_linear`); None = the rule
        for this machine (`kernels.default_int8_kernel`). The float32 parameters stay (for
        saving, export); training a quantized model is refused.
        """
        if kind != "int8":
            raise ValueError(f"quantize: {kind!r} is not supported (int8)")
        weight = self.model.embed_tokens.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            raise ValueError(f"int8 weights run on the CPU with float32 activations; this model is "
                             f"{str(weight.dtype).removeprefix('torch.')} on {weight.device.type}")
        self.quantization = ("int8", kernel or default_int8_kernel())
        self.eval().requires_grad_(False)
        return self.fuse()

    def decode_plan(self) -> list[dict]:
        """Each decode-time product (fusing first): name, shape (out, in), kernel, weight bytes read per token."""
        self.fuse()
        plan = []
        for i, layer in enumerate(self.model.layers):
            a, m = layer.self_attn, layer.mlp
            for name, fn, w in (("qkv", a.fused[0], (a.q_proj, a.k_proj, a.v_proj)), ("o", a.fused[1], (a.o_proj,)),
                                ("gate_up", m.fused[0], (m.gate_proj, m.up_proj)), ("down", m.fused[1], (m.down_proj,))):
                shape = (sum(x.weight.size(0) for x in w), w[0].weight.size(1))
                plan.append({"name": f"layers.{i}.{name}", "shape": shape, "kernel": fn.kernel, "bytes": fn.nbytes})
        plan.append({"name": "lm_head", "shape": tuple(self.lm_head.weight.shape), "kernel": self.fused_head.kernel,
                     "bytes": self.fused_head.nbytes})
        return plan

    def step(self, input_ids: torch.Tensor, kv_cache: KVCache, position_ids: torch.Tensor | None = None,
             attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The fused decode path for one row and one position, in numpy: (1, 1) ids -> (1, 1, V) float32 logits.

        forward takes it at batch 1 on a CPU in float32 (int8 included). The same arithmetic as the
        torch decode path (tests hold them to each other), with the products through each fused
        weight's `row` (OpenBLAS, or the torch kernel on a zero-copy view) and the ~100 small
        operations of a token (norms, rotary, cache writes, attention, SiLU) in numpy, at ~1 us
        each instead of torch's ~5-30 us: on a 2-core CPU they cost torch about 4 ms per token, as
        much as reading the weights of a 25M-parameter model. The keys/values go into the cache's
        own tensors (shared memory). position_ids (1, 1) and attn_mask (1, 1, 1, S) as in forward.
        """
        slot = kv_cache.pos
        pos = slot if position_ids is None else int(position_ids.reshape(-1)[0])
        if slot >= kv_cache.max_len:
            raise ValueError(f"KV cache overflow: {slot + 1} positions > max_len {kv_cache.max_len}")
        if pos >= self.config.max_position_embeddings:
            raise ValueError(f"sequence of {pos + 1} tokens exceeds the context ({self.config.max_position_embeddings})")
        visible = None if attn_mask is None else attn_mask.reshape(-1)[:slot + 1].numpy()
        cos, sin = self.rope_cos.numpy()[pos], self.rope_sin.numpy()[pos]
        x = self.model.embed_tokens.weight.detach().numpy()[int(input_ids[0, 0])]
        for layer, (k, v) in zip(self.model.layers, kv_cache.numpy_rows()):
            x = layer.step(x, cos, sin, k, v, slot, visible)
        kv_cache.pos += 1
        return torch.from_numpy(self.fused_head.row(normalize_row(x, self.model.norm.eps))).view(1, 1, -1)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for decoding with this model (float32 on a CPU); fuses the weights first."""
        self.fuse()
        weight = self.model.embed_tokens.weight
        dtype = torch.float32 if weight.device.type == "cpu" else weight.dtype
        cache = KVCache(self.config, batch_size, max_len, device=weight.device, dtype=dtype)
        cache.weights_key = self._fused_key
        return cache

    # ----------------------------------------------------------------------- the forward pass

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) token ids
        targets: torch.Tensor | None = None,  # (B, T) next-token ids
        loss_mask: torch.Tensor | None = None,  # (B, T) 1 where the target counts
        kv_cache: KVCache | None = None,  # decoding: attend over and append to this cache
        position_ids: torch.Tensor | None = None,  # (B, T); default: cache.pos + arange(T)
        attn_mask: torch.Tensor | None = None,  # (B, 1, T, S) bool, True = may attend
        last_only: bool = False,  # logits of the last position only (generation)
        reduction: str = "mean",  # with targets: "mean" (masked mean) or "none" ((B, T) token losses)
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # (logits, None) or, given targets, (None, loss)
        B, T = input_ids.shape
        if (B == T == 1 and kv_cache is not None and targets is None and self.numpy_step and self._fused_key
                and kv_cache.weights_key is self._fused_key and input_ids.device.type == "cpu"
                and self.model.embed_tokens.weight.dtype == torch.float32):
            return self.step(input_ids, kv_cache, position_ids, attn_mask), None
        start = kv_cache.pos if kv_cache is not None else 0
        if position_ids is None:
            if start + T > self.config.max_position_embeddings:
                raise ValueError(f"sequence of {start + T} tokens exceeds the context "
                                 f"({self.config.max_position_embeddings})")
            cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]  # (T, D)
        else:
            cos, sin = self.rope_cos[position_ids].unsqueeze(1), self.rope_sin[position_ids].unsqueeze(1)  # (B,1,T,D)
        if self.quantization is not None:  # int8: every product through the int8 weights
            if self.training:
                raise RuntimeError("a quantized model is for inference only: it cannot be trained")
            if kv_cache is None or kv_cache.weights_key is not self._fused_key:
                self.fuse()  # (a cache from new_cache since the weights last changed needs no check)
            fused = True
        else:  # the fused weights only for a cache made by new_cache since the weights last changed
            fused = (kv_cache is not None and kv_cache.weights_key is not None
                     and kv_cache.weights_key is self._fused_key)
        dropout = self.dropout if self.training else 0.0  # (F.dropout at 0 returns its input)
        x = self.model.embed_tokens(input_ids)  # (B, T, C)
        if dropout:  # training only; decoding's forward stays as it was
            x = F.dropout(x, dropout)
        if fused:
            if cos.dtype != x.dtype:
                cos, sin = cos.to(x.dtype), sin.to(x.dtype)
            for layer in self.model.layers:
                x = layer.decode(x, cos, sin, kv_cache, attn_mask)
            x = normalize(x, self.model.norm.eps)  # its weight is folded into fused_head
        else:
            for layer in self.model.layers:
                x = layer(x, cos, sin, kv_cache, attn_mask, dropout)
            x = self.model.norm(x)
        if kv_cache is not None:
            kv_cache.pos += T
        if targets is not None and fused:  # int8 scoring: the (B, T, V) logits a chunk of rows at a time
            chunk = max(16, (1 << 22) // self.config.vocab_size)  # about 16 MB of float32 logits at a time
            losses = token_losses(self.fused_head, x.reshape(B * T, -1), targets.reshape(-1), chunk)
            if loss_mask is not None:
                losses = losses * loss_mask.reshape(-1).float()
            if reduction == "none":
                return None, losses.view(B, T)
            n = B * T if loss_mask is None else loss_mask.float().sum().clamp(min=1.0)
            return None, losses.sum() / n
        if targets is not None:  # loss without materialising the (B, T, V) logits
            mask = None if loss_mask is None else loss_mask.reshape(-1)
            loss = linear_cross_entropy(x.reshape(B * T, -1), self.lm_head.weight, targets.reshape(-1), mask,
                                        reduction=reduction)
            return None, loss if reduction == "mean" else loss.view(B, T)
        if last_only:
            x = x[:, -1:, :]
        if fused:
            return self.fused_head(x).float(), None  # (B, 1 or T, V) float32 for sampling
        return self.lm_head(x), None  # (B, T, V)
