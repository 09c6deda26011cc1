"""The inference-only forward pass: a MiniGLM's weights laid out for generation.

`model.py` is the readable definition of the network (and what training runs); this module computes
the same function for generation, where one token at a time goes through the whole network and the
cost is reading the weights, not arithmetic. It owns three layout choices, made once per model:

- q/k/v projections fused into one matrix and gate/up into another: 4 matrix-vector products per
  block instead of 7, so fewer kernel launches and Python calls per token;
- on a CPU with oneDNN (float32, or bfloat16 where the CPU has bf16 instructions), the weights
  reordered into oneDNN's blocked layout: the default BLAS path reads a (V, C) matrix for one
  token at well under half the memory bandwidth oneDNN reaches (measured 2-5x on the LM head;
  for the `base` preset a whole decode step is ~1.4-1.8x faster).
  Small float32 matrices keep the default kernel, whose fixed cost per call is lower;
- rotary tables precomputed in the compute dtype with `rotate_half`'s sign folded into `sin`;
- on a CPU the KV cache is float32 whatever the weights' dtype: keys and values are computed
  exactly as in the model and stored without loss, and attention over them runs in float32,
  where the CPU kernels are 3-5x faster for one query than in bfloat16 (and more precise).

Everything else is the model's arithmetic, in the same order (RMSNorm in float32, the same rotary
convention, scaled-dot-product attention over the preallocated `KVCache`), so the engine's tests
compare this path with `MiniGLM.forward` without a cache: same greedy tokens, logits within float
tolerance. The packed copy costs one extra copy of the weights in memory.

`InferenceModel.of(model)` reuses the prepared copy while the model's parameters are unchanged (a
fingerprint of their storage, version counter, dtype and device), so calling generation between
training steps never sees stale weights.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F

from miniglm.model.model import KVCache, MiniGLM

Linear = Callable[[torch.Tensor], torch.Tensor]  # x (..., C_in) -> (..., C_out)
# float32 matrices smaller than this stay with the default kernel: a packed call costs ~10 us of
# fixed overhead, more than the whole product of a small matrix (measured; bf16 always gains)
PACK_MIN_FLOAT32 = 1 << 18

# model -> its prepared copy; weak, so a dropped model takes its copy with it
_PREPARED: weakref.WeakKeyDictionary[MiniGLM, InferenceModel] = weakref.WeakKeyDictionary()


def onednn_packs(device: torch.device, dtype: torch.dtype) -> bool:
    """True if oneDNN can run packed linear layers for this device and dtype (checked on a tiny case)."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return False
    return _onednn_works(dtype)


@functools.cache
def _onednn_works(dtype: torch.dtype) -> bool:
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        w = torch.linspace(-1, 1, 128).view(8, 16).to(dtype)  # no torch.randn: the global RNG stays untouched
        x = torch.linspace(1, -1, 32).view(2, 16).to(dtype)
        y = _packed_linear(w)(x)
        return bool(torch.allclose(y.float(), F.linear(x, w).float(), atol=1e-2, rtol=1e-2))
    except (AttributeError, RuntimeError, NotImplementedError):  # op missing in this torch build
        return False


def _packed_linear(weight: torch.Tensor) -> Linear:
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 1)
    op = torch.ops.mkldnn._linear_pointwise.default  # the overload itself: skips a dispatch step per call
    return lambda x: op(x, packed, None, "none", [], "")


def _plain_linear(weight: torch.Tensor) -> Linear:
    weight = weight.detach().contiguous()
    return lambda x: F.linear(x, weight)


def _fingerprint(model: MiniGLM) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())


class InferenceModel:
    """Generation-time forward of one model: `forward(ids, cache, ...)` -> logits, filling the cache."""

    def __init__(self, model: MiniGLM, packed: bool | None = None):
        """packed: None = oneDNN-pack where it pays off (if available), True = pack every matrix, False = never."""
        cfg = model.config
        weight = model.model.embed_tokens.weight
        self.config, self.device, self.dtype = cfg, weight.device, weight.dtype
        can_pack = onednn_packs(self.device, self.dtype) if packed is None else packed

        def make(w: torch.Tensor) -> Linear:
            small = self.dtype == torch.float32 and w.numel() < PACK_MIN_FLOAT32 and packed is None
            return _packed_linear(w) if can_pack and not small else _plain_linear(w)

        self.H, self.K, self.D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.eps = cfg.rms_norm_eps
        self.cache_dtype = torch.float32 if self.device.type == "cpu" else self.dtype
        self.fingerprint = _fingerprint(model)
        with torch.no_grad():
            self.embed = weight.detach()
            self.blocks = []
            for layer in model.model.layers:
                a, m = layer.self_attn, layer.mlp
                self.blocks.append((
                    layer.input_layernorm.weight.detach(),
                    make(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])),  # (H+2K)D x C
                    make(a.o_proj.weight),
                    layer.post_attention_layernorm.weight.detach(),
                    make(torch.cat([m.gate_proj.weight, m.up_proj.weight])),  # 2I x C
                    make(m.down_proj.weight),
                ))
            self.norm = model.model.norm.weight.detach()
            self.lm_head = make(model.lm_head.weight)
            half = self.D // 2
            self.cos = model.rope_cos.to(self.dtype)  # (P, D)
            # rotate_half(x) * sin == cat(x2, x1) * cat(-sin1, sin2): the sign lives in the table
            self.sin = torch.cat([-model.rope_sin[:, :half], model.rope_sin[:, half:]], dim=-1).to(self.dtype)

    @classmethod
    def of(cls, model: MiniGLM) -> InferenceModel:
        """The prepared copy of `model`, rebuilt only when its parameters changed."""
        prepared = _PREPARED.get(model)
        if prepared is None or prepared.fingerprint != _fingerprint(model):
            prepared = cls(model)
            _PREPARED[model] = prepared
        return prepared

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        return KVCache(self.config, batch_size, max_len, device=self.device, dtype=self.cache_dtype)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xf = x.float()  # as model.RMSNorm: normalise in float32
        return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def forward(
        self,
        ids: torch.Tensor,  # (B, T) token ids
        cache: KVCache,  # filled up to cache.pos; receives T more positions
        positions: torch.Tensor | None = None,  # (B, T); default cache.pos + arange(T) for every row
        attn_mask: torch.Tensor | None = None,  # (B, 1, T, S) bool, True = may attend; S = cache.pos + T
        last_only: bool = True,
    ) -> torch.Tensor:  # (B, 1 or T, V) float32 logits
        B, T = ids.shape
        H, K, D = self.H, self.K, self.D
        start = cache.pos
        if positions is None:
            cos, sin = self.cos[start:start + T], self.sin[start:start + T]  # (T, D)
        else:
            cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)  # (B, 1, T, D)
        if attn_mask is None and T > 1 and start > 0:  # a chunk after a cached prefix: offset causal
            attn_mask = torch.ones(T, start + T, dtype=torch.bool, device=ids.device).tril(diagonal=start)
        causal = attn_mask is None and T > 1
        x = F.embedding(ids, self.embed)  # (B, T, C)
        for i, (norm1, qkv_proj, o_proj, norm2, gate_up_proj, down_proj) in enumerate(self.blocks):
            qkv = qkv_proj(self._rms_norm(x, norm1)).view(B, T, H + 2 * K, D).transpose(1, 2)  # (B, H+2K, T, D)
            qk = qkv[:, :H + K]
            qk = qk * cos + torch.cat((qk[..., D // 2:], qk[..., :D // 2]), dim=-1) * sin  # rotary on q and k
            k, v = cache.update(i, qk[:, H:], qkv[:, H + K:])  # (B, K, S, D)
            if K != H:
                k, v = k.repeat_interleave(H // K, dim=1), v.repeat_interleave(H // K, dim=1)
            q = qk[:, :H].to(k.dtype)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal).to(x.dtype)
            x = x + o_proj(y.transpose(1, 2).reshape(B, T, H * D))
            gate, up = gate_up_proj(self._rms_norm(x, norm2)).chunk(2, dim=-1)
            x = x + down_proj(F.silu(gate) * up)
        cache.pos += T
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self._rms_norm(x, self.norm)).float()
