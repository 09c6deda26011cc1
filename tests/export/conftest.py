"""Tiny runs to export: a byte-level BPE trained on mixed text, a random 2-layer model, a run
directory as the trainer leaves it (config.json, checkpoints/), optionally with an eval report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from miniglm.checkpoint import save_checkpoint
from miniglm.config import ModelConfig, TrainConfig, load_config, save_config
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer, train_tokenizer

# Chinese prose with its punctuation, dialogue in the chat template, English, digits, emoji and
# whitespace runs, so the vocabulary has merges of every kind the tokenizer parity tests probe.
CORPUS = [
    "天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。寒来暑往，秋收冬藏。",
    "玄德曰：“吾乃中山靖王之后。”孔明笑曰：“此计甚妙！”",
    "问：你好\n答：你好！有什么可以帮你？",
    "问：一加一等于几？\n答：一加一等于二。",
    "The quick brown fox jumps over the lazy dog. It's 2024, isn't it?",
    "价格：128元，折扣 15%。  Total:   42 items\t\tdone\n\n下一行",
    "表情 😀🎉 和 ★☆ 符号",
] * 4


def make_tokenizer(vocab_size: int = 400) -> Tokenizer:
    return train_tokenizer(CORPUS, vocab_size=vocab_size, min_frequency=2, show_progress=False)


def tiny_model_config(tok: Tokenizer, **kw) -> ModelConfig:
    base = dict(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=96, max_position_embeddings=128,
                initializer_range=0.2, rope_theta=500.0, rms_norm_eps=1e-6)
    return ModelConfig(**{**base, **kw})


def make_run(root: Path, tok: Tokenizer, seed: int = 0, **model_kw) -> Path:
    """RUN with config.json and checkpoints/step_0000007 (a random model, marked SFT)."""
    torch.manual_seed(seed)
    cfg = tiny_model_config(tok, **model_kw)
    run = root / "run"
    save_checkpoint(run / "checkpoints" / "step_0000007", MiniGLM(cfg), tok, step=7, extra={"mode": "sft"})
    train_cfg = load_config(TrainConfig, "tiny", {"out": str(run), "data": "data/sft", "mode": "sft",
                                                   "learning_rate": 3e-4, "min_lr": 3e-5})
    save_config(train_cfg, run / "config.json")
    return run


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return make_tokenizer()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer) -> Path:
    return make_run(tmp_path_factory.mktemp("export"), tokenizer)


@pytest.fixture
def offline(monkeypatch):
    """Hugging Face libraries must not need the network to load an export."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
