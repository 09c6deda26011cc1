"""`miniglm serve` through the official openai client: answers, streaming chunk rules, usage, batching."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from serve_helpers import tokenizer_of

from miniglm.__main__ import main

USER = [{"role": "user", "content": "你好"}]


def sample_cli(run, prompt: str, chat: bool, tmp_path, capsys) -> dict:
    """What `miniglm sample --temperature 0` writes for one prompt (the server runs with the same defaults)."""
    out = tmp_path / "sample.jsonl"
    argv = ["sample", str(run), "--prompt", prompt, "--temperature", "0", "--max_new_tokens", "12",
            "--device", "cpu", "--dtype", "float32", "--output", str(out), *(["--chat"] if chat else [])]
    assert main(argv) == 0
    capsys.readouterr()
    return json.loads(out.read_text(encoding="utf-8").splitlines()[0])


def openai_reason(sample_reason: str) -> str:
    return "length" if sample_reason == "length" else "stop"


def test_models_lists_and_retrieves_every_served_model(main_server):
    client = main_server.client()
    cards = client.models.list().data
    assert [m.id for m in cards] == ["alpha", "beta"]
    assert all(m.object == "model" and m.owned_by == "miniglm" and m.created > 0 for m in cards)
    assert client.models.retrieve("beta").id == "beta"
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.models.retrieve("gamma")


@pytest.mark.parametrize("model", ["alpha", "beta"])
def test_chat_greedy_equals_miniglm_sample_with_exact_usage(main_server, model, tmp_path, capsys):
    want = sample_cli(main_server.runs[model], "你好", True, tmp_path, capsys)
    r = main_server.client().chat.completions.create(model=model, messages=USER)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == model
    [choice] = r.choices
    assert choice.message.role == "assistant" and choice.message.content == want["text"]
    assert choice.finish_reason == openai_reason(want["finish_reason"])
    prompt_tokens = len(tokenizer_of(main_server.runs[model]).render_prompt([], "你好"))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_tokens, want["new_tokens"]) == (
        want["prompt_tokens"], want["new_tokens"])
    assert r.usage.total_tokens == prompt_tokens + want["new_tokens"]


def test_models_answer_differently_and_completions_equal_miniglm_sample(main_server, tmp_path, capsys):
    client = main_server.client()
    texts = {}
    for model in ("alpha", "beta"):
        want = sample_cli(main_server.runs[model], "天地", False, tmp_path, capsys)
        r = client.completions.create(model=model, prompt="天地")
        assert r.object == "text_completion" and r.id.startswith("cmpl-")
        assert r.choices[0].text == want["text"] and r.choices[0].finish_reason == openai_reason(want["finish_reason"])
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (want["prompt_tokens"], want["new_tokens"])
        texts[model] = r.choices[0].text
    assert texts["alpha"] != texts["beta"]  # the request's model picked the checkpoint


def test_chat_stream_follows_the_chunk_rules(main_server):
    client = main_server.client()
    whole = client.chat.completions.create(model="alpha", messages=USER)
    chunks = list(client.chat.completions.create(model="alpha", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    *answer, usage_chunk = chunks
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")  # one id for the stream
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and {c.model for c in chunks} == {"alpha"}
    assert len({c.created for c in chunks}) == 1
    assert answer[0].choices[0].delta.role == "assistant"  # the first chunk carries the role
    assert all(c.choices[0].finish_reason is None for c in answer[:-1])  # intermediate chunks: null
    assert answer[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert all(c.usage is None for c in answer)  # usage only in the final chunk, which has no choices
    assert usage_chunk.choices == [] and usage_chunk.usage == whole.usage
    assert "".join(c.choices[0].delta.content or "" for c in answer) == whole.choices[0].message.content
    assert len(answer) >= 3  # role chunk, text in pieces, reason chunk


def test_stream_wire_format_ends_with_done_and_never_splits_a_character(main_server):
    """Raw SSE: data lines only, JSON each, `data: [DONE]` last; sampled streams never show U+FFFD."""
    body = {"model": "alpha", "messages": [{"role": "user", "content": "寒来暑往"}], "stream": True,
            "temperature": 1.5, "max_tokens": 40}
    with main_server.http() as http:
        for seed in range(6):
            with http.stream("POST", "/v1/chat/completions", json={**body, "seed": seed}) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
            assert data[-1] == "[DONE]"
            chunks = [json.loads(d) for d in data[:-1]]
            assert "usage" not in chunks[0]  # not asked for
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
            assert "\ufffd" not in text and text


def test_completion_stream_equals_the_whole_answer(main_server):
    client = main_server.client()
    whole = client.completions.create(model="beta", prompt="日月", max_tokens=20)
    chunks = list(client.completions.create(model="beta", prompt="日月", max_tokens=20, stream=True))
    assert len({c.id for c in chunks}) == 1 and {c.object for c in chunks} == {"text_completion"}
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text


def test_stop_strings_cut_the_answer_and_never_appear_in_the_stream(main_server):
    client = main_server.client()
    full = client.completions.create(model="alpha", prompt="宇宙", max_tokens=30).choices[0].text
    stop = full[4:6]
    want = full[:full.find(stop)]
    r = client.completions.create(model="alpha", prompt="宇宙", max_tokens=30, stop=[stop, "不会出现的字符串"])
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    pieces = [c.choices[0].text for c in client.completions.create(model="alpha", prompt="宇宙", max_tokens=30,
                                                                    stop=stop, stream=True)]
    assert "".join(pieces) == want and stop not in "".join(pieces)


def test_system_and_earlier_turns_are_rendered_by_the_chat_template(main_server):
    messages = [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "你好"},
                {"role": "assistant", "content": [{"type": "text", "text": "你好！"}]},
                {"role": "user", "content": "天地"}]
    r = main_server.client().chat.completions.create(model="alpha", messages=messages, max_tokens=3)
    want = tokenizer_of(main_server.runs["alpha"]).render_prompt([("你是助手\n你好", "你好！")], "天地")
    assert r.usage.prompt_tokens == len(want) and r.usage.completion_tokens <= 3


def test_seed_makes_sampling_reproducible(main_server):
    client = main_server.client()

    def sample(seed: int) -> str:
        return client.chat.completions.create(model="alpha", messages=USER, temperature=1.0, top_p=0.9,
                                              seed=seed, max_tokens=20).choices[0].message.content

    assert sample(5) == sample(5) != sample(6)


def test_lengths_beyond_the_context_are_400(main_server):
    client = main_server.client()
    with pytest.raises(openai.BadRequestError, match="max_tokens=60 does not fit") as e:
        client.chat.completions.create(model="alpha", messages=USER, max_tokens=60)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="takes at most 64 tokens"):
        client.completions.create(model="alpha", prompt="天地玄黄" * 40)
    # without max_tokens a long prompt gets the room that is left
    r = client.completions.create(model="alpha", prompt="天地玄黄" * 6, max_tokens=None)
    assert r.usage.prompt_tokens + r.usage.completion_tokens <= 64


def test_sixteen_concurrent_streams_each_equal_their_one_at_a_time_output(main_server):
    client = main_server.client()
    jobs = [("alpha" if i % 3 else "beta", "天地玄黄宇宙洪荒"[: 1 + i % 8] + "。" * (i % 3), 6 + 2 * (i % 10))
            for i in range(16)]  # different models, prompt lengths and answer lengths: rows join and leave
    alone = [client.completions.create(model=m, prompt=p, max_tokens=n).choices[0].text for m, p, n in jobs]
    before = main_server.stats("alpha")["completed"]

    async def one(aclient, model: str, prompt: str, n: int) -> tuple[str, str]:
        pieces, reason = [], None
        async for chunk in await aclient.completions.create(model=model, prompt=prompt, max_tokens=n, stream=True):
            pieces.append(chunk.choices[0].text)
            reason = chunk.choices[0].finish_reason or reason
        return "".join(pieces), reason

    async def run_all():
        async with main_server.async_client(http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=32))) as ac:
            return await asyncio.gather(*(one(ac, m, p, n) for m, p, n in jobs))

    results = asyncio.run(run_all())
    assert [text for text, _ in results] == alone
    assert all(reason in ("stop", "length") for _, reason in results)
    stats = main_server.stats("alpha")
    assert stats["completed"] - before == sum(m == "alpha" for m, _, _ in jobs)
    assert stats["peak_running"] > 1  # requests were decoded together, not one after another
