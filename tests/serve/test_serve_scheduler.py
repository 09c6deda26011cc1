"""The batch scheduler in-process: text and usage as the text layer gives them, stop strings held back,
the end-of-text token, queue limits, cancellation, and a failing step that does not stop the service."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from serve_helpers import make_checkpoint

from miniglm.checkpoint import load_checkpoint
from miniglm.config import SampleConfig
from miniglm.generate import engine
from miniglm.generate import text as textgen
from miniglm.serve.scheduler import Failed, Finished, Job, Piece, QueueFull, Scheduler

GREEDY = SampleConfig(temperature=0, max_new_tokens=12, device="cpu", dtype="float32")
QUESTIONS = ["你好", "天地玄黄", "寒来暑往，秋收冬藏", "日"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("sched"), "sched"))


@pytest.fixture
def scheduler(loaded):
    s = Scheduler(loaded.model, loaded.tokenizer, max_batch=4, max_queue=8)
    s.start()
    yield s
    s.stop()


async def collect(handle) -> list:
    return [event async for event in handle]


def run_jobs(scheduler: Scheduler, jobs: list[Job]) -> list[list]:
    async def main():
        return await asyncio.gather(*(collect(scheduler.submit(j)) for j in jobs))
    return asyncio.run(main())


def test_answers_and_usage_equal_the_text_layer(loaded, scheduler):
    tok = loaded.tokenizer
    jobs = [Job(tok.render_prompt([], q), GREEDY, seed=0) for q in QUESTIONS]
    for q, job, events in zip(QUESTIONS, jobs, run_jobs(scheduler, jobs)):
        want = textgen.answer(loaded.model, tok, q, GREEDY)
        *pieces, final = events
        assert all(isinstance(p, Piece) and p.text for p in pieces)
        assert "".join(p.text for p in pieces) == want.text
        assert final == Finished("length" if want.finish_reason == "length" else "stop", len(job.prompt),
                                 len(want.token_ids))
    assert scheduler.stats()["completed"] == len(QUESTIONS) and scheduler.stats()["running"] == 0


def test_stop_strings_are_held_back_and_cut(loaded, scheduler):
    tok = loaded.tokenizer
    prompt = tok.encode("天地")
    full = textgen.complete(loaded.model, tok, "天地", dataclasses.replace(GREEDY, max_new_tokens=30)).text
    stop = full[5:7]
    [events] = run_jobs(scheduler, [Job(prompt, dataclasses.replace(GREEDY, max_new_tokens=30), 0, [stop])])
    *pieces, final = events
    text = "".join(p.text for p in pieces)
    assert text == full[:full.find(stop)] and final.reason == "stop"  # nothing from the stop string on
    assert stop not in text and len(pieces) > 1


def test_the_end_of_text_token_finishes_with_stop_and_is_not_counted(loaded, scheduler):
    tok = loaded.tokenizer
    prompt = tok.encode("天地")
    ids = engine.generate(loaded.model, [prompt], GREEDY)[0].tokens
    scheduler.batch.eot_id = ids[3]  # pretend the model's 4th token is the end of text
    assert ids[3] not in ids[:3]
    [events] = run_jobs(scheduler, [Job(prompt, GREEDY, 0)])
    assert events[-1] == Finished("stop", len(prompt), 3)
    decoder = textgen.TextDecoder(tok)
    assert "".join(e.text for e in events[:-1]) == decoder.push(ids[:3]) + decoder.flush()


def test_the_queue_limit_and_cancelled_waiting_jobs(loaded):
    s = Scheduler(loaded.model, loaded.tokenizer, max_batch=1, max_queue=1)  # not started: jobs stay queued
    prompt = loaded.tokenizer.encode("天地")

    async def main():
        first, second = s.submit(Job(prompt, GREEDY, 0)), s.submit(Job(prompt, GREEDY, 0))
        with pytest.raises(QueueFull, match="0 generations running and 2 waiting"):
            s.submit(Job(prompt, GREEDY, 0))
        second.cancel()
        s.start()
        return await collect(first)

    try:
        events = asyncio.run(main())
    finally:
        s.stop()
    assert isinstance(events[-1], Finished)
    assert s.stats() | {"generated_tokens": 0} == {"running": 0, "waiting": 0, "completed": 1, "cancelled": 1,
                                                   "failed": 0, "generated_tokens": 0, "peak_running": 1}


def test_jobs_that_cannot_run_are_refused_at_submit(loaded, scheduler):
    async def main():
        with pytest.raises(ValueError, match="exceeds the model's context"):
            scheduler.submit(Job([1] * 60, GREEDY, 0))
        with pytest.raises(ValueError, match="outside the vocabulary"):
            scheduler.submit(Job([10 ** 6], GREEDY, 0))
    asyncio.run(main())


def test_a_failing_step_fails_its_requests_and_the_scheduler_keeps_serving(loaded, scheduler):
    prompt = loaded.tokenizer.encode("天地")
    real_step = scheduler.batch.step
    calls = []

    def broken_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_step()

    scheduler.batch.step = broken_once
    [failed] = run_jobs(scheduler, [Job(prompt, GREEDY, 0)])
    assert failed == [Failed("internal error during generation: RuntimeError: boom")]
    assert len(scheduler.batch) == 0
    [events] = run_jobs(scheduler, [Job(prompt, GREEDY, 0)])
    assert isinstance(events[-1], Finished) and events[-1].completion_tokens == 12
    assert scheduler.stats()["failed"] == 1 and scheduler.stats()["completed"] == 1
