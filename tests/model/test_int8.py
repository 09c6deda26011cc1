"""int8 weights (`--quantize int8`): the quantizer, both int8 kernels against float32 arithmetic,
and a quantized model through generation, scoring, the CLI and the eval report."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from miniglm.checkpoint import load_checkpoint, save_checkpoint
from miniglm.config import ModelConfig, SampleConfig
from miniglm.generate import engine
from miniglm.generate import text as textgen
from miniglm.model import kernels
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import train_tokenizer

KERNELS = [k for k in kernels.INT8_KERNELS if k != "dynamic" or kernels._dynamic_int8_works()]
GREEDY = SampleConfig(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=20)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


def test_quantize_int8_is_per_row_and_round_to_nearest():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 40, generator=g) * torch.tensor([1e-3, 0.1, 1, 10, 100, 0])[:, None]
    q, scale = kernels.quantize_int8(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and q.shape == w.shape
    assert q[:5].abs().amax(dim=1).tolist() == [127] * 5  # every row uses its full range
    assert q[5].abs().max() == 0 and scale[5] == 1  # an all-zero row stays zero
    err = (q.float() * scale[:, None] - w).abs()
    assert bool((err <= scale[:, None] / 2 * (1 + 1e-5)).all())  # within half a step, row by row
    # rows are independent: quantizing a stack == stacking the quantized parts (fused q/k/v)
    q2, s2 = kernels.quantize_int8(torch.cat([w[:3], w[3:]]))
    assert torch.equal(q2, q) and torch.equal(s2, scale)


@pytest.mark.parametrize("kernel", KERNELS)
def test_int8_products_match_float32_arithmetic(kernel):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(96, 64, generator=g)
    q, scale = kernels.quantize_int8(w)
    dequantized = q.float() * scale[:, None]
    linear = kernels.int8_linear(w, kernel)
    assert linear.kernel.startswith("int8") and linear.nbytes == 96 * 64 + 4 * 96
    inputs = {"random": torch.randn(2, 5, 64, generator=g),
              # a ramp from +1 to -1: without reduce_range, fbgemm's int16 pair sums saturate on it (7-40% error)
              "ramp": torch.linspace(1, -1, 3 * 64).view(3, 64)}
    for name, x in inputs.items():
        y = linear(x)
        assert y.shape == (*x.shape[:-1], 96) and y.dtype == torch.float32
        if kernel == "weight_only":  # float32 activations: the float32 product with the int8 weights
            torch.testing.assert_close(y, F.linear(x, dequantized), rtol=1e-5, atol=1e-5)
        else:  # activations rounded to 7 bits per call as well
            assert relative_error(y, F.linear(x, w)) < 0.03, name
        assert relative_error(y, F.linear(x, w)) < 0.03


def test_the_int8_kernel_rule_is_fixed_and_bad_choices_are_refused():
    rule = kernels.default_int8_kernel()
    assert rule == ("dynamic" if kernels._dynamic_int8_works() else "weight_only")
    assert rule == kernels.default_int8_kernel()  # a rule, not a timing
    with pytest.raises(kernels.KernelError, match="expected dynamic or weight_only"):
        kernels.int8_linear(torch.ones(4, 4), "int4")


def tiny_model(**kw) -> MiniGLM:
    base = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128, max_position_embeddings=64, initializer_range=0.1)
    torch.manual_seed(0)
    return MiniGLM(ModelConfig(**{**base, **kw})).eval()


def quantized(model: MiniGLM, kernel: str) -> MiniGLM:
    q = MiniGLM(model.config)
    q.load_state_dict(model.state_dict())
    return q.quantize("int8", kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_quantized_model_generates_and_scores_close_to_float32(kernel):
    model = tiny_model()
    q = quantized(model, kernel)
    assert q.quantization == ("int8", kernel)
    plan = q.decode_plan()
    assert len(plan) == 2 * 4 + 1 and all(p["kernel"].startswith("int8") for p in plan)
    full = sum(p["bytes"] for p in model.decode_plan())
    assert sum(p["bytes"] for p in plan) < 0.3 * full  # a quarter of float32, plus the scales
    prompts = [[5, 9, 17, 33, 2, 8], [250, 3, 77]]
    want = [c.tokens for c in engine.generate(model, prompts, GREEDY)]
    got = [c.tokens for c in engine.generate(q, prompts, GREEDY)]
    agree = sum(a == b for w, g in zip(want, got) for a, b in zip(w, g)) / sum(map(len, want))
    assert agree >= 0.9, (want, got)
    x = torch.randint(0, 300, (3, 33), generator=torch.Generator().manual_seed(2))
    mask = (torch.arange(32) % 3 != 0).float().expand(3, 32)
    with torch.no_grad():
        for m in (None, mask):
            _, loss_fp = model(x[:, :-1], x[:, 1:], m)
            _, loss_q = q(x[:, :-1], x[:, 1:], m)
            _, tokens_q = q(x[:, :-1], x[:, 1:], m, reduction="none")
            assert abs(loss_q.item() / loss_fp.item() - 1) < 0.01
            n = 3 * 32 if m is None else m.sum()
            assert tokens_q.shape == (3, 32) and loss_q.item() == pytest.approx((tokens_q.sum() / n).item(), rel=1e-5)
        # the scoring path and the decoding path use the same int8 products
        logits_plain = q(x[:1, :10])[0]
        cache = q.new_cache(1, 16)
        logits_cached = q(x[:1, :10], kv_cache=cache)[0]
    torch.testing.assert_close(logits_plain, logits_cached, rtol=1e-4, atol=1e-4)


def test_quantized_weights_follow_the_parameters_and_training_is_refused():
    model = tiny_model()
    q = quantized(model, KERNELS[0])
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = q(ids)[0]
        other = tiny_model(initializer_range=0.3)
        q.load_state_dict(other.state_dict())  # new weights: the int8 copies are rebuilt from them
        after = q(ids)[0]
        want = other(ids)[0]
    assert relative_error(before, want) > 0.3 and relative_error(after, want) < 0.1
    with pytest.raises(RuntimeError, match="inference only"):
        q.train()(ids)
    with pytest.raises(ValueError, match="float32 activations"):
        tiny_model().to(torch.bfloat16).quantize("int8")
    with pytest.raises(ValueError, match="not supported"):
        tiny_model().quantize("int4")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    corpus = ["天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。", "问：你好\n答：你好！", "寒来暑往，秋收冬藏。"] * 3
    tok = train_tokenizer(corpus, vocab_size=300, min_frequency=2, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, max_position_embeddings=64, initializer_range=0.1)
    path = tmp_path_factory.mktemp("runs") / "run"
    save_checkpoint(path / "checkpoints" / "step_0000001", MiniGLM(cfg), tok, step=1, extra={"mode": "pretrain"})
    return path


def test_sample_and_eval_with_quantize_int8(run, tmp_path, capsys):
    from miniglm.__main__ import main

    out = tmp_path / "s.jsonl"
    flags = ["--device", "cpu", "--max_new_tokens", "10", "--temperature", "0"]
    assert main(["sample", str(run), "--prompt", "天地", "--output", str(out), "--quantize", "int8", *flags]) == 0
    [rec] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    loaded = load_checkpoint(run)
    q = loaded.model.quantize("int8")
    want = textgen.complete(q, loaded.tokenizer, "天地", SampleConfig(temperature=0, max_new_tokens=10))
    assert rec["new_tokens"] == 10 and rec["text"] == want.text

    text = tmp_path / "held.txt"
    text.write_text("天地玄黄，宇宙洪荒。寒来暑往，秋收冬藏。" * 4, encoding="utf-8")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": q, "answer": "秋收冬藏。"}, ensure_ascii=False) + "\n"
                          for q in ("寒来暑往", "天地玄黄")), encoding="utf-8")
    losses = {}
    for quantize in ("none", "int8"):
        report_dir = tmp_path / f"eval_{quantize}"
        assert main(["eval", str(run), "--text", str(text), "--qa", str(qa), "--max_new_tokens", "4",
                     "--out", str(report_dir), "--no-progress", "--device", "cpu", "--quantize", quantize]) == 0
        [r] = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))["runs"]
        losses[quantize] = r["heldout"][0]["loss"]
        assert r["quantization"] == (None if quantize == "none" else f"int8/{kernels.default_int8_kernel()}")
        decode = r["qa"]["decode"]  # which kernels decoded the answers, recorded
        assert sum(decode["kernels"].values()) == 2 * 4 + 1 and decode["threads"] == torch.get_num_threads()
        assert all(k.startswith("int8") == (quantize == "int8") for k in decode["kernels"])
    md = (tmp_path / "eval_int8" / "report.md").read_text(encoding="utf-8")
    assert "int8/" in md and "answers decoded with 9 x int8" in md
    assert losses["int8"] != losses["none"] and abs(losses["int8"] / losses["none"] - 1) < 0.01
    capsys.readouterr()


@pytest.mark.parametrize("extra, message", [
    (["--dtype", "bfloat16"], "quantize=int8 runs float32 activations"),
    (["--device", "cuda"], "no CUDA GPU" if not torch.cuda.is_available() else "runs on the CPU"),
    (["--quantize", "int4"], "int4"),
])
def test_bad_quantize_combinations_are_one_line_errors(run, capsys, extra, message):
    from miniglm.__main__ import main

    argv = ["sample", str(run), "--prompt", "天地", "--quantize", "int8", *extra]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusal
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) <= 3


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_quantized_model_decodes_in_the_continuous_batch(kernel):
    """serve's batcher: weight-only int8 keeps rows independent (batched == alone); the dynamic kernel
    shares one input scale across the rows of a step, so only a row decoded alone must match."""
    from miniglm.generate.batch import ContinuousBatch

    q = quantized(tiny_model(), kernel)
    prompts = [[5, 9, 17, 33, 2, 8], [250, 3, 77]]

    def drive(jobs):
        batch, out = ContinuousBatch(q, eot_id=None), {}
        events = batch.join(jobs)
        while len(batch):
            events += batch.step()
        for e in events:
            out.setdefault(e.key, []).extend([e.token] if e.token is not None else [])
        return out

    alone = [engine.generate(q, [p], GREEDY)[0].tokens for p in prompts]
    assert drive([(0, prompts[0], GREEDY, 0)])[0] == alone[0]
    together = drive([(k, p, GREEDY, 0) for k, p in enumerate(prompts)])
    assert [len(together[k]) for k in (0, 1)] == [GREEDY.max_new_tokens] * 2
    if kernel == "weight_only":
        assert [together[0], together[1]] == alone
