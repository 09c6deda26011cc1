"""Battles: drawing a pair, streaming both answers at one pace, and turning a round into a vote.
Plain Python (no Gradio), so the page is only wiring and tests drive battles directly.

    arena = Arena(contestants, VoteLog("votes.jsonl"))
    rnd = arena.new_round("anonymous", session="s1")        # a random pair, random sides
    for left_text, right_text in arena.ask(rnd, "什么是长江？", Settings()): ...
    record = arena.vote(rnd, "left")                          # logged; rnd.left / rnd.right revealed

- Pairs: uniform over pairs of different contestants, or (pairing="balanced", the default)
  weighted by 1 / sqrt(1 + counted votes of the pair), so pairs with few votes come up more often
  and the comparison graph fills in evenly; the side each one gets is a coin flip.
- Fair streaming: each contestant streams in its own thread; every `tick` the page gets both
  panes, cut to the same length (the shorter of the answers still being generated). So both panes
  grow in lockstep at the pace of the slower model and neither the first token's delay nor the
  speed gives a model away; an answer that has finished (or failed) no longer holds the other back.
- A contestant that fails shows the error in its pane; a round with a failed answer cannot be
  voted on (regenerate the turn, or start a new round), and the arena keeps running.
- Follow-up questions go to both contestants, each with its own earlier answers as history.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from miniglm.errors import UserError
from miniglm.serve.arena.contestants import Contestant, ContestantError, Settings
from miniglm.serve.arena.votes import VOTES, VoteLog, make_vote, names_mentioned, read_votes

SIDES = ("left", "right")


class RoundError(UserError):
    """An action the round's state does not allow (voting twice, voting on a failed answer...)."""


@dataclass
class Round:
    """One conversation between the user and a pair of contestants (plain data: safe in gr.State)."""

    mode: str  # "anonymous" (names hidden until the vote) or "named"
    left: str
    right: str
    session: str
    questions: list[str] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=lambda: {"left": [], "right": []})
    errors: dict[str, list[str | None]] = field(default_factory=lambda: {"left": [], "right": []})
    settings: dict = field(default_factory=dict)  # of the last turn
    vote: str | None = None

    def history(self, side: str) -> list[tuple[str, str]]:
        return list(zip(self.questions, self.answers[side]))

    @property
    def failed(self) -> list[str]:
        return [f"{side}: {e}" for side in SIDES for e in self.errors[side] if e]

    def messages(self, side: str, live: str | None = None) -> list[dict[str, str]]:
        """The pane's chat messages: questions, answers (`live`: the one being streamed), and errors."""
        out = []
        for i, q in enumerate(self.questions):
            out.append({"role": "user", "content": q})
            answer = self.answers[side][i] if i < len(self.answers[side]) else (live or "")
            err = self.errors[side][i] if i < len(self.errors[side]) else None
            out.append({"role": "assistant", "content": answer + (f"\n\n⚠️ error: {err}" if err else "")})
        return out


class _Feed(threading.Thread):
    """Consumes one contestant's stream in the background; the arena reads `parts` on each tick."""

    def __init__(self, make_stream: Callable[[], Iterator[str]]):
        super().__init__(daemon=True)  # a remote that hangs until its timeout must not block exit
        self.make_stream = make_stream
        self.parts: list[str] = []
        self.error: str | None = None
        self.done = False
        self.cancel = threading.Event()

    def run(self) -> None:
        stream = None
        try:
            stream = self.make_stream()
            for piece in stream:
                if self.cancel.is_set():
                    break
                self.parts.append(piece)  # list.append is atomic: the reader never sees half a piece
        except ContestantError as e:
            self.error = str(e)
        except Exception as e:  # anything a contestant raises is its failure, never the arena's
            self.error = f"{type(e).__name__}: {e}"
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # stops local generation / closes the HTTP response
            self.done = True

    def text(self) -> str:
        return "".join(list(self.parts))


def paced(texts: Sequence[str], done: Sequence[bool]) -> list[str]:
    """Both texts cut to the length of the shortest one still being generated (all of them once done)."""
    live = [len(t) for t, d in zip(texts, done) if not d]
    if not live:
        return list(texts)
    return [t[:min(live)] for t in texts]


def stream_pair(make_left: Callable[[], Iterator[str]], make_right: Callable[[], Iterator[str]], tick: float = 0.05
                ) -> Iterator[tuple[list[str], list[str | None]]]:
    """Yields ([left text, right text] paced, [left error, right error]) whenever they change, every
    `tick` seconds, until both streams end; the last yield holds the full texts. Closing the
    generator early cancels both streams."""
    feeds = [_Feed(make_left), _Feed(make_right)]
    for f in feeds:
        f.start()
    last = None
    try:
        while True:
            done = [f.done for f in feeds]  # read before the texts: a finished feed's text is then complete
            shown = (paced([f.text() for f in feeds], done), [f.error for f in feeds])
            if shown != last:
                last = shown
                yield shown
            if all(done):
                return
            time.sleep(tick)
    finally:
        for f in feeds:
            f.cancel.set()


class Arena:
    """The contestants, the votes log and the pairing; rounds are separate plain objects."""

    def __init__(self, contestants: Sequence[Contestant], log: VoteLog, pairing: str = "balanced",
                 seed: int | None = None, tick: float = 0.05):
        if len(contestants) < 2:
            raise UserError("an arena needs at least two contestants")
        if pairing not in ("balanced", "uniform"):
            raise UserError(f"pairing must be balanced or uniform, got {pairing!r}")
        self.contestants = {c.name: c for c in contestants}
        self.log, self.pairing, self.tick = log, pairing, tick
        self.rng = random.Random(seed)
        self._lock = threading.Lock()  # rng and pair counts are shared by all sessions
        self.pair_counts: Counter = Counter()
        if log.path.is_file():
            for v in read_votes(log.path).votes:
                if v["anonymous"]:
                    self.pair_counts[frozenset((v["left"], v["right"]))] += 1

    @property
    def names(self) -> list[str]:
        return list(self.contestants)

    def draw_pair(self) -> tuple[str, str]:
        pairs = list(itertools.combinations(self.names, 2))
        with self._lock:
            if self.pairing == "uniform":
                a, b = self.rng.choice(pairs)
            else:
                weights = [1 / math.sqrt(1 + self.pair_counts[frozenset(p)]) for p in pairs]
                a, b = self.rng.choices(pairs, weights)[0]
            return (a, b) if self.rng.random() < 0.5 else (b, a)

    def new_round(self, mode: str, left: str | None = None, right: str | None = None,
                  session: str | None = None) -> Round:
        if mode == "anonymous":
            left, right = self.draw_pair()
        elif left not in self.contestants or right not in self.contestants or left == right:
            raise RoundError("pick two different contestants")
        return Round(mode, left, right, session or uuid.uuid4().hex)

    def _turn(self, rnd: Round, settings: Settings) -> Iterator[tuple[str, str]]:
        """Stream the last question of `rnd` to both sides; record the answers and errors."""
        with self._lock:
            settings = dataclasses.replace(settings, seed=self.rng.randrange(2**31))  # fresh sample each turn
        rnd.settings = settings.as_dict()
        question = rnd.questions[-1]
        makers = [lambda side=side: self.contestants[getattr(rnd, side)].stream(rnd.history(side), question, settings)
                  for side in SIDES]
        shown: tuple[list[str], list[str | None]] = (["", ""], [None, None])
        complete = False
        try:
            for shown in stream_pair(*makers, tick=self.tick):
                yield shown[0][0], shown[0][1]
            complete = True
        finally:  # also when the page abandons the turn: keep questions and answers aligned
            texts, errors = shown
            if not complete:
                errors = ["stopped before the answer was complete"] * 2
            for side, text, err in zip(SIDES, texts, errors):
                rnd.answers[side].append(text)
                rnd.errors[side].append(err)

    def ask(self, rnd: Round, question: str, settings: Settings) -> Iterator[tuple[str, str]]:
        """A new question (first or follow-up) to both sides; yields the paced (left, right) texts."""
        if rnd.vote is not None:
            raise RoundError("this round has been voted on; start a new round")
        if not question.strip():
            raise RoundError("type a question first")
        rnd.questions.append(question.strip())
        yield from self._turn(rnd, settings)

    def regenerate(self, rnd: Round, settings: Settings) -> Iterator[tuple[str, str]]:
        """Answer the last question again (both sides), replacing the last answers."""
        if rnd.vote is not None:
            raise RoundError("this round has been voted on; start a new round")
        if not rnd.questions:
            raise RoundError("nothing to regenerate yet")
        for side in SIDES:
            del rnd.answers[side][len(rnd.questions) - 1:]
            del rnd.errors[side][len(rnd.questions) - 1:]
        yield from self._turn(rnd, settings)

    def vote(self, rnd: Round, choice: str) -> dict:
        """Log the vote on the round's last answers; returns the record."""
        if choice not in VOTES:
            raise RoundError(f"unknown vote {choice!r}")
        if rnd.vote is not None:
            raise RoundError("this round has already been voted on")
        if not rnd.answers["left"] or len(rnd.answers["left"]) < len(rnd.questions):
            raise RoundError("wait for both answers before voting")
        if rnd.failed:
            raise RoundError("not counted: a contestant failed (" + "; ".join(rnd.failed) + ")")
        every_answer = {side: "\n".join(rnd.answers[side]) for side in SIDES}
        revealed = names_mentioned(every_answer, {n: c.aliases() for n, c in self.contestants.items()})
        record = make_vote(
            session=rnd.session, mode=rnd.mode, left=rnd.left, right=rnd.right, vote=choice,
            conversation=[{"role": "user", "content": q} for q in rnd.questions],
            answers={side: rnd.answers[side][-1] for side in SIDES},
            earlier_answers={side: rnd.answers[side][:-1] for side in SIDES} if len(rnd.questions) > 1 else None,
            settings=rnd.settings, anonymous=rnd.mode == "anonymous" and not revealed, revealed_by=revealed)
        self.log.append(record)  # fsynced before the page says "recorded"
        rnd.vote = choice
        if record["anonymous"]:
            with self._lock:
                self.pair_counts[frozenset((rnd.left, rnd.right))] += 1
        return record
