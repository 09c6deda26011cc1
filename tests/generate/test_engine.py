"""The generation engine on token ids: the cached path against the slow reference, sampling,
stopping, batching, and what happens at the context limit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from miniglm.config import ModelConfig, SampleConfig
from miniglm.generate import engine
from miniglm.model.kernels import DECODE_KERNELS, numpy_openblas, onednn_packs
from miniglm.model.model import MiniGLM

CONTEXT = 64
GREEDY = SampleConfig(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=30)
PROMPTS = [[5, 9, 17, 33, 2, 8, 90, 11, 41, 7], [250, 3, 77], [19]]


def tiny_model(init: float = 0.3, **kw) -> MiniGLM:
    """A random tiny model; init 0.3 makes its greedy output depend on the context (0.02 just
    repeats the last token)."""
    base = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=CONTEXT, initializer_range=init)
    torch.manual_seed(0)
    return MiniGLM(ModelConfig(**{**base, **kw})).eval()


@pytest.fixture(scope="module")
def model() -> MiniGLM:
    return tiny_model()


def run(model, prompts, cfg=GREEDY, **kw) -> list[engine.Completion]:
    return engine.generate(model, prompts, cfg, **kw)


def step_logits(model, prompt, cfg, reference) -> tuple[list[int], list[torch.Tensor]]:
    decoder = engine.Decoder(model, [prompt], cfg, reference=reference)
    logits = []
    for _ in decoder:
        logits.append(decoder.logits[0].clone())
    return decoder.completions[0].tokens, logits


@pytest.mark.parametrize("kw", [{}, {"num_key_value_heads": 2}], ids=["mha", "gqa"])
def test_cached_path_matches_reference_tokens_and_logits(kw):
    model = tiny_model(**kw)
    for prompt in PROMPTS:
        fast_tokens, fast = step_logits(model, prompt, GREEDY, reference=False)
        ref_tokens, ref = step_logits(model, prompt, GREEDY, reference=True)
        assert fast_tokens == ref_tokens and len(fast_tokens) == GREEDY.max_new_tokens
        assert len(set(fast_tokens)) > 5  # a generation that actually depends on the context
        torch.testing.assert_close(torch.stack(fast), torch.stack(ref), rtol=1e-4, atol=1e-4)


def kernel_runs_here(kernel: str) -> bool:
    return {"torch": True, "onednn": onednn_packs(torch.device("cpu"), torch.float32),
            "openblas": numpy_openblas()}[kernel]


@pytest.mark.parametrize("numpy_step", [True, False], ids=["numpy-step", "torch-step"])
@pytest.mark.parametrize("kernel", DECODE_KERNELS)
def test_fused_cached_forward_matches_plain_forward(kernel, numpy_step):
    if not kernel_runs_here(kernel):
        pytest.skip(f"decode kernel {kernel} does not run here")
    model = tiny_model(num_key_value_heads=2).fuse(kernel)
    model.numpy_step = numpy_step
    assert {p["kernel"].split()[0] for p in model.decode_plan()} == {"torch" if kernel == "torch" else
                                                                      "oneDNN" if kernel == "onednn" else "OpenBLAS"}
    ids = torch.tensor([PROMPTS[0]])
    cache = model.new_cache(1, 32)
    assert cache.weights_key is not None  # this cache decodes with the fused weights
    with torch.inference_mode():
        got = model(ids[:, :6], kv_cache=cache)[0]  # prefill 6, then 4 single steps
        steps = [model(ids[:, t:t + 1], kv_cache=cache, last_only=True)[0] for t in range(6, 10)]
        want = model(ids)[0]
    assert cache.pos == 10
    torch.testing.assert_close(torch.cat([got, *steps], dim=1), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
def test_numpy_step_runs_and_matches_the_torch_step(monkeypatch, int8):
    """Batch-1 steps take the numpy path (not the torch decode), also with positions and a mask,
    and give the torch decode path's logits and cache contents (int8: the same int8 products)."""
    model = tiny_model(num_key_value_heads=2)
    if int8:
        model.quantize("int8")
    calls = []
    original = MiniGLM.step
    monkeypatch.setattr(MiniGLM, "step", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    ids = torch.tensor([[0, 0] + PROMPTS[0][:6]])  # two padding slots the mask hides
    positions = torch.tensor([[0, 0, 0, 1, 2, 3, 4, 5]])
    valid = torch.tensor([[False, False] + [True] * 6 + [True] * 4])
    results = {}
    for numpy_step in (True, False):
        model.numpy_step = numpy_step
        cache = model.new_cache(1, 12)
        with torch.inference_mode():
            causal = torch.ones(8, 8, dtype=torch.bool).tril() & valid[:, None, :8] | torch.eye(8, dtype=torch.bool)
            model(ids, kv_cache=cache, position_ids=positions, attn_mask=causal[:, None])
            logits = [model(torch.tensor([[t]]), kv_cache=cache, position_ids=torch.tensor([[6 + i]]),
                            attn_mask=valid[:, None, None, :9 + i])[0] for i, t in enumerate(PROMPTS[0][6:10])]
        results[numpy_step] = (torch.cat(logits, dim=1), cache.k[0][:, :, :12].clone(), cache.v[-1][:, :, :12].clone())
    assert len(calls) == 4  # the four single steps with numpy_step on; the prefill (8 tokens) never
    for got, want in zip(results[True], results[False]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_numpy_step_refuses_to_run_past_the_cache_or_the_context():
    model = tiny_model()
    cache = model.new_cache(1, 3)
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]), kv_cache=cache)
        with pytest.raises(ValueError, match="KV cache overflow"):
            model(torch.tensor([[4]]), kv_cache=cache)
        cache = model.new_cache(1, 8)
        with pytest.raises(ValueError, match="exceeds the context"):
            model(torch.tensor([[4]]), kv_cache=cache, position_ids=torch.tensor([[model.config.max_position_embeddings]]))
    assert cache.pos == 0  # nothing written


def test_bfloat16_cached_path_is_close_to_reference():
    model = tiny_model().to(torch.bfloat16)
    cfg = dataclasses.replace(GREEDY, max_new_tokens=5)
    _, fast = step_logits(model, PROMPTS[0], cfg, reference=False)
    _, ref = step_logits(model, PROMPTS[0], cfg, reference=True)
    # the first step sees the same prompt on both paths: bf16 rounding only
    assert fast[0].dtype == torch.float32
    torch.testing.assert_close(fast[0], ref[0], rtol=0.05, atol=0.05 * ref[0].abs().max().item())


def test_weights_changed_in_place_are_picked_up():
    model = tiny_model()
    before = run(model, [PROMPTS[0]])[0].tokens
    first = model.new_cache(1, 8).weights_key
    assert model.new_cache(1, 8).weights_key is first  # reused while nothing changed
    stale = model.new_cache(1, 8)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    assert model.new_cache(1, 8).weights_key is not first
    # a cache made before the change no longer selects the (rebuilt) fused weights
    assert stale.weights_key is not model._fused_key
    after = run(model, [PROMPTS[0]])[0].tokens
    assert after == run(model, [PROMPTS[0]], reference=True)[0].tokens
    assert after != before


def test_batch_equals_single_prompts(model):
    batch = run(model, PROMPTS)
    for prompt, got in zip(PROMPTS, batch):
        assert got.tokens == run(model, [prompt])[0].tokens
        assert got.prompt_tokens == len(prompt) and got.finish_reason == "length"


def test_batch_sampling_equals_single_prompts_with_the_same_seed(model):
    cfg = dataclasses.replace(GREEDY, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    batch = run(model, PROMPTS, cfg)
    assert [c.tokens for c in batch] == [run(model, [p], cfg)[0].tokens for p in PROMPTS]
    seeded = run(model, [PROMPTS[0], PROMPTS[0]], cfg, seeds=[7, 8])
    assert seeded[0].tokens == batch[0].tokens and seeded[1].tokens != seeded[0].tokens


def test_rows_finishing_early_leave_the_batch_without_disturbing_others(model):
    full = run(model, PROMPTS)
    eot = full[1].tokens[4]  # row 1 ends at its 5th token; the others may end too where they emit it
    got = run(model, PROMPTS, eot_id=eot)
    for want, row in zip(full, got):
        cut = want.tokens.index(eot) if eot in want.tokens else len(want.tokens)
        assert row.tokens == want.tokens[:cut]
        assert row.finish_reason == ("eot" if eot in want.tokens else "length")


def test_stop_token_sequences_end_and_are_not_returned(model):
    tokens = run(model, [PROMPTS[0]])[0].tokens
    stop = tokens[6:8]
    first = next(i for i in range(len(tokens) - 1) if tokens[i:i + 2] == stop)
    got = run(model, [PROMPTS[0]], stop_sequences=[stop, [299, 299, 299]])[0]
    assert got.tokens == tokens[:first] and got.finish_reason == "stop"
    streamed = list(engine.stream(model, PROMPTS[0], GREEDY, stop_sequences=[stop]))
    assert streamed == got.tokens  # held-back starts of the stop sequence are never streamed


def test_stream_yields_the_same_tokens_as_generate(model):
    cfg = dataclasses.replace(GREEDY, temperature=0.9, top_k=0, seed=3)
    assert list(engine.stream(model, PROMPTS[1], cfg)) == run(model, [PROMPTS[1]], cfg)[0].tokens


def test_top_k_1_equals_greedy(model):
    cfg = dataclasses.replace(GREEDY, temperature=1.3, top_k=1, top_p=0.5, seed=11)
    assert run(model, PROMPTS, cfg)[0].tokens == run(model, PROMPTS)[0].tokens


def test_seed_reproducibility(model):
    cfg = dataclasses.replace(GREEDY, temperature=1.0, top_k=0, top_p=1.0, seed=1)
    a, b = run(model, [PROMPTS[0]], cfg)[0].tokens, run(model, [PROMPTS[0]], cfg)[0].tokens
    c = run(model, [PROMPTS[0]], dataclasses.replace(cfg, seed=2))[0].tokens
    assert a == b and a != c


def test_top_p_keeps_only_the_nucleus():
    cfg = dataclasses.replace(GREEDY, temperature=1.0, top_p=0.5)
    sampler = engine.Sampler(cfg, [[0]], vocab_size=4, device=torch.device("cpu"))
    logits = torch.log(torch.tensor([[0.45, 0.35, 0.15, 0.05]]))
    drawn = {sampler.choose(logits, [[0]]).item() for _ in range(200)}
    assert drawn == {0, 1}  # 0.45 < 0.5, so the second token completes the nucleus


def test_repetition_penalty_and_no_repeat_ngram_prevent_loops():
    model = tiny_model(init=0.02)  # greedy repeats the last prompt token forever
    prompt = [5, 9, 17]
    looping = run(model, [prompt])[0].tokens
    assert set(looping) == {17}
    penalised = run(model, [prompt], dataclasses.replace(GREEDY, repetition_penalty=50.0))[0].tokens
    assert len(set(penalised[:10])) == 10 and not set(penalised[:10]) & set(prompt)
    n = 2
    no_repeat = run(model, [prompt], dataclasses.replace(GREEDY, no_repeat_ngram_size=n))[0].tokens
    seq = prompt + no_repeat
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    assert len(grams) == len(set(grams))


def test_prompt_longer_than_the_context_keeps_its_most_recent_tokens(model):
    prompt = [(7 * i) % 300 for i in range(150)]
    cfg = dataclasses.replace(GREEDY, max_new_tokens=10)
    got = run(model, [prompt], cfg)[0]
    keep = engine.prompt_budget(CONTEXT, 10)
    assert keep == CONTEXT - 10
    assert got.prompt_tokens == keep and got.dropped_prompt_tokens == 150 - keep
    assert got.tokens == run(model, [prompt[-keep:]], cfg)[0].tokens
    assert got.tokens == run(model, [prompt], cfg, reference=True)[0].tokens
    # with a long generation ahead, a quarter of the context is left free for it
    assert run(model, [prompt], GREEDY)[0].prompt_tokens == CONTEXT - CONTEXT // 4


def test_generation_past_the_context_end_slides_the_window(model):
    cfg = dataclasses.replace(GREEDY, max_new_tokens=3 * CONTEXT)
    got = run(model, PROMPTS[:1], cfg)[0]
    assert len(got.tokens) == 3 * CONTEXT and got.finish_reason == "length"
    assert got.tokens == run(model, PROMPTS[:1], cfg, reference=True)[0].tokens
    batch = run(model, PROMPTS, cfg)  # rows of different lengths slide together
    assert all(len(c.tokens) == 3 * CONTEXT for c in batch)


def test_empty_prompt_starts_from_the_end_token_and_bad_ids_are_refused(model):
    assert run(model, [[]], eot_id=0)[0].tokens == run(model, [[0]], eot_id=0)[0].tokens
    with pytest.raises(ValueError, match="empty prompt"):
        run(model, [[]])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        run(model, [[1, 300]])


def test_stop_scanner_holds_back_possible_starts():
    s = engine.StopScanner(["\n问：", "END"], "")
    assert s.push("你好\n") == ("你好", False)
    assert s.push("问") == ("", False)
    assert s.push("题") == ("\n问题", False)
    assert s.push("xEN") == ("x", False)
    assert s.push("D tail") == ("", True)
    t = engine.StopScanner([[1, 2, 3]], [])
    assert t.push([1, 2]) == ([], False) and t.push([4]) == ([1, 2, 4], False)
    assert t.push([0, 1]) == ([0], False) and t.flush() == [1]


def test_generation_leaves_the_global_rng_alone():
    model = tiny_model(vocab_size=400)  # a model not prepared yet: weight packing runs too
    state = torch.get_rng_state()
    run(model, PROMPTS, dataclasses.replace(GREEDY, temperature=1.0, seed=3))
    assert torch.equal(torch.get_rng_state(), state)

