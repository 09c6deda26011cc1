"""The web chat page: its chat function on the real scheduler (history, streaming, stop), and a headless
Chromium that logs in with the key, asks a Chinese question and sees the streamed answer."""

from __future__ import annotations

import asyncio
import os
import time
import unicodedata

import pytest
from serve_helpers import KEY, make_checkpoint

from miniglm.checkpoint import load_checkpoint
from miniglm.config import SampleConfig
from miniglm.generate import text as textgen
from miniglm.serve.models import Registry, parse_model_specs
from miniglm.serve.web import history_turns, make_responder

GREEDY = SampleConfig(temperature=0, max_new_tokens=12, device="cpu", dtype="float32")
CHROMIUM = "/usr/bin/chromium"


def test_history_turns_reads_gradio_messages():
    history = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": [{"type": "text", "text": "好"}]},
               {"role": "user", "content": {"text": "天地"}}, {"role": "assistant", "content": "玄黄"},
               {"role": "user", "content": "stopped before any answer"}]
    assert history_turns(history) == [("你好", "好"), ("天地", "玄黄")]
    assert history_turns([]) == []


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    run = make_checkpoint(tmp_path_factory.mktemp("web"), "web")
    reg = Registry(parse_model_specs([str(run)]), GREEDY, max_batch=4, max_queue=4)
    reg.load()
    yield reg
    reg.close()


async def answers(respond, *args) -> list[str]:
    return [text async for text in respond(*args)]


def test_the_chat_function_streams_the_answer_after_the_history(registry):
    loaded = load_checkpoint(registry.specs[0].path)
    respond = make_responder(registry, GREEDY)
    history = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]
    shown = asyncio.run(answers(respond, "天地", history, "web", 0.0, 0.95, 12))
    want = textgen.answer(loaded.model, loaded.tokenizer, "天地", GREEDY, history=[("你好", "你好！")])
    assert shown[-1] == want.text
    assert len(shown) > 2 and all(want.text.startswith(s) for s in shown)  # growing text, as streamed
    assert registry.get("web").scheduler.stats()["completed"] == 1


def test_stopping_the_answer_frees_its_batch_slot(registry):
    respond = make_responder(registry, GREEDY)
    scheduler = registry.get("web").scheduler
    before = scheduler.stats()["cancelled"]

    async def stop_after_first_piece():
        gen = respond("天地", [], "web", 1.0, 0.95, 50)
        first = await gen.__anext__()
        await gen.aclose()  # what Gradio does when the stop button is pressed
        return first

    assert asyncio.run(stop_after_first_piece())
    deadline = time.monotonic() + 5
    while scheduler.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert scheduler.stats()["running"] == 0 and scheduler.stats()["cancelled"] == before + 1


def visible(text: str) -> str:
    """The characters a page shows: no whitespace, no control characters (a random model emits some)."""
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c)[0] != "C")


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no headless browser: {CHROMIUM} is not installed")
def test_browser_logs_in_asks_in_chinese_and_sees_the_streamed_answer(main_server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    loaded = load_checkpoint(main_server.runs["alpha"])
    want = visible(textgen.answer(loaded.model, loaded.tokenizer, "你好，天地是什么？", GREEDY).text)
    assert want
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            # Gradio keeps a connection open, so the page never reaches "networkidle"
            page.goto(main_server.url + "/", wait_until="domcontentloaded")
            page.get_by_label("username").fill("me")
            page.get_by_label("password").fill(KEY)
            page.get_by_role("button", name="Login").click()
            box = page.locator("#miniglm-input textarea")
            box.wait_for(timeout=60_000)
            page.get_by_label("模型 model").first.wait_for(state="attached", timeout=30_000)  # two models: a picker
            box.fill("你好，天地是什么？")
            box.press("Enter")
            page.locator('#miniglm-chat [data-testid="user"]').filter(has_text="你好，天地是什么？").wait_for(
                timeout=30_000)
            answer = page.locator('#miniglm-chat [data-testid="bot"]').last
            answer.wait_for(timeout=30_000)
            deadline = time.monotonic() + 30
            while visible(answer.inner_text()) != want and time.monotonic() < deadline:
                time.sleep(0.1)
            assert visible(answer.inner_text()) == want
        finally:
            browser.close()
