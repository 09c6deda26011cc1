"""Fast paths for the model's two heaviest operations, each checked against a plain reference in tests.

- `matmul_nt(a, b)` = `a @ b.T`: on a CPU in float32 it calls oneDNN (`torch.ops.mkldnn._linear_pointwise`)
  instead of the default BLAS when the process's float32 GEMM routine is "onednn". Same float32
  arithmetic (no reduced-precision tricks), but another summation order, so the two routines
  round differently and a run must keep one. The routine is a fixed rule, never a timing (a
  timing flips under load and made 1 process in 20 diverge): oneDNN where the CPU has AVX-512
  (where its float32 GEMMs are faster than MKL's; figures in bench/README.md), the default BLAS
  elsewhere. The trainer resolves it once per run, records it and sets it on resume
  (`use_float32_matmul`). bf16, CUDA and small (< 16 rows) products take the ordinary `torch`
  path. `Linear` is an `nn.Linear` whose forward uses it.
- `causal_attention(q, k, v)`: on a CPU in bf16/fp16, attention from two batched matmuls and a
  softmax, in two query blocks so the masked upper-right quarter is never computed (faster,
  forward + backward, than the CPU flash-attention kernel behind SDPA at T = 512);
  elsewhere `F.scaled_dot_product_attention(is_causal=True)`, which is also the reference.
- `pack_linear(weight)`: the weight of a decode-time product (one token: a matrix-vector product,
  bound by reading the weight), laid out once for the kernel a fixed rule picks from the CPU's
  instruction set (`default_decode_kernel`): oneDNN's blocked layout on AVX-512 and for bf16;
  on other CPUs numpy's OpenBLAS with the weight stored transposed, which reads it at 1.4-1.6x
  oneDNN's bandwidth on an AVX2 EPYC and 2.4x torch's default BLAS (MKL); batches keep oneDNN.
  OpenBLAS's threads spin ~0.1 s after each product unless OPENBLAS_THREAD_TIMEOUT says otherwise
  when numpy loads; `miniglm` sets it to 22 (~1 ms) so they do not slow torch's threads (prefill,
  batches) that start next. Small float32 matrices keep the default kernel (lower fixed cost).
- `linear_cross_entropy(h, weight, targets, mask)` = `masked_cross_entropy(h @ weight.T, ...)` computed
  a chunk at a time, so the (N, V) float32 logits are never materialised: on a CPU the logits of
  a step, their softmax and its gradient cost more than all the head's matmuls.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from miniglm.errors import UserError

MIN_ROWS = 16  # below this (token-by-token generation) the default BLAS is as fast


MATMULS = ("onednn", "blas")  # float32 CPU GEMM routines; "auto" resolves to one of them
_float32_matmul: str | None = None  # process-wide by nature: every GEMM of a run must use the same one


class KernelError(UserError, ValueError):
    """A GEMM routine this torch build or CPU cannot run."""


@functools.cache
def onednn_linear_works() -> bool:
    """Does this torch build run oneDNN float32 linear products (checked once on a tiny case)?"""
    return _onednn_works(torch.float32)


def default_float32_matmul() -> str:
    """The fixed rule: oneDNN on CPUs with AVX-512 (torch's detected capability), else the BLAS."""
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2", "DEFAULT", ...
    return "onednn" if capability.startswith("AVX512") and onednn_linear_works() else "blas"


def resolve_float32_matmul(name: str) -> str:
    """"auto" -> the rule for this CPU; "onednn"/"blas" as given (oneDNN must work here)."""
    if name == "auto":
        return default_float32_matmul()
    if name not in MATMULS:
        raise KernelError(f"matmul={name!r}: expected auto, {' or '.join(MATMULS)}")
    if name == "onednn" and not onednn_linear_works():
        raise KernelError("matmul=onednn, but this torch build cannot run oneDNN linear products "
                          "(use matmul=blas or auto)")
    return name


def use_float32_matmul(name: str | None) -> str | None:
    """Make `name` ("onednn"/"blas"; None = the rule) this process's routine; returns the previous one."""
    global _float32_matmul
    previous, _float32_matmul = _float32_matmul, (None if name is None else resolve_float32_matmul(name))
    return previous


def active_float32_matmul() -> str:
    return _float32_matmul or default_float32_matmul()


def _use_onednn(a: torch.Tensor, b: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():  # inductor only lowers this op with constant (inference) weights
        return False
    return (a.device.type == "cpu" and a.dtype == torch.float32 and b.dtype == torch.float32
            and a.numel() // max(a.size(-1), 1) >= MIN_ROWS and not torch.is_autocast_enabled("cpu")
            and active_float32_matmul() == "onednn")


def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) @ b (N, K).T -> (M, N), no autograd (used inside autograd Functions)."""
    if _use_onednn(a, b):
        return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return a @ b.t()


def matmul_tn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (N, M).T @ b (N, K) -> (M, K), e.g. a weight gradient dy.T @ x; no autograd.

    oneDNN is fastest when the output has fewer rows than columns, so there a tall result is
    computed as (b.T @ a).T (returned as a transposed view).
    """
    if a.size(1) > b.size(1) and _use_onednn(a, b):
        return matmul_nt(b.t(), a.t()).t()
    return matmul_nt(a.t(), b.t())


class _OneDNNLinear(torch.autograd.Function):
    """y = x @ W.T with all three GEMMs (forward, dx, dW) through `matmul_nt`."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return matmul_nt(x.reshape(-1, x.size(-1)), weight).view(*x.shape[:-1], weight.size(0))

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.size(-1))  # (N, out)
        dx = matmul_nt(dy2, weight.t()).view_as(x) if ctx.needs_input_grad[0] else None
        dw = matmul_tn(dy2, x.reshape(-1, x.size(-1))) if ctx.needs_input_grad[1] else None
        return dx, dw


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and names) whose float32 CPU GEMMs go through `matmul_nt`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None and x.numel() // x.size(-1) >= MIN_ROWS and _use_onednn(x, self.weight):
            return _OneDNNLinear.apply(x, self.weight)
        return F.linear(x, self.weight, self.bias)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v; q, k, v (B, H, T, D), no cache, no padding."""
    T = q.size(2)
    if (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and q.dtype == k.dtype == v.dtype
            and T >= 128 and T % 2 == 0):
        return _two_block_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)


def _two_block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Queries [0, T/2) attend to keys [0, T/2); queries [T/2, T) to all keys. Scores and
    probabilities stay in q's dtype (the softmax accumulates in float32 internally), as in
    transformers' eager attention."""
    B, H, T, D = q.shape
    h = T // 2
    with torch.autocast(q.device.type, enabled=False):
        q = q * D**-0.5
        upper = torch.full((h, h), float("-inf"), dtype=q.dtype, device=q.device).triu(1)  # (h, h)
        s0 = torch.matmul(q[:, :, :h], k[:, :, :h].transpose(-1, -2)) + upper  # (B, H, h, h)
        y0 = torch.matmul(s0.softmax(dim=-1), v[:, :, :h])  # (B, H, h, D)
        s1 = torch.matmul(q[:, :, h:], k.transpose(-1, -2)) + torch.cat([torch.zeros_like(upper), upper], dim=1)
        y1 = torch.matmul(s1.softmax(dim=-1), v)  # (B, H, h, D)
        return torch.cat([y0, y1], dim=2)  # (B, H, T, D)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         loss_mask: torch.Tensor | None = None, chunk: int = 0,
                         reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the logits h @ weight.T against `targets`, without the (N, V) logits.

    h (N, C), weight (V, C), targets (N,), loss_mask (N,) or None. reduction="mean":
    sum(mask * token_loss) / max(sum(mask), 1) (no mask = plain mean), differentiable;
    reduction="none": the (N,) float32 token losses (mask applied as a factor), for scoring
    without gradients. Under autocast the matmuls run in the autocast dtype and the softmax in
    float32. `chunk` rows at a time; 0 = as many as keep a chunk's float32 logits at about 16 MB
    on a CPU (in cache) and 256 MB on a GPU (few, large kernels).
    """
    device_type = h.device.type
    compute = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    budget = 1 << 22 if device_type == "cpu" else 1 << 26  # float32 logits per chunk
    chunk = chunk or max(16, budget // weight.size(0))
    if reduction == "mean":
        return _LinearCrossEntropy.apply(h, weight, targets, loss_mask, chunk, compute)
    if reduction != "none":
        raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        raise ValueError("reduction='none' is for scoring: call it under torch.no_grad()")
    with torch.autocast(device_type, enabled=False):
        w, hc = weight.to(compute), h.to(compute)
        out = token_losses(lambda x: matmul_nt(x, w), hc, targets, chunk)
    return out if loss_mask is None else out * loss_mask.float()


def token_losses(project: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, targets: torch.Tensor,
                 chunk: int) -> torch.Tensor:
    """(N,) float32 cross-entropies of the logits project(h) (N, V), `chunk` rows at a time (no grad)."""
    out = torch.empty(h.size(0), dtype=torch.float32, device=h.device)
    for s in range(0, h.size(0), chunk):
        logits = project(h[s:s + chunk]).float()  # (n, V)
        out[s:s + chunk] = logits.logsumexp(dim=1) - logits.gather(1, targets[s:s + chunk, None]).squeeze(1)
    return out


class _LinearCrossEntropy(torch.autograd.Function):
    """Chunked head + cross-entropy. When gradients are needed, each chunk's logits are turned
    straight into d loss / d logits (softmax - onehot, weighted) and stored in the compute dtype;
    two large matmuls then give the gradients of h and of the weight, which backward only
    rescales: no float32 logits are kept and no matmul is repeated."""

    @staticmethod
    def forward(ctx, h, weight, targets, loss_mask, chunk, compute):
        N = h.size(0)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(h.device.type, enabled=False):
            w, hc = weight.to(compute), h.to(compute)
            if loss_mask is None:
                row_weight = torch.full((N,), 1.0 / max(N, 1), device=h.device)
            else:
                m = loss_mask.float()
                row_weight = m / m.sum().clamp(min=1.0)  # (N,) each row's share of the mean
            grad_logits = torch.empty(N, w.size(0), dtype=compute, device=h.device) if need_h or need_w else None
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            for s in range(0, N, chunk):
                e = min(s + chunk, N)
                t, rw = targets[s:e, None], row_weight[s:e, None]
                logits = matmul_nt(hc[s:e], w).float()  # (n, V)
                target_logit = logits.gather(1, t)  # (n, 1)
                top = logits.amax(dim=1, keepdim=True)
                probs = logits.sub_(top).exp_()  # unnormalised, in place
                sum_exp = probs.sum(dim=1, keepdim=True)
                total += ((top + sum_exp.log() - target_logit) * rw).sum()
                if grad_logits is not None:
                    grad_logits[s:e] = probs.mul_(rw / sum_exp).scatter_add_(1, t, -rw)
            grad_h = matmul_nt(grad_logits, w.t()) if need_h else None  # (N, C)
            grad_w = matmul_tn(grad_logits, hc) if need_w else None  # (V, C)
        # Kept on ctx rather than as saved tensors: backward scales them in place, so a graph can be
        # backpropagated through only once.
        ctx.grads, ctx.dtypes = (grad_h, grad_w), (h.dtype, weight.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy: backward through the same graph twice is not supported")
        (grad_h, grad_w), (h_dtype, w_dtype) = ctx.grads, ctx.dtypes
        ctx.grads = None
        dh = None if grad_h is None else grad_h.to(h_dtype).mul_(grad_out)
        dw = None if grad_w is None else grad_w.to(w_dtype).mul_(grad_out)
        return dh, dw, None, None, None, None


# --------------------------------------------------------------------------- decode-time packed weights

LinearFn = Callable[[torch.Tensor], torch.Tensor]  # x (..., C_in) -> (..., C_out)
# float32 matrices smaller than this stay with torch's default kernel: a oneDNN or numpy call costs
# ~10-40 us of fixed overhead, about the whole product of a small matrix (bf16 always gains)
PACK_MIN_FLOAT32 = 1 << 18


def _tag(fn: LinearFn, kernel: str, nbytes: int, row: Callable | None = None) -> LinearFn:
    """Record on a decode-time product which kernel runs it and the bytes of weights it reads per
    call, and give it `row`: the same product for one float32 row as a 1-D numpy array (what
    `MiniGLM.step` calls); by default through the torch function on a zero-copy view."""
    fn.kernel, fn.nbytes = kernel, nbytes
    fn.row = row or (lambda v: fn(torch.from_numpy(v[None])).numpy()[0])
    return fn


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
        y = _onednn_linear(w)(x)
        return bool(torch.allclose(y.float(), F.linear(x, w).float(), atol=1e-2, rtol=1e-2))
    except (AttributeError, RuntimeError, NotImplementedError):  # op missing in this torch build
        return False


def _onednn_linear(weight: torch.Tensor) -> LinearFn:
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 1)
    op = torch.ops.mkldnn._linear_pointwise.default  # the overload itself: skips a dispatch step per call
    dtype = str(weight.dtype).removeprefix("torch.")
    return _tag(lambda x: op(x, packed, None, "none", [], ""), f"oneDNN packed {dtype}",
                weight.numel() * weight.element_size())


def _plain_linear(weight: torch.Tensor) -> LinearFn:
    weight = weight.detach().contiguous()
    dtype = str(weight.dtype).removeprefix("torch.")
    return _tag(lambda x: F.linear(x, weight), f"torch linear {dtype}", weight.numel() * weight.element_size())


@functools.cache
def numpy_openblas() -> bool:
    """Is numpy's BLAS OpenBLAS, and does its float32 product agree with torch's (checked once)?"""
    try:
        import numpy as np

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        if "openblas" not in str(blas.get("name", "")).lower() or not blas.get("found", True):
            return False
        w = torch.linspace(-1, 1, 128).view(8, 16)
        x = torch.linspace(1, -1, 32).view(2, 16)
        return bool(torch.allclose(_openblas_linear(w)(x), F.linear(x, w), atol=1e-5, rtol=1e-5))
    except (ImportError, AttributeError, KeyError, TypeError, RuntimeError, ValueError):
        return False


def _openblas_linear(weight: torch.Tensor) -> LinearFn:
    """One row (`row`, what batch-1 decoding calls) through OpenBLAS (numpy's); several rows (a
    prefill, a batch) through a oneDNN-packed copy of the weight, where oneDNN runs.

    For one row a matrix at least as tall as it is wide is stored transposed, so the product is a
    sum of its rows scaled by x (streamed front to back), and a wider one (the MLP's down
    projection) as it is, one dot product per long row: on EPYC-AVX2 each orientation reads its
    shapes at 18-26 GB/s and the other at 13-19 (bench/README.md). Batches stay with oneDNN on
    torch's threads: OpenBLAS's own threads and torch's would spin on the same cores, and with
    torch on one thread beside OpenBLAS a batch of 4-16 rows decodes ~10% slower (measured). The
    two copies cost twice the weights' memory. Without oneDNN, batches also go through OpenBLAS,
    with torch on one thread meanwhile.
    """
    if weight.size(1) > weight.size(0):
        stored = weight.detach().contiguous()  # (out, in)
        mat = stored.numpy().T  # (in, out) view: BLAS reads it transposed
        row = stored.numpy().__matmul__
    else:
        stored = weight.detach().t().contiguous()  # (in, out): owned here, shared with numpy
        mat = stored.numpy()
        row = mat.__rmatmul__
    N = weight.size(0)
    batched = _onednn_linear(weight) if _onednn_works(torch.float32) else None

    def linear(x: torch.Tensor) -> torch.Tensor:
        if batched is not None:
            return batched(x)
        rows = x.detach().reshape(-1, x.size(-1)).contiguous().numpy()
        with torch_threads(1):
            return torch.from_numpy(rows @ mat).view(*x.shape[:-1], N)
    linear.stored = stored  # keeps the storage alive with the closures' numpy views
    label = "OpenBLAS float32" + (" (batches: oneDNN packed)" if batched is not None else "")
    return _tag(linear, label, stored.numel() * 4, row=row)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block (process-wide), restored after."""
    previous = torch.get_num_threads()
    if previous == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


DECODE_KERNELS = ("onednn", "openblas", "torch")  # float32 decode-time products; None = the rule


def default_decode_kernel() -> str:
    """The fixed rule for float32 decode-time products on a CPU, from the instruction set torch detected.

    AVX-512: oneDNN packed (2.9x transformers measured there). Elsewhere (AVX2): numpy's OpenBLAS
    where numpy links it, which on EPYC-AVX2 reads a matrix for one token at ~18 GB/s, against
    ~11-13 for oneDNN packed and ~7 for torch's own BLAS (MKL); then oneDNN; then torch
    (bench/README.md).
    """
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512") and _onednn_works(torch.float32):
        return "onednn"
    if numpy_openblas():
        return "openblas"
    return "onednn" if _onednn_works(torch.float32) else "torch"


def pack_linear(weight: torch.Tensor, kernel: str | None = None) -> LinearFn:
    """x -> x @ weight.T for inference (no autograd) with the weight laid out once for speed.

    kernel (float32 on a CPU): None = the rule (`default_decode_kernel`, small matrices with
    torch's default, see PACK_MIN_FLOAT32), "onednn" / "openblas" / "torch" = that kernel for
    every matrix. bf16 on a CPU: oneDNN packed where it has bf16 (any kernel but "torch").
    Elsewhere (CUDA, other dtypes) torch's default.
    """
    if kernel is not None and kernel not in DECODE_KERNELS:
        raise KernelError(f"decode kernel {kernel!r}: expected {', '.join(DECODE_KERNELS)}")
    if weight.device.type != "cpu" or kernel == "torch":
        return _plain_linear(weight)
    if weight.dtype == torch.bfloat16:
        return _onednn_linear(weight) if onednn_packs(weight.device, weight.dtype) else _plain_linear(weight)
    if weight.dtype != torch.float32 or (kernel is None and weight.numel() < PACK_MIN_FLOAT32):
        return _plain_linear(weight)
    kernel = kernel or default_decode_kernel()
    if kernel == "torch":
        return _plain_linear(weight)
    if kernel == "openblas":
        if not numpy_openblas():
            raise KernelError("decode kernel 'openblas' needs numpy built with OpenBLAS (this numpy is not)")
        return _openblas_linear(weight)
    if not _onednn_works(torch.float32):
        raise KernelError("decode kernel 'onednn' needs oneDNN, which this torch build cannot run")
    return _onednn_linear(weight)


# --------------------------------------------------------------------------- int8 weights for inference

INT8_KERNELS = ("dynamic", "weight_only")


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (q int8 (N, K), scale float32 (N,)) with weight ~= q * scale[:, None].

    scale = max |row| / 127, round to nearest; an all-zero row gets scale 1 (q = 0). Rows are
    quantized independently, so quantizing stacked matrices equals stacking quantized ones.
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


@functools.cache
def _dynamic_int8_works() -> bool:
    """Does this torch build run the x86 (fbgemm) dynamic int8 linear product (checked on a tiny case)?"""
    try:
        if not any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm")):
            return False
        w = torch.linspace(-1, 1, 128).view(8, 16)
        x = torch.linspace(1, -1, 32).view(2, 16)
        y = _dynamic_int8_linear(*quantize_int8(w))(x)
        return bool(torch.allclose(y, F.linear(x, w), atol=5e-2, rtol=5e-2))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def default_int8_kernel() -> str:
    """The fixed rule: "dynamic" where PyTorch's x86 int8 GEMM (fbgemm) runs, else "weight_only".

    `aten._weight_int8pack_mm` (weight-only) is vectorised only for AVX-512 and ARM in PyTorch
    2.13; on an AVX2 CPU it runs 4-10x slower than float32, while fbgemm's dynamic int8 product
    is several times faster than float32 there (figures in bench/README.md).
    """
    return "dynamic" if _dynamic_int8_works() else "weight_only"


def _dynamic_int8_linear(q: torch.Tensor, scale: torch.Tensor) -> LinearFn:
    zero = torch.zeros(scale.numel(), dtype=torch.long)
    import warnings

    with warnings.catch_warnings():  # "quantized tensor creation functions are deprecated" (the op is not)
        warnings.simplefilter("ignore", UserWarning)
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
    packed = torch.ops.quantized.linear_prepack(qweight, None)
    # the C++ entry point of the overload: OpOverload.__call__ first scans the arguments for
    # tracing-time fake objects (the packed weight is a script object), a few us per product
    op = getattr(torch.ops.quantized.linear_dynamic.default, "_op", torch.ops.quantized.linear_dynamic.default)
    N = scale.numel()

    def linear(x: torch.Tensor) -> torch.Tensor:
        return op(x.reshape(-1, x.size(-1)), packed, True).view(*x.shape[:-1], N)

    def row(v):  # one row: numpy's reshapes cost a tenth of torch's views
        return op(torch.from_numpy(v[None]), packed, True).numpy()[0]
    return _tag(linear, "int8 dynamic (fbgemm)", q.numel() + 4 * N, row=row)


def _weight_only_int8_linear(q: torch.Tensor, scale: torch.Tensor) -> LinearFn:
    op = torch.ops.aten._weight_int8pack_mm.default
    N = scale.numel()

    def linear(x: torch.Tensor) -> torch.Tensor:
        return op(x.reshape(-1, x.size(-1)).contiguous(), q, scale).view(*x.shape[:-1], N)
    return _tag(linear, "int8 weight-only", q.numel() + 4 * N)


def int8_linear(weight: torch.Tensor, kernel: str) -> LinearFn:
    """x (float32) -> x @ weight.T with `weight` stored as per-channel int8 (see quantize_int8).

    kernel "dynamic": PyTorch's x86 int8 GEMM (fbgemm, `quantized::linear_dynamic`): int8
    weights, and each call quantizes its input to 8 bits with one scale for the whole input
    (so rows of a batch share it) and returns float32. "weight_only":
    `aten._weight_int8pack_mm`: int8 weights, float32 activations.
    """
    if weight.device.type != "cpu":
        raise KernelError("int8 weights run on the CPU only")
    q, scale = quantize_int8(weight)
    if kernel == "dynamic":
        if not _dynamic_int8_works():
            raise KernelError("int8 kernel 'dynamic' needs PyTorch's x86 (fbgemm) quantized engine, "
                              "which this torch build or CPU lacks")
        return _dynamic_int8_linear(q, scale)
    if kernel == "weight_only":
        return _weight_only_int8_linear(q, scale)
    raise KernelError(f"int8 kernel {kernel!r}: expected {' or '.join(INT8_KERNELS)}")
