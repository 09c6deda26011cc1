"""bench/generate.py on a tiny model: both sides generate the asked number of tokens, the int8
side is compared with float32, and the profile splits a token's time into its parts."""

from __future__ import annotations

import pytest
import torch

from miniglm.config import ModelConfig, SampleConfig
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import train_tokenizer

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def setup():
    text = "天下大势，分久必合，合久必分。" * 40 + "滚滚长江东逝水，浪花淘尽英雄。" * 40
    tok = train_tokenizer([text], 300, show_progress=False)
    torch.manual_seed(0)
    model = MiniGLM(ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=64)).eval()
    greedy = SampleConfig(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=12)
    return tok, model, tok.encode(text[:20])[:8], greedy


def test_measure_compares_formats_with_transformers(bench_script, setup):
    generate = bench_script("generate")
    tok, model, prompt, greedy = setup
    r = generate.measure(["float32", "int8"], model, tok, prompt, greedy, repeats=1)
    assert set(r["sides"]) == {"miniglm float32", "miniglm int8", "transformers float32"}
    f32, i8 = r["formats"]["float32"], r["formats"]["int8"]
    assert f32["agree_peer"] == 1.0 and f32["peer"] == "transformers float32"  # same weights, same greedy tokens
    assert i8["weight_bytes"] < f32["weight_bytes"] / 3  # int8 reads about a quarter of the bytes
    assert all(s["tokens_per_s"] > 0 for s in r["sides"].values())


def test_profile_splits_a_token_into_products_and_the_rest(bench_script, setup, capsys):
    generate = bench_script("generate")
    tok, model, prompt, greedy = setup
    generate.profile_decode(model, prompt, greedy, "float32")
    lines = capsys.readouterr().out.splitlines()
    for path in ("numpy step", "torch decode path"):
        parts = [ln for ln in lines if ln.startswith(path)]
        names = [ln[len(path):].split()[0] for ln in parts]
        assert names == ["qkv", "o", "gate_up", "down", "lm_head", "the", "total"], names
        shares = [float(ln.split("%")[0].split()[-1]) for ln in parts[:-1]]
        assert 95 <= sum(shares) <= 105  # the parts add up to the whole
