"""The transformer: shapes, causality, initial loss, overfitting, the loss mask, the KV cache, and
logits parity with `transformers.LlamaForCausalLM` (which proves the Hugging Face naming)."""

from __future__ import annotations

import math

import pytest
import torch
from reference import masked_cross_entropy

from miniglm.config import ModelConfig
from miniglm.model.model import KVCache, MiniGLM


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64)
    return ModelConfig(**{**base, **kw})


@pytest.fixture
def model() -> MiniGLM:
    torch.manual_seed(0)
    return MiniGLM(tiny())


def test_output_shapes(model):
    x = torch.randint(0, 97, (3, 10))
    logits, loss = model(x)
    assert logits.shape == (3, 10, 97) and loss is None
    logits, loss = model(x, x)  # with targets only the loss is computed (no (B, T, V) logits)
    assert logits is None and loss.shape == () and torch.isfinite(loss)
    logits, _ = model(x, last_only=True)
    assert logits.shape == (3, 1, 97)


def test_too_long_input_is_refused(model):
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_parameter_count_excludes_tied_embedding_once(model):
    n_emb = 97 * 32
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert model.num_params() - model.num_params(non_embedding=True) == n_emb
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_causality(model):
    torch.manual_seed(1)
    x = torch.randint(0, 97, (2, 16))
    t = 7
    x2 = x.clone()
    x2[:, t + 1:] = torch.randint(0, 97, (2, 16 - t - 1))
    assert not torch.equal(x, x2)
    a, b = model(x)[0], model(x2)[0]
    torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_initial_loss_is_about_ln_vocab():
    torch.manual_seed(0)
    cfg = tiny(vocab_size=2000, hidden_size=64, intermediate_size=128)
    m = MiniGLM(cfg)
    x, y = torch.randint(0, 2000, (4, 32)), torch.randint(0, 2000, (4, 32))
    _, loss = m(x, y)
    assert abs(loss.item() - math.log(2000)) < 0.05


def test_tiny_model_overfits_one_batch(model):
    torch.manual_seed(0)
    x = torch.randint(0, 97, (4, 16))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_all_zero_mask_gives_zero_loss_and_zero_grads(model):
    x = torch.randint(0, 97, (2, 8))
    _, loss = model(x, x, torch.zeros(2, 8))
    assert loss.item() == 0.0
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() == 0, name


def test_all_ones_mask_equals_plain_mean(model):
    x, y = torch.randint(0, 97, (2, 8)), torch.randint(0, 97, (2, 8))
    plain = model(x, y)[1]
    ones = model(x, y, torch.ones(2, 8))[1]
    torch.testing.assert_close(ones, plain)
    reference = masked_cross_entropy(model(x)[0], y)
    torch.testing.assert_close(plain, reference)


def test_partial_mask_averages_only_counted_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    y = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 0, 1]], dtype=torch.float32)
    token = torch.nn.functional.cross_entropy(logits.view(-1, 11), y.view(-1), reduction="none").view(2, 5)
    expected = (token * mask).sum() / mask.sum()
    torch.testing.assert_close(masked_cross_entropy(logits, y, mask), expected)
    torch.testing.assert_close(masked_cross_entropy(logits, y, mask.bool()), expected)


def test_dropout_only_while_training(model):
    x = torch.randint(0, 97, (2, 12))
    model.eval()
    plain = model(x)[0]
    model.set_dropout(0.3)
    assert torch.equal(model(x)[0], plain)  # evaluation never drops
    model.train()
    a, b = model(x)[0], model(x)[0]
    assert not torch.allclose(a, plain) and not torch.allclose(a, b)  # fresh masks each call
    a.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert torch.equal(model.set_dropout(0.0)(x)[0], plain)  # 0 in training is the plain forward
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="dropout must be in"):
            model.set_dropout(bad)


def test_kv_cache_matches_full_forward(model):
    x = torch.randint(0, 97, (2, 12))
    full = model(x)[0]
    cache = KVCache(model.config, batch_size=2, max_len=12)
    parts = [model(x[:, :5], kv_cache=cache)[0]] + [model(x[:, t:t + 1], kv_cache=cache)[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kv_heads,tie", [(4, True), (2, False)])
def test_logits_match_transformers_llama(kv_heads, tie):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tiny(num_key_value_heads=kv_heads, tie_word_embeddings=tie, rope_theta=500.0, rms_norm_eps=1e-6)
    ours = MiniGLM(cfg).eval()
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta, tie_word_embeddings=tie,
        attention_bias=False, mlp_bias=False, hidden_act="silu")
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied head comes with the embedding
    x = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        ref = hf(input_ids=x).logits
        got = ours(x)[0]
        # the decoding path: fused (and, where it pays, oneDNN-packed) weights, prefill + cached steps
        cache = ours.new_cache(2, 20)
        decoded = torch.cat([ours(x[:, :12], kv_cache=cache)[0]]
                            + [ours(x[:, t:t + 1], kv_cache=cache)[0] for t in range(12, 20)], dim=1)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(decoded, ref, rtol=1e-4, atol=1e-4)
