"""Continuous batching on token ids: rows that join and leave a running batch at any step get exactly
what the engine gives each of them alone, through shifts and compactions of the shared cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from miniglm.config import ModelConfig, SampleConfig
from miniglm.generate import engine
from miniglm.generate.batch import ContinuousBatch
from miniglm.model.model import MiniGLM

CONTEXT = 64
GREEDY = SampleConfig(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=30)
SAMPLED = SampleConfig(temperature=1.0, top_k=40, top_p=0.9, repetition_penalty=1.2, max_new_tokens=25)
PROMPTS = [[5, 9, 17, 33, 2, 8, 90, 11, 41, 7], [250, 3, 77], [19], list(range(40, 70)), [8, 8, 8, 8, 8]]


@pytest.fixture(scope="module")
def model() -> MiniGLM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=CONTEXT,
                      initializer_range=0.3)
    return MiniGLM(cfg).eval()


def alone(model, prompt, cfg, seed=7, eot_id=None) -> list[int]:
    return engine.generate(model, [prompt], dataclasses.replace(cfg, seed=seed), eot_id=eot_id)[0].tokens


def drive(batch: ContinuousBatch, schedule: dict[int, list], steps: int = 80) -> dict:
    """Join schedule[step] before each step; returns key -> (tokens, finish_reason)."""
    out: dict = {}
    for step in range(steps):
        events = batch.join(schedule.get(step, [])) + batch.step()
        for e in events:
            tokens, _ = out.get(e.key, ([], None))
            out[e.key] = (tokens + ([e.token] if e.token is not None else []), e.finish_reason)
    assert len(batch) == 0
    return out


@pytest.mark.parametrize("grow", [64, 2], ids=["roomy", "compacting"])
def test_rows_joining_at_different_steps_match_the_engine_alone(model, grow):
    cfgs = [GREEDY, SAMPLED, GREEDY, SAMPLED, dataclasses.replace(GREEDY, max_new_tokens=3)]
    jobs = [(i, p, cfg, 7) for i, (p, cfg) in enumerate(zip(PROMPTS, cfgs))]
    # a short prompt first, then longer ones (the batch shifts right), two at once, one late
    out = drive(ContinuousBatch(model, eot_id=None, grow=grow), {0: [jobs[2]], 3: [jobs[0], jobs[3]], 4: [jobs[1]],
                                                                 20: [jobs[4]]})
    for i, (prompt, cfg) in enumerate(zip(PROMPTS, cfgs)):
        tokens, reason = out[i]
        assert tokens == alone(model, prompt, cfg), i
        assert reason == "length" and len(tokens) == cfg.max_new_tokens


def test_dropped_rows_leave_and_the_rest_go_on_unchanged(model):
    batch = ContinuousBatch(model, eot_id=None, grow=4)
    batch.join([(k, p, GREEDY, 0) for k, p in enumerate(PROMPTS[:3])])
    seen = {k: [] for k in range(3)}
    for step in range(10):
        for e in batch.step():
            seen[e.key].append(e.token)
        if step == 4:
            batch.drop([1])
            assert [r.key for r in batch.rows] == [0, 2]
    assert 1 not in {e.key for e in batch.step()}
    assert seen[1] == alone(model, PROMPTS[1], GREEDY)[1:6]  # first token came from join
    assert seen[0] == alone(model, PROMPTS[0], GREEDY)[1:11]


def test_end_of_text_finishes_a_row_without_a_token(model):
    want = alone(model, PROMPTS[0], GREEDY)
    eot = want[3]
    assert eot not in want[:3]
    batch = ContinuousBatch(model, eot_id=eot)
    out = drive(batch, {0: [("a", PROMPTS[0], GREEDY, 0), ("b", PROMPTS[2], GREEDY, 0)]})
    assert out["a"] == (want[:3], "eot")
    assert out["b"][0] == alone(model, PROMPTS[2], GREEDY, eot_id=eot)


def test_an_empty_prompt_starts_from_the_end_of_text_token(model):
    out = drive(ContinuousBatch(model, eot_id=299), {0: [("e", [], dataclasses.replace(GREEDY, max_new_tokens=5), 0)]})
    assert out["e"] == (alone(model, [299], dataclasses.replace(GREEDY, max_new_tokens=5), eot_id=299), "length")


def test_check_refuses_what_cannot_fit(model):
    batch = ContinuousBatch(model, eot_id=None)
    assert batch.check([1, 2], CONTEXT - 2) == [1, 2]
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        batch.check([1, 2], CONTEXT - 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        batch.check([300], 1)
    with pytest.raises(ValueError, match="empty prompt"):
        batch.check([], 1)
    with pytest.raises(ValueError, match="exceeds"):
        batch.join([("x", list(range(60)), GREEDY, 0)])
    assert len(batch) == 0


def test_the_cache_stays_within_the_oldest_row_plus_grow(model):
    """Rows come and go for many steps; the allocation never grows past what the live rows need."""
    batch = ContinuousBatch(model, eot_id=None, grow=8)
    short = dataclasses.replace(GREEDY, max_new_tokens=12)
    widths = []
    for step in range(120):
        if step % 5 == 0:
            batch.join([(step, PROMPTS[step % len(PROMPTS)][:8], short, 0)])
        batch.step()
        if len(batch):
            oldest = max(len(r.history) for r in batch.rows)
            widths.append((batch.cache.k[0].size(2), oldest))
    assert all(w <= oldest + 8 + 8 for w, oldest in widths)  # a prompt's columns + grow, never the whole history
    assert max(w for w, _ in widths) < 40
