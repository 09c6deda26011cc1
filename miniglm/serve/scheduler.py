"""The batch scheduler: one thread per served model runs `ContinuousBatch`; requests stream text from it.

    scheduler = Scheduler(model, tokenizer, max_batch=16, max_queue=64); scheduler.start()
    handle = scheduler.submit(Job(prompt_ids, cfg, seed=1, stop=["\\n\\n"]))   # QueueFull -> HTTP 429
    async for event in handle: ...        # Piece(text) ..., then Finished(reason, usage) or Failed
    handle.cancel()                       # the client went away: the row leaves the batch at once

Loop of the thread: drop cancelled rows; admit waiting jobs while the batch has room (their
prompts are prefilled together and join the running batch); one decode step for every row;
deliver what each row produced. Between steps nothing else blocks it, so a request that arrives
while others are decoding starts at the next step, and a finished or cancelled one frees its slot
there. At most `max_batch` rows decode at once and at most `max_queue` jobs wait; `submit` refuses
more (`QueueFull`) rather than letting every stream slow down.

Text: each row owns a `TextDecoder` (never half a UTF-8 character) and a `StopScanner` over the
text (a stop string ends the row and is never shown; text that could be its start is held back).
finish_reason follows OpenAI: "stop" (end-of-text token or a stop string) or "length".
`completion_tokens` counts the generated ids, not the end-of-text token (as `miniglm sample`).

Events reach the asyncio side through `loop.call_soon_threadsafe`, so the web server never waits
on the model and the model never waits on a slow client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from miniglm.config import SampleConfig
from miniglm.generate.batch import ContinuousBatch, Event
from miniglm.generate.engine import StopScanner
from miniglm.generate.text import TextDecoder
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer

log = logging.getLogger("miniglm.serve")


class QueueFull(Exception):
    """Every batch slot and queue place is taken."""


@dataclass
class Job:
    prompt: list[int]  # token ids the model sees
    cfg: SampleConfig  # sampling settings; cfg.max_new_tokens bounds the answer
    seed: int
    stop: list[str] = field(default_factory=list)  # stop strings


@dataclass
class Piece:
    text: str  # new text, complete characters only


@dataclass
class Finished:
    reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    message: str


class Handle:
    """One submitted job as the web side sees it: an async iterator of events, and `cancel()`."""

    def __init__(self, scheduler: Scheduler, job: Job, loop: asyncio.AbstractEventLoop):
        self.scheduler, self.job, self.loop = scheduler, job, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False
        self.done = False  # a final event (Finished/Failed) was delivered

    def __aiter__(self):
        return self

    async def __anext__(self) -> Piece | Finished | Failed:
        if self.done and self.events.empty():
            raise StopAsyncIteration
        event = await self.events.get()
        if isinstance(event, (Finished, Failed)):
            self.done = True
        return event

    def cancel(self) -> None:
        """Stop generating for this job (no-op once it finished)."""
        if not self.cancelled:
            self.cancelled = True
            self.scheduler.wake()

    def deliver(self, event: Piece | Finished | Failed) -> None:
        """Called from the scheduler thread."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is gone, nobody is listening
            pass


class _Row:
    """Text state of one admitted job."""

    def __init__(self, handle: Handle, tokenizer: Tokenizer):
        self.handle = handle
        self.decoder = TextDecoder(tokenizer)
        self.scanner = StopScanner(handle.job.stop, "")
        self.tokens = 0  # generated ids (no end token)

    def advance(self, event: Event) -> tuple[str, str | None]:
        """(text to send, finish reason or None) after one batch event."""
        ended = event.finish_reason is not None
        text = ""
        if event.token is not None:
            self.tokens += 1
            text = self.decoder.push([event.token])
        if ended:
            text += self.decoder.flush()
        text, stopped = self.scanner.push(text)
        if stopped:
            return text, "stop"
        if ended:
            return text + self.scanner.flush(), "length" if event.finish_reason == "length" else "stop"
        return text, None


class Scheduler:
    """Continuous batching for one model in a thread of its own (see the module docstring)."""

    def __init__(self, model: MiniGLM, tokenizer: Tokenizer, max_batch: int = 16, max_queue: int = 64,
                 name: str = "model"):
        if max_batch < 1 or max_queue < 0:
            raise ValueError("max_batch must be >= 1 and max_queue >= 0")
        self.tokenizer, self.max_batch, self.max_queue = tokenizer, max_batch, max_queue
        self.batch = ContinuousBatch(model, tokenizer.eot_id)
        self.context = self.batch.context
        self.waiting: deque[Handle] = deque()
        self.rows: dict[int, _Row] = {}  # batch key -> row
        self.keys = itertools.count()
        self.cond = threading.Condition()
        self.stopping = False
        # completed/cancelled/failed requests, ids generated by completed ones, most rows decoded at once
        self.counters = {"completed": 0, "cancelled": 0, "failed": 0, "generated_tokens": 0, "peak_running": 0}
        self.thread = threading.Thread(target=self._loop, name=f"miniglm-serve-{name}", daemon=True)

    # ------------------------------------------------------------------ the web side
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout=30)

    def check(self, job: Job) -> None:
        """Raise ValueError if the job cannot run on this model (bad ids, too long for the context);
        an empty prompt becomes the end-of-text token it starts from."""
        job.prompt = self.batch.check(job.prompt, job.cfg.max_new_tokens)

    def submit(self, job: Job) -> Handle:
        """Queue a job; raises QueueFull when max_batch rows run and max_queue jobs wait already."""
        self.check(job)
        handle = Handle(self, job, asyncio.get_running_loop())
        with self.cond:
            if self.stopping:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) + len(self.rows) >= self.max_batch + self.max_queue:
                raise QueueFull(f"{len(self.rows)} generations running and {len(self.waiting)} waiting")
            self.waiting.append(handle)
            self.cond.notify()
        return handle

    def wake(self) -> None:
        with self.cond:
            self.cond.notify()

    def stats(self) -> dict[str, int]:
        with self.cond:
            return {"running": len(self.rows), "waiting": len(self.waiting), **self.counters}

    # ------------------------------------------------------------------ the thread
    def _loop(self) -> None:
        while True:
            with self.cond:
                while not (self.stopping or self.waiting or self.rows):
                    self.cond.wait()
                if self.stopping:
                    break
                admitted = self._take_waiting()
            try:
                self._drop_cancelled()
                jobs = [(key, h.job.prompt, h.job.cfg, h.job.seed) for key, h in admitted]
                events = self.batch.join(jobs) if jobs else []
                events += self.batch.step()
                self._deliver(events)
                time.sleep(0)  # let the event loop take the GIL between steps: requests are parsed meanwhile
            except Exception as e:  # a bug, or out of memory: fail the running requests, keep serving
                log.exception("generation failed")
                self._fail_all(f"internal error during generation: {type(e).__name__}: {e}")
        self._fail_all("the server is shutting down", waiting_too=True)

    def _take_waiting(self) -> list[tuple[int, Handle]]:
        """(key, handle) of the jobs that get a batch slot now; cancelled ones are dropped. Holds the lock."""
        gone = [h for h in self.waiting if h.cancelled]  # they leave the queue now, not when a slot frees
        if gone:
            self.waiting = deque(h for h in self.waiting if not h.cancelled)
            self.counters["cancelled"] += len(gone)
        taken = []
        while self.waiting and len(self.rows) < self.max_batch:
            handle = self.waiting.popleft()
            key = next(self.keys)
            self.rows[key] = _Row(handle, self.tokenizer)
            taken.append((key, handle))
        self.counters["peak_running"] = max(self.counters["peak_running"], len(self.rows))
        return taken

    def _drop_cancelled(self) -> None:
        gone = [k for k, r in self.rows.items() if r.handle.cancelled]
        if gone:
            self.batch.drop(gone)
            self._forget(gone, "cancelled")

    def _deliver(self, events: list[Event]) -> None:
        outbox, stopped, tokens = [], [], 0
        for event in events:
            row = self.rows.get(event.key)
            if row is None:
                continue
            text, reason = row.advance(event)
            if text:
                outbox.append((row.handle, Piece(text)))
            if reason is not None:
                outbox.append((row.handle, Finished(reason, len(row.handle.job.prompt), row.tokens)))
                tokens += row.tokens
                stopped.append(event.key)
        if stopped:  # bookkeeping first: a client that saw its Finished event finds it counted
            self.batch.drop(stopped)  # a stop string ends a row the batch itself would continue
            self._forget(stopped, "completed", tokens)
        for handle, item in outbox:
            handle.deliver(item)

    def _forget(self, keys: list[int], counter: str, tokens: int = 0) -> None:
        with self.cond:
            for k in keys:
                self.rows.pop(k, None)
            self.counters[counter] += len(keys)
            self.counters["generated_tokens"] += tokens

    def _fail_all(self, message: str, waiting_too: bool = False) -> None:
        """End every running row (and the queue, at shutdown) with a Failed event."""
        with self.cond:
            handles = [r.handle for r in self.rows.values()] + (list(self.waiting) if waiting_too else [])
            self.rows.clear()
            if waiting_too:
                self.waiting.clear()
            self.counters["failed"] += len(handles)
        self.batch.drop([r.key for r in self.batch.rows])
        for handle in handles:
            handle.deliver(Failed(message))
