"""The arena web page (Gradio): Battle (anonymous), Side by side (named) and Leaderboard tabs.

    page = build_page(arena, defaults=Settings())
    launch(page, "0.0.0.0", 7870)            # in the background; page.close() stops it

Only wiring: battles, votes and ratings live in battle.py, votes.py and leaderboard.py, so the page
and `miniglm arena leaderboard` show the same numbers. Each browser session keeps its own `Round`
in a gr.State. Elements carry ids (`anonymous-question`, `anonymous-left`, `anonymous-vote-left`,
`leaderboard-refresh`, ...) so the browser test can drive the page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from miniglm.extras import require
from miniglm.serve.arena import leaderboard as lb
from miniglm.serve.arena.battle import Arena, Round, RoundError
from miniglm.serve.arena.contestants import Settings
from miniglm.serve.arena.votes import read_votes

VOTE_BUTTONS = (("left", "👈 A is better"), ("right", "👉 B is better"), ("tie", "🤝 Tie"), ("both_bad", "👎 Both are bad"))
VOTE_WORDS = {"left": "A is better", "right": "B is better", "tie": "a tie", "both_bad": "both are bad"}
INTRO = ("# MiniGLM arena\nAsk a question: two models answer side by side. In **Battle** their names stay "
         "hidden until you vote; both answers appear at the same pace, so speed gives nothing away. "
         "Follow-up questions go to both. Vote for the better answer, then the names are revealed.")


def _labels(rnd: Round | None, mode: str) -> tuple[str, str]:
    if rnd is not None and (mode == "named" or rnd.vote is not None):
        return f"Model A: {rnd.left}", f"Model B: {rnd.right}"
    return "Model A", "Model B"


def _view(gr, rnd: Round | None, mode: str, status: str, live: tuple[str, str] | None, keep: str) -> tuple:
    """(left chat, right chat, status, round, question box) for the page; `live`: the answers streaming now."""
    left, right = _labels(rnd, mode)
    msgs = [rnd.messages(side, live[i] if live else None) if rnd else [] for i, side in enumerate(("left", "right"))]
    return (gr.Chatbot(value=msgs[0], label=left), gr.Chatbot(value=msgs[1], label=right), status, rnd, keep)


def _after_turn(rnd: Round) -> str:
    if rnd.failed:
        return "⚠️ " + "; ".join(rnd.failed) + " — this round cannot be voted on: 🔄 regenerate or 🎲 start a new round."
    hidden = " Names are revealed after your vote." if rnd.mode == "anonymous" else ""
    return f"Which answer is better? Vote below, or ask a follow-up.{hidden}"


def _reveal(rnd: Round, record: dict) -> str:
    text = (f"✅ Vote recorded ({VOTE_WORDS[rnd.vote or '']}). Model A was **{rnd.left}**, "
            f"model B was **{rnd.right}**. Type a new question for a new round.")
    if rnd.mode == "anonymous" and not record["anonymous"]:
        text += " (Not counted on the blind leaderboard: " + "; ".join(record.get("revealed_by", [])) + ".)"
    return text


class _PanelEvents:
    """The event handlers of one panel; every one returns (left chat, right chat, status, round, question)."""

    def __init__(self, gr, arena: Arena, mode: str):
        self.gr, self.arena, self.mode = gr, arena, mode

    def view(self, rnd: Round | None, status: str, live: tuple[str, str] | None = None, keep: str = "") -> tuple:
        return _view(self.gr, rnd, self.mode, status, live, keep)

    def stream(self, rnd: Round, turns: Iterator[tuple[str, str]], keep: str = "") -> Iterator[tuple]:
        try:
            yield self.view(rnd, "⏳ Both models are answering…")
            for left, right in turns:
                yield self.view(rnd, "⏳ Both models are answering…", live=(left, right))
        except RoundError as e:
            yield self.view(rnd, f"⚠️ {e}", keep=keep)  # the question stays in the box to retry
            return
        yield self.view(rnd, _after_turn(rnd))

    def send(self, text: str, rnd: Round | None, sid: str, temp: float, top_p: float, max_new: float, *picked):
        settings = Settings(float(temp), float(top_p), int(max_new))
        changed = self.mode == "named" and rnd is not None and (rnd.left, rnd.right) != tuple(picked)
        if rnd is None or rnd.vote is not None or changed:  # a new round: first question, after a vote, new pair
            try:
                rnd = self.arena.new_round(self.mode, *picked, session=sid)
            except RoundError as e:
                yield self.view(rnd, f"⚠️ {e}", keep=text)
                return
        yield from self.stream(rnd, self.arena.ask(rnd, text, settings), keep=text)

    def regenerate(self, rnd: Round | None, temp: float, top_p: float, max_new: float):
        if rnd is None:
            yield self.view(rnd, "⚠️ nothing to regenerate yet")
            return
        yield from self.stream(rnd, self.arena.regenerate(rnd, Settings(float(temp), float(top_p), int(max_new))))

    def vote(self, choice: str, rnd: Round | None) -> tuple:
        if rnd is None:
            return self.view(rnd, "⚠️ ask a question first")
        try:
            record = self.arena.vote(rnd, choice)
        except RoundError as e:
            return self.view(rnd, f"⚠️ {e}")
        return self.view(rnd, _reveal(rnd, record))


def _panel(gr, arena: Arena, mode: str, controls: list, session) -> None:
    """One chat-and-vote panel; mode "anonymous" draws pairs, "named" takes them from dropdowns."""
    picks = []
    if mode == "named":
        with gr.Row():
            picks = [gr.Dropdown(arena.names, value=arena.names[i], label=f"Model {'AB'[i]}",
                                 elem_id=f"named-pick-{side}") for i, side in enumerate(("left", "right"))]
    state = gr.State(None)
    with gr.Row():
        # no like/dislike or clear buttons inside the panes: votes and new rounds have their own buttons
        chats = [gr.Chatbot(label=f"Model {'AB'[i]}", elem_id=f"{mode}-{side}", height=420, buttons=["copy"],
                            feedback_options=None) for i, side in enumerate(("left", "right"))]
    status = gr.Markdown(elem_id=f"{mode}-status")
    with gr.Row():
        votes = [(choice, gr.Button(label, elem_id=f"{mode}-vote-{choice}")) for choice, label in VOTE_BUTTONS]
    with gr.Row():
        question = gr.Textbox(show_label=False, placeholder="Ask both models a question…", scale=6,
                              elem_id=f"{mode}-question")
        send = gr.Button("Send", variant="primary", scale=1, elem_id=f"{mode}-send")
    with gr.Row():
        regen = gr.Button("🔄 Regenerate", elem_id=f"{mode}-regenerate")
        clear = gr.Button("🎲 New round" if mode == "anonymous" else "🧹 Clear", elem_id=f"{mode}-new")
    events, outputs = _PanelEvents(gr, arena, mode), [*chats, status, state, question]
    send.click(events.send, [question, state, session, *controls, *picks], outputs)
    question.submit(events.send, [question, state, session, *controls, *picks], outputs)
    regen.click(events.regenerate, [state, *controls], outputs)
    clear.click(lambda: events.view(None, ""), None, outputs)
    for choice, button in votes:
        button.click(lambda rnd, choice=choice: events.vote(choice, rnd), [state], outputs)


def leaderboard_view(arena: Arena, include_named: bool, rounds: int, seed: int):
    """(markdown, win-rate figure, battle-count figure) from the votes log as it is now."""
    read = read_votes(arena.log.path) if arena.log.path.is_file() else None
    votes = read.votes if read else []
    board = lb.build_leaderboard(votes, include_named=include_named, rounds=rounds, seed=seed)
    notes = "".join(f"> ⚠️ {w}\n" for w in (read.warnings if read else []))
    if not board.rows:
        return notes + lb.format_markdown(board), None, None
    return notes + lb.format_markdown(board), lb.plot_win_rates(board), lb.plot_battle_counts(board)


def _leaderboard_tab(gr, arena: Arena, rounds: int, seed: int):
    gr.Markdown("Bradley–Terry ratings on the Elo scale (mean 1000) with 95% bootstrap intervals; a model's "
                "rank is 1 + the number of models that are better beyond doubt (their whole interval above "
                "its own). Online Elo (k=4) is shown for comparison. Only blind battles count unless asked.")
    with gr.Row():
        include = gr.Checkbox(False, label="include named votes and battles whose answers named a model")
        refresh = gr.Button("🔄 Refresh", elem_id="leaderboard-refresh")
    table = gr.Markdown(elem_id="leaderboard-table")
    with gr.Row():
        win = gr.Plot(label="pairwise win rate", format="png")
        counts = gr.Plot(label="battles per pair", format="png")
    refresh.click(lambda inc: leaderboard_view(arena, inc, rounds, seed), [include], [table, win, counts])
    return refresh


def build_page(arena: Arena, defaults: Settings | None = None, rounds: int = 1000, seed: int = 0):
    """The arena's Gradio Blocks (not launched)."""
    gr = require("gradio", "serve")
    defaults = defaults or Settings()
    with gr.Blocks(title="MiniGLM arena") as page:
        gr.Markdown(INTRO)
        with gr.Accordion("Sampling, shared by both models", open=False):
            with gr.Row():
                controls = [gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="temperature"),
                            gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="top-p"),
                            gr.Slider(1, 1024, value=defaults.max_new_tokens, step=1, label="max new tokens")]
        session = gr.State(lambda: uuid.uuid4().hex)  # one id per browser session, logged with its votes
        with gr.Tabs():
            with gr.Tab("Battle (anonymous)", id="battle"):
                _panel(gr, arena, "anonymous", controls, session)
            with gr.Tab("Side by side (named)", id="named"):
                _panel(gr, arena, "named", controls, session)
            with gr.Tab("Leaderboard", id="leaderboard"):
                _leaderboard_tab(gr, arena, rounds, seed)
    return page


def launch(page, host: str, port: int) -> None:
    """Start serving the page in the background (returns once it accepts connections; `page.close()`
    stops it). Many sessions may battle at once: Gradio's default runs one event at a time."""
    page.queue(default_concurrency_limit=64)
    page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
