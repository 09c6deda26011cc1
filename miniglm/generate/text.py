"""Text in, text out: completion and chat answers on top of the token-id engine.

    gen = complete(model, tok, "话说天下大势", SampleConfig(temperature=0))   # -> Generation
    gen = answer(model, tok, "什么是长江？", cfg, history=[(q1, a1)])
    for piece in stream_answer(model, tok, question, cfg): print(piece, end="", flush=True)

Owns:
- `TextDecoder`: token ids -> text incrementally, never emitting half a character. A Chinese
  character is 3 UTF-8 bytes and a byte-level BPE token may end in the middle of one; those bytes
  are held back until the character is complete. For byte-level tokenizers (all MiniGLM
  tokenizers) each id maps to its bytes once, and an incremental UTF-8 decoder does O(new bytes)
  work per token; other tokenizers decode a window of the ids since the last character boundary.
  Special tokens produce no text, and byte sequences that can never form a character (a model
  can emit them) are dropped, so U+FFFD never appears in the output.
- stop strings: the text is cut where a stop string begins and generation stops; text that could
  be the start of a stop string is held back while streaming, so a streamed answer never shows it.
- chat prompts: `answer` renders past turns and the question with `Tokenizer.render_prompt` (the
  one chat template) and stops at the end-of-text token. History that does not fit the context
  budget (`engine.prompt_budget`) loses its oldest turns first; the current question always stays
  (if it alone is too long, the engine keeps its most recent tokens).
- `Generation`: text, ids, why it ended, and timing: `seconds` (call to finish, prefill included),
  `first_token_seconds` (call to the first generated token), chars/s and tokens/s.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from miniglm.config import SampleConfig
from miniglm.generate import engine
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"



@dataclass
class Generation:
    """One finished generation, with the timing users judge speed by."""

    text: str
    token_ids: list[int]  # generated ids (no end token; with a stop string, up to the id completing it)
    prompt_tokens: int  # prompt ids the model saw
    finish_reason: str  # "eot" | "stop" | "length"
    seconds: float  # from the call to the end of this generation (prefill included)
    first_token_seconds: float | None  # from the call to the first generated token

    @property
    def chars_per_second(self) -> float:
        return len(self.text) / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0


class TextDecoder:
    """Incremental detokenizer: `push(ids)` returns only text made of complete characters."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.table = tokenizer.token_bytes
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.window: list[int] = []  # generic path: ids since the last character boundary
        self.sent = 0  # generic path: chars of decode(window) already returned

    def push(self, ids: Sequence[int]) -> str:
        if self.table is not None:
            table, n = self.table, len(self.table)
            return self.utf8.decode(b"".join(table[i] if i < n else b"" for i in ids))
        self.window += ids
        text = self.tokenizer.decode(self.window, skip_special_tokens=True)
        stable = text.rstrip(REPLACEMENT)  # a trailing U+FFFD may still become a character
        piece = stable[self.sent:]
        if len(stable) == len(text):  # the window ends on a character boundary: start afresh
            self.window, self.sent = [], 0
        else:
            self.sent = len(stable)
        return piece.replace(REPLACEMENT, "")

    def flush(self) -> str:
        """Whatever is complete at the very end (an unfinished character is dropped)."""
        if self.table is not None:
            return self.utf8.decode(b"", final=True)
        piece = self.tokenizer.decode(self.window, skip_special_tokens=True)[self.sent:]
        self.window, self.sent = [], 0
        return piece.replace(REPLACEMENT, "")


class _RowText:
    """Text state of one generated row: detokenizer, stop strings, accumulated text."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str]):
        self.decoder = TextDecoder(tokenizer)
        self.scanner = engine.StopScanner(list(stop), "")
        self.parts: list[str] = []
        self.stopped = False  # a stop string was found

    def push(self, ids: list[int], final: bool) -> str:
        text = self.decoder.push(ids) + (self.decoder.flush() if final else "")
        piece, self.stopped = self.scanner.push(text)
        if final and not self.stopped:
            piece += self.scanner.flush()
        self.parts.append(piece)
        return piece


def _run(model: MiniGLM, tokenizer: Tokenizer, prompts: list[list[int]], cfg: SampleConfig,
         stop: Sequence[str], seeds: Sequence[int] | None = None) -> Generator[list[str], None, list[Generation]]:
    """Generate all prompts as one batch; yields each step's new text per row; returns the results."""
    start = time.perf_counter()
    decoder = engine.Decoder(model, prompts, cfg, eot_id=tokenizer.eot_id, seeds=seeds)
    rows = [_RowText(tokenizer, stop) for _ in prompts]
    first: float | None = None
    ended: list[float | None] = [None] * len(prompts)
    for released in decoder:
        now = time.perf_counter() - start
        first = now if first is None else first
        pieces = []
        for i, (ids, row) in enumerate(zip(released, rows)):
            if ended[i] is not None:
                pieces.append("")
                continue
            pieces.append(row.push(ids, final=decoder.completions[i].finish_reason is not None))
            if row.stopped:
                decoder.stop(i)
            if decoder.completions[i].finish_reason is not None:
                ended[i] = now
        yield pieces
    return [Generation("".join(row.parts), c.tokens, c.prompt_tokens, c.finish_reason or "length",
                       ended[i] if ended[i] is not None else time.perf_counter() - start, first)
            for i, (row, c) in enumerate(zip(rows, decoder.completions))]


def cut_notice(n_tokens: int, context: int, max_new_tokens: int, what: str = "the prompt") -> str | None:
    """One line saying that a prompt of `n_tokens` loses its start to the context, or None if it fits."""
    keep = engine.prompt_budget(context, max_new_tokens)
    if n_tokens <= keep:
        return None
    return (f"note: {what} has {n_tokens} tokens; the context ({context}) keeps its last {keep} with room "
            f"for new tokens, so its first {n_tokens - keep} tokens are dropped")


class TextStream(Iterator[str]):
    """Text pieces of one generation as they come; `.generation` holds the result once it is exhausted."""

    def __init__(self, run: Generator[list[str], None, list[Generation]]):
        self._run = run
        self.generation: Generation | None = None

    def __next__(self) -> str:
        while self.generation is None:
            try:
                piece = next(self._run)[0]
            except StopIteration as done:
                self.generation = done.value[0]
                raise
            if piece:
                return piece
        raise StopIteration

    def close(self) -> None:
        self._run.close()


def _finish(run: Generator[list[str], None, list[Generation]]) -> list[Generation]:
    while True:
        try:
            next(run)
        except StopIteration as done:
            return done.value


def chat_prompt(tokenizer: Tokenizer, history: Sequence[tuple[str, str]], question: str, context: int,
                max_new_tokens: int) -> tuple[list[int], int]:
    """(prompt ids, number of oldest turns dropped) so that the prompt fits the context budget."""
    budget = engine.prompt_budget(context, max_new_tokens)
    history = list(history)
    for dropped in range(len(history) + 1):
        ids = tokenizer.render_prompt(history[dropped:], question)
        if len(ids) <= budget:
            return ids, dropped
    return ids, len(history)


def complete(model: MiniGLM, tokenizer: Tokenizer, prompt: str, cfg: SampleConfig,
             stop: Sequence[str] = ()) -> Generation:
    """Continue `prompt` as plain text."""
    return _finish(_run(model, tokenizer, [tokenizer.encode(prompt)], cfg, stop))[0]


def stream_complete(model: MiniGLM, tokenizer: Tokenizer, prompt: str, cfg: SampleConfig,
                    stop: Sequence[str] = ()) -> TextStream:
    return TextStream(_run(model, tokenizer, [tokenizer.encode(prompt)], cfg, stop))


def complete_batch(model: MiniGLM, tokenizer: Tokenizer, prompts: list[str], cfg: SampleConfig,
                   stop: Sequence[str] = (), seeds: Sequence[int] | None = None) -> list[Generation]:
    """Continuations of several prompts, generated as one batch (row i sampled with seeds[i], default cfg.seed)."""
    if not prompts:
        return []
    return _finish(_run(model, tokenizer, [tokenizer.encode(p) for p in prompts], cfg, stop, seeds))


def _answer_ids(model: MiniGLM, tokenizer: Tokenizer, question: str, cfg: SampleConfig,
                history: Sequence[tuple[str, str]]) -> list[int]:
    return chat_prompt(tokenizer, history, question, model.config.max_position_embeddings, cfg.max_new_tokens)[0]


def answer(model: MiniGLM, tokenizer: Tokenizer, question: str, cfg: SampleConfig,
           history: Sequence[tuple[str, str]] = (), stop: Sequence[str] = ()) -> Generation:
    """The model's answer to `question` after `history` [(question, answer), ...], via the chat template."""
    ids = _answer_ids(model, tokenizer, question, cfg, history)
    return _finish(_run(model, tokenizer, [ids], cfg, stop))[0]


def stream_answer(model: MiniGLM, tokenizer: Tokenizer, question: str, cfg: SampleConfig,
                  history: Sequence[tuple[str, str]] = (), stop: Sequence[str] = ()) -> TextStream:
    ids = _answer_ids(model, tokenizer, question, cfg, history)
    return TextStream(_run(model, tokenizer, [ids], cfg, stop))


def answer_batch(model: MiniGLM, tokenizer: Tokenizer, questions: list[str], cfg: SampleConfig,
                 stop: Sequence[str] = (), seeds: Sequence[int] | None = None) -> list[Generation]:
    """Answers to several independent questions, generated as one batch; each row gives what
    `answer` gives alone (greedy up to float rounding; sampled with seeds[i], default cfg.seed)."""
    if not questions:
        return []
    prompts = [_answer_ids(model, tokenizer, q, cfg, ()) for q in questions]
    return _finish(_run(model, tokenizer, prompts, cfg, stop, seeds))


def load_for_generation(path: str | Path, cfg: SampleConfig):
    """`checkpoint.Loaded` of a run or checkpoint directory, on cfg.device in cfg.dtype ("auto" resolved)."""
    from miniglm.checkpoint import load_checkpoint
    from miniglm.device import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    loaded = load_checkpoint(path, device=device, dtype=resolve_dtype(cfg.dtype, device, quantize=cfg.quantize))
    if cfg.quantize != "none":
        loaded.model.quantize(cfg.quantize)
    return loaded
