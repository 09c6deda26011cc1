"""The MiniGLM transformer, top to bottom in one file.

A Llama-style decoder: token embedding -> N x [RMSNorm -> causal self-attention with rotary
position embedding -> residual, RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head tied to
the embedding. Module and parameter names are Hugging Face Llama's (`model.embed_tokens`,
`model.layers.{i}.self_attn.q_proj`, ..., `lm_head`), and rotary embedding uses the same
`rotate_half` convention, so exporting to `transformers.LlamaForCausalLM` is a renaming-free copy.

Shape letters: B batch, T query length, S key length (cache + T), C hidden size, H query heads,
K key/value heads, D head size, V vocabulary.

This file knows nothing of training or generation loops: it computes logits, or, given targets,
the masked loss (`(None, loss)`: the loss is computed chunk by chunk from the final hidden states
and the (B, T, V) logits are never materialised, see `miniglm.model.kernels`), and, when handed a
`KVCache`, appends to it. The matmuls go through `kernels.Linear` (an `nn.Linear` with a faster
float32 CPU path); `masked_cross_entropy` below is the plain reference for the loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from miniglm.config import ModelConfig
from miniglm.model.kernels import Linear, causal_attention, linear_cross_entropy


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
    """cos/sin tables, each (max_position_embeddings, D), HF layout: [f0..f(D/2-1), f0..f(D/2-1)]."""
    D = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float32, device=device) / D))
    t = torch.arange(cfg.max_position_embeddings, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (P, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (P, D)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, D); cos/sin: (T, D) or (B, 1, T, D)
    return x * cos + rotate_half(x) * sin


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

    def forward(self, x, cos, sin, kv_cache: KVCache | None = None, attn_mask: torch.Tensor | None = None):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)  # rotate in the compute dtype (bf16 under autocast)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, K, S, D)
        if self.n_kv != self.n_head:  # grouped-query attention: share each K/V head among H/K query heads
            k = k.repeat_interleave(self.n_head // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv, dim=1)
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        elif past == 0:
            y = causal_attention(q, k, v)
        elif T == 1:  # one new token attends to everything cached
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # a chunk appended after a cached prefix: causal with an offset
            S = k.size(2)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, C)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, kv_cache=None, attn_mask=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, attn_mask)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


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

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights are counted once
        if non_embedding:
            n -= self.model.embed_tokens.weight.numel()
            if not self.config.tie_word_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) token ids
        targets: torch.Tensor | None = None,  # (B, T) next-token ids
        loss_mask: torch.Tensor | None = None,  # (B, T) 1 where the target counts
        kv_cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,  # (B, T); default: cache.pos + arange(T)
        attn_mask: torch.Tensor | None = None,  # (B, 1, T, S) bool, True = may attend
        last_only: bool = False,  # compute logits for the last position only (generation)
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # (logits, None) or, given targets, (None, loss)
        B, T = input_ids.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if position_ids is None:
            if start + T > self.config.max_position_embeddings:
                raise ValueError(f"sequence of {start + T} tokens exceeds the context "
                                 f"({self.config.max_position_embeddings})")
            cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]  # (T, D)
        else:
            cos, sin = self.rope_cos[position_ids].unsqueeze(1), self.rope_sin[position_ids].unsqueeze(1)  # (B,1,T,D)
        x = self.model.embed_tokens(input_ids)  # (B, T, C)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, kv_cache, attn_mask)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.model.norm(x)
        if targets is not None:  # training/eval loss: the (B, T, V) logits are never materialised
            mask = None if loss_mask is None else loss_mask.reshape(-1)
            return None, linear_cross_entropy(x.reshape(B * T, -1), self.lm_head.weight, targets.reshape(-1), mask)
        if last_only:
            x = x[:, -1:, :]
        return self.lm_head(x), None  # (B, T, V)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                         loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum(mask * token_loss) / max(sum(mask), 1); no mask = plain mean over all tokens."""
    token_loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    if loss_mask is None:
        return token_loss.mean()
    mask = loss_mask.reshape(-1).to(token_loss.dtype)
    return (token_loss * mask).sum() / mask.sum().clamp(min=1.0)
