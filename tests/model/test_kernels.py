"""The fast paths of `miniglm.model.kernels` against their plain references: chunked linear + cross-entropy
vs full logits + `masked_cross_entropy`, the oneDNN float32 `Linear` vs `F.linear`, and two-block
causal attention vs `scaled_dot_product_attention` (values and gradients)."""

from __future__ import annotations

import contextlib

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


# --------------------------------------------------------------------------- decode-time products

needs_openblas = pytest.mark.skipif(not kernels.numpy_openblas(), reason="numpy is not built with OpenBLAS here")


@needs_openblas
@pytest.mark.parametrize("shape", [(96, 40), (40, 96)], ids=["tall (stored transposed)", "wide (stored as is)"])
def test_openblas_products_match_f_linear(shape):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(*shape, generator=g)
    fn = kernels.pack_linear(w, "openblas")
    assert fn.kernel.startswith("OpenBLAS float32") and fn.nbytes == w.numel() * 4
    for x in (torch.randn(1, 1, shape[1], generator=g), torch.randn(3, 5, shape[1], generator=g)):
        torch.testing.assert_close(fn(x), F.linear(x, w), rtol=1e-5, atol=1e-5)
    v = torch.randn(shape[1], generator=g)
    row = fn.row(v.numpy())
    assert row.shape == (shape[0],)
    torch.testing.assert_close(torch.from_numpy(row), F.linear(v, w), rtol=1e-5, atol=1e-5)


@needs_openblas
def test_openblas_batches_go_to_onednn_or_run_torch_on_one_thread(monkeypatch):
    """Several rows: the oneDNN copy on torch's threads where oneDNN runs; else OpenBLAS, with
    torch's threads down to one meanwhile (they would spin on OpenBLAS's cores)."""
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(48, 32, generator=g), torch.randn(4, 32, generator=g)
    entered = []

    @contextlib.contextmanager
    def recording(n):
        entered.append(n)
        yield
    monkeypatch.setattr(kernels, "torch_threads", recording)
    if kernels.onednn_packs(torch.device("cpu"), torch.float32):
        torch.testing.assert_close(kernels.pack_linear(w, "openblas")(x), F.linear(x, w), rtol=1e-5, atol=1e-5)
        assert entered == []
    monkeypatch.setattr(kernels, "_onednn_works", lambda dtype: False)
    fn = kernels.pack_linear(w, "openblas")
    torch.testing.assert_close(fn(x), F.linear(x, w), rtol=1e-5, atol=1e-5)
    assert entered == [1]
    torch.testing.assert_close(torch.from_numpy(fn.row(x[0].numpy())), F.linear(x[0], w), rtol=1e-5, atol=1e-5)
    assert entered == [1]  # a single row never touches torch's threads


@pytest.mark.parametrize("kernel", kernels.DECODE_KERNELS)
def test_every_decode_kernel_gives_a_row_product(kernel):
    if kernel == "openblas" and not kernels.numpy_openblas() or \
            kernel == "onednn" and not kernels.onednn_packs(torch.device("cpu"), torch.float32):
        pytest.skip(f"{kernel} does not run here")
    w = torch.linspace(-1, 1, 12 * 20).view(12, 20)
    v = torch.linspace(2, -1, 20)
    torch.testing.assert_close(torch.from_numpy(kernels.pack_linear(w, kernel).row(v.numpy())), w @ v,
                               rtol=1e-5, atol=1e-5)


def test_decode_kernel_rule_follows_the_instruction_set(monkeypatch):
    monkeypatch.setattr(kernels, "numpy_openblas", lambda: True)
    monkeypatch.setattr(kernels, "_onednn_works", lambda dtype: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert kernels.default_decode_kernel() == "onednn"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert kernels.default_decode_kernel() == "openblas"
    monkeypatch.setattr(kernels, "numpy_openblas", lambda: False)
    assert kernels.default_decode_kernel() == "onednn"
    monkeypatch.setattr(kernels, "_onednn_works", lambda dtype: False)
    assert kernels.default_decode_kernel() == "torch"
    # the rule leaves small float32 matrices with torch's kernel; a named kernel takes every matrix
    assert kernels.pack_linear(torch.ones(4, 4)).kernel == "torch linear float32"
    with pytest.raises(kernels.KernelError, match="expected onednn, openblas, torch"):
        kernels.pack_linear(torch.ones(4, 4), "mkl")
    with pytest.raises(kernels.KernelError, match="needs numpy built with OpenBLAS"):
        kernels.pack_linear(torch.ones(4, 4), "openblas")


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with kernels.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), kernels.torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
