"""The web chat page (Gradio), mounted on the API server and talking to the same schedulers.

    miniglm serve runs/sft --ui        # then open http://127.0.0.1:7860/ (redirects to /ui/)

A `gr.ChatInterface`: answers stream in as they are generated, the conversation is kept (each
turn is rendered with the chat template after the earlier ones; turns that no longer fit the
context are dropped, oldest first), the stop button ends the generation in the batch at once,
the trash button clears the chat. Settings: the model (a picker when several are served),
temperature, top-p and max new tokens. Chinese text uses a CJK font stack of fonts found on the
reader's machine (nothing is fetched from font servers).

With an API key the page asks for it on Gradio's login form (any user name, the key as password):
a browser cannot send the Authorization header the API routes want.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import secrets
from typing import Any

from miniglm.config import SampleConfig
from miniglm.extras import require
from miniglm.generate import engine
from miniglm.generate.text import chat_prompt
from miniglm.serve.models import Registry
from miniglm.serve.scheduler import Failed, Job, Piece, QueueFull

CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei",
             "WenQuanYi Micro Hei", "sans-serif"]
FONT_FAMILY = ", ".join(f'"{f}"' if " " in f else f for f in CJK_FONTS)
CSS = f"#miniglm-chat .message, #miniglm-chat textarea {{ font-family: {FONT_FAMILY}; }}"


def history_turns(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Gradio's message list -> [(question, answer), ...]; an unanswered question (stopped early) is skipped."""
    turns, question = [], None
    for message in history:
        text = _text(message.get("content"))
        if message.get("role") == "user":
            question = text if question is None else question + "\n" + text
        elif message.get("role") == "assistant" and question is not None:
            turns.append((question, text))
            question = None
    return turns


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list):
        return "".join(_text(c) for c in content)
    return ""


def _error(message: str) -> Exception:
    """An error Gradio shows in the page (imported here: the chat function itself does not need gradio)."""
    return require("gradio", "serve").Error(message)


def make_responder(registry: Registry, defaults: SampleConfig):
    """The chat function: (message, history, model id, temperature, top_p, max new tokens) -> text so far."""

    async def respond(message: str, history: list, model_id: str, temperature: float, top_p: float,
                      max_new_tokens: float):
        try:
            served = registry.get(model_id)
        except KeyError:
            raise _error("the model is still loading; try again in a moment") from None
        cfg = dataclasses.replace(defaults, temperature=float(temperature), top_p=max(0.01, float(top_p)),
                                  max_new_tokens=max(1, int(max_new_tokens)))
        ids, _ = chat_prompt(served.tokenizer, history_turns(history), message, served.context, cfg.max_new_tokens)
        ids = ids[-engine.prompt_budget(served.context, cfg.max_new_tokens):]  # a question too long alone
        cfg = dataclasses.replace(cfg, max_new_tokens=min(cfg.max_new_tokens, served.context - len(ids)))
        try:
            handle = served.scheduler.submit(Job(ids, cfg, secrets.randbits(63)))
        except QueueFull:
            raise _error("the server is busy; try again in a moment") from None
        text = ""
        try:
            async for event in handle:
                if isinstance(event, Piece):
                    text += event.text
                    yield text
                elif isinstance(event, Failed):
                    raise _error(event.message)
            yield text
        finally:
            if not handle.done:  # the stop button, a closed tab: the row leaves the batch now
                handle.cancel()

    return respond


def build_page(registry: Registry, defaults: SampleConfig):
    gr = require("gradio", "serve")
    ids = registry.ids
    longest = max(s.context for s in registry.specs)
    settings = [
        gr.Dropdown(ids, value=ids[0], label="模型 model", visible=len(ids) > 1, render=False),
        gr.Slider(0, 2, value=defaults.temperature, step=0.05, label="temperature", render=False),
        gr.Slider(0.05, 1, value=defaults.top_p, step=0.05, label="top_p", render=False),
        gr.Slider(1, longest, value=min(defaults.max_new_tokens, longest), step=1, label="max new tokens",
                  render=False),
    ]
    with gr.Blocks(title="MiniGLM", analytics_enabled=False) as page:
        gr.ChatInterface(
            make_responder(registry, defaults),
            # plain text: a small model's answers are not Markdown, and '*' or '#' must show as typed
            chatbot=gr.Chatbot(elem_id="miniglm-chat", height=480, label="MiniGLM", render_markdown=False,
                               render=False),
            textbox=gr.Textbox(placeholder="输入问题，回车发送 (Enter to send)", elem_id="miniglm-input",
                               show_label=False, submit_btn=True, stop_btn=True, render=False),
            additional_inputs=settings,
            additional_inputs_accordion=gr.Accordion("设置 settings", open=len(ids) > 1, render=False),
            title="MiniGLM", analytics_enabled=False, autofocus=True, fill_height=False,
            concurrency_limit=None,  # the batch scheduler queues (and refuses past --max-queue), not Gradio
        )
    return page


def mount_web(app, registry: Registry, defaults: SampleConfig, path: str, api_key: str | None) -> None:
    """Mount the chat page at `path` on the FastAPI app (behind a login asking for the key, if set)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local server
    gr = require("gradio", "serve")
    key = api_key.encode() if api_key else None

    def check(username: str, password: str) -> bool:
        return hmac.compare_digest(password.encode(), key)

    theme = gr.themes.Default(font=CJK_FONTS, font_mono=["Noto Sans Mono CJK SC", "monospace"])
    gr.mount_gradio_app(app, build_page(registry, defaults), path=path, auth=check if key else None,
                        auth_message="Enter the server's API key as the password (any user name).",
                        theme=theme, css=CSS, footer_links=[], ssr_mode=False)
