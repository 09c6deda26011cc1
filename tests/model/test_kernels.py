"""The fast paths of `miniglm.model.kernels` against their plain references: chunked linear + cross-entropy
vs full logits + `masked_cross_entropy`, the oneDNN float32 `Linear` vs `F.linear`, and two-block
causal attention vs `scaled_dot_product_attention` (values and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import masked_cross_entropy

from miniglm.model import kernels


def grads(fn, *tensors):
    out = fn(*tensors)
    out.backward(torch.ones_like(out) if out.dim() else None)
    result = [out.detach()] + [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return result


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_matches_reference(masked, dtype):
    torch.manual_seed(0)
    N, C, V = 600, 32, 700  # several chunks, the last one partial
    h = torch.randn(N, C, requires_grad=True)
    w = (0.2 * torch.randn(V, C)).requires_grad_()
    t = torch.randint(0, V, (N,))
    mask = (torch.rand(N) > 0.4).float() if masked else None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        ref = grads(lambda h, w: masked_cross_entropy(h @ w.t(), t, mask), h, w)
        got = grads(lambda h, w: 3.0 * kernels.linear_cross_entropy(h, w, t, mask, chunk=256), h, w)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(got[0], 3.0 * ref[0], rtol=1e-5, atol=1e-5)  # loss is accumulated in float32
    torch.testing.assert_close(got[1], 3.0 * ref[1], **tol)
    torch.testing.assert_close(got[2], 3.0 * ref[2], **tol)


def test_linear_cross_entropy_without_grad_and_single_backward():
    h, w, t = torch.randn(10, 8), torch.randn(20, 8), torch.randint(0, 20, (10,))
    with torch.no_grad():
        torch.testing.assert_close(kernels.linear_cross_entropy(h, w, t), F.cross_entropy(h @ w.t(), t))
    h.requires_grad_()
    loss = kernels.linear_cross_entropy(h, w, t)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


@pytest.mark.parametrize("rows", [4, 40])  # below and above MIN_ROWS
def test_onednn_linear_matches_f_linear(rows, monkeypatch):
    if getattr(torch.ops.mkldnn, "_linear_pointwise", None) is None or not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN linear")
    monkeypatch.setattr(kernels, "_float32_matmul", "onednn")  # whatever the rule picks here
    torch.manual_seed(0)
    layer = kernels.Linear(48, 80, bias=False)
    x = torch.randn(2, rows, 48, requires_grad=True)
    got = grads(lambda x, w: layer(x), x, layer.weight)
    ref = grads(lambda x, w: F.linear(x, w), x, layer.weight)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_matmul_tn_either_orientation(monkeypatch):
    monkeypatch.setattr(kernels, "_float32_matmul", "onednn")
    a, b = torch.randn(64, 30), torch.randn(64, 20)
    torch.testing.assert_close(kernels.matmul_tn(a, b), a.t() @ b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.matmul_tn(b, a), b.t() @ a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T", [128, 256])
def test_two_block_attention_matches_sdpa(T):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, T, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    got = grads(kernels.causal_attention, q, k, v)
    ref = grads(lambda q, k, v: F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
                .to(q.dtype), q, k, v)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05)
    assert (got[0][:, :, :T // 2] - ref[0][:, :, :T // 2]).abs().max() < 0.05  # first block is causal too
