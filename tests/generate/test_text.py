"""The text layer: streaming detokenization without broken characters, stop strings, the chat
prompt within the context budget, and the Generation record."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tokenizers import decoders

from miniglm.config import ModelConfig, SampleConfig
from miniglm.generate import engine
from miniglm.generate import text as textgen
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer, train_tokenizer

# Chinese, emoji (4 bytes, and a flag of two code points), CJK Extension B (4 bytes), ASCII
RICH = "天地玄黄，宇宙洪荒。😀🎉🇨🇳 𠀀𠀁𠂉𪚥 汉字与emoji混排！「標點」…\n第二行：龍飛鳳舞🐉。"
GREEDY = SampleConfig(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=24)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    corpus = [RICH, "天地人和，山水风云。" * 3, "宇宙洪荒，日月盈昃。" * 2, "hello world, emoji 😀😀"]
    return train_tokenizer(corpus, vocab_size=300, min_frequency=2, show_progress=False)


@pytest.fixture(scope="module")
def model(tok) -> MiniGLM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, initializer_range=0.3)
    return MiniGLM(cfg).eval()


def generic_copy(tok: Tokenizer) -> Tokenizer:
    """The same tokenizer with a decoder the byte table does not recognise (the generic path)."""
    hf = type(tok.hf).from_str(tok.hf.to_str())
    hf.decoder = decoders.Sequence([decoders.ByteLevel()])  # decodes the same, but is not "ByteLevel"
    return Tokenizer(hf)


@pytest.mark.parametrize("path", ["bytes", "generic"])
def test_streaming_decode_of_multibyte_text_is_exact_and_never_broken(tok, path):
    t = tok if path == "bytes" else generic_copy(tok)
    ids = t.encode(RICH * 3)
    assert t.decode(ids) == RICH * 3
    decoder = textgen.TextDecoder(t)
    assert (decoder.table is not None) == (path == "bytes")
    pieces = [decoder.push([i]) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == RICH * 3
    assert not any("\ufffd" in p for p in pieces)
    held = sum(1 for p in pieces[:-1] if p == "")
    assert held > len(ids) // 4  # characters really were split across tokens and held back
    if path == "generic":
        assert decoder.window == []  # the window restarts at character boundaries


def test_random_model_output_streams_without_replacement_characters(model, tok):
    cfg = dataclasses.replace(GREEDY, temperature=1.0, max_new_tokens=60, seed=5)
    stream = textgen.stream_complete(model, tok, "天地", cfg)
    pieces = list(stream)
    gen = stream.generation
    assert "".join(pieces) == gen.text and not any("\ufffd" in p for p in pieces)
    # invalid byte sequences a random model emits are dropped, everything else is the full decode
    assert gen.text == tok.decode(gen.token_ids).replace("\ufffd", "")


def test_complete_returns_text_ids_and_timing(model, tok):
    gen = textgen.complete(model, tok, "天地玄黄", GREEDY)
    want = engine.generate(model, [tok.encode("天地玄黄")], GREEDY, eot_id=tok.eot_id)[0]
    assert gen.token_ids == want.tokens and gen.prompt_tokens == len(tok.encode("天地玄黄"))
    assert gen.finish_reason == "length" and len(gen.token_ids) == GREEDY.max_new_tokens
    assert 0 < gen.first_token_seconds <= gen.seconds
    assert gen.tokens_per_second == pytest.approx(len(gen.token_ids) / gen.seconds)
    assert gen.chars_per_second == pytest.approx(len(gen.text) / gen.seconds)
    streamed = textgen.stream_complete(model, tok, "天地玄黄", GREEDY)
    assert "".join(streamed) == gen.text and streamed.generation.token_ids == gen.token_ids
    assert list(streamed) == []  # exhausted


def test_stop_strings_cut_the_text_and_stop_generating(model, tok):
    full = textgen.complete(model, tok, "宇宙", dataclasses.replace(GREEDY, max_new_tokens=40)).text
    assert len(full) > 8
    stop = full[5:8]
    cut = full[:full.find(stop)]
    gen = textgen.complete(model, tok, "宇宙", dataclasses.replace(GREEDY, max_new_tokens=40), stop=[stop])
    assert gen.text == cut and gen.finish_reason == "stop"
    assert len(gen.token_ids) < 40  # generation stopped, it did not just trim the text
    pieces = list(textgen.stream_complete(model, tok, "宇宙", dataclasses.replace(GREEDY, max_new_tokens=40),
                                          stop=[stop]))
    assert "".join(pieces) == cut


def test_answer_uses_the_chat_template_and_stops_at_the_end_token(model, tok):
    history = [("你好", "天地")]
    gen = textgen.answer(model, tok, "宇宙？", GREEDY, history=history)
    ids = tok.render_prompt(history, "宇宙？")
    assert gen.prompt_tokens == len(ids)
    assert gen.token_ids == engine.generate(model, [ids], GREEDY, eot_id=tok.eot_id)[0].tokens
    alone = textgen.answer(model, tok, "宇宙？", GREEDY)
    ender = Tokenizer(tok.hf)
    ender.eot_id = alone.token_ids[3]  # pretend the model's 4th token is the end-of-text token
    ended = textgen.answer(model, ender, "宇宙？", GREEDY)
    assert ended.finish_reason == "eot"
    assert ended.token_ids == alone.token_ids[:alone.token_ids.index(ender.eot_id)]
    streamed = textgen.stream_answer(model, tok, "宇宙？", GREEDY, history=history)
    assert "".join(streamed) == gen.text


def test_answer_batch_equals_single_answers(model, tok):
    questions = ["你好", "天地玄黄，宇宙洪荒是什么意思？", "😀"]
    batch = textgen.answer_batch(model, tok, questions, GREEDY)
    assert [g.text for g in batch] == [textgen.answer(model, tok, q, GREEDY).text for q in questions]
    assert textgen.answer_batch(model, tok, [], GREEDY) == []


def test_history_drops_oldest_turns_first_and_keeps_the_question(tok):
    history = [(f"天地{i}", f"玄黄{i}") for i in range(8)]
    ids, dropped = textgen.chat_prompt(tok, history, "最后的问题", context=128, max_new_tokens=10)
    budget = engine.prompt_budget(128, 10)
    assert 0 < dropped < len(history)
    assert ids == tok.render_prompt(history[dropped:], "最后的问题") and len(ids) <= budget
    assert len(tok.render_prompt(history[dropped - 1:], "最后的问题")) > budget
    long_question = "天地玄黄宇宙洪荒" * 20
    ids, dropped = textgen.chat_prompt(tok, history, long_question, context=128, max_new_tokens=10)
    assert dropped == len(history) and ids == tok.render_prompt([], long_question)


def test_long_chat_prompt_still_generates(model, tok):
    gen = textgen.answer(model, tok, "天地玄黄宇宙洪荒" * 20, GREEDY)
    assert gen.prompt_tokens == engine.prompt_budget(64, GREEDY.max_new_tokens)
    assert len(gen.token_ids) == GREEDY.max_new_tokens
