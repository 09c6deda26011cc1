"""Generation on token ids: prefill, one-token decode steps on a KV cache, sampling, stopping.

Token ids in, token ids out; no text, no HTTP (the text layer is `miniglm.generate.text`).

    completions = generate(model, [prompt_ids, ...], SampleConfig(temperature=0), eot_id=tok.eot_id)
    for token_id in stream(model, prompt_ids, cfg, eot_id=tok.eot_id): ...

How a generation runs (`Decoder`):
- prefill: all prompts go through the network at once and fill a preallocated per-layer cache
  (`MiniGLM.new_cache`); then each step feeds only the newest token of each row (no recomputation),
  through the model's own forward with its decode-time (fused, packed) weights.
- batches: prompts of different lengths are LEFT-padded; each row gets `position_ids` that start
  at 0 on its first real token and an attention mask that hides its padding, so a row's tokens are
  the ones it would get alone (greedy; up to float rounding). Finished rows leave the batch.
- sampling (`Sampler`), in this order: repetition penalty (HF's rule: a seen token's logit is
  divided by the penalty if positive, multiplied if negative; "seen" = prompt + generated), no-repeat
  n-gram (a token that would complete an n-gram already present in prompt + generated is banned),
  then temperature 0 = greedy argmax, else temperature, top-k, top-p (nucleus: the smallest set of
  most likely tokens whose mass reaches p) and a draw from the row's own `torch.Generator`
  (seeded with `cfg.seed` unless per-row seeds are given): a row draws exactly as it would alone,
  so the same seed and prompt give the same output, batched or not.
- stopping: the end-of-text token (finish_reason "eot"), a stop token sequence ("stop"), or
  `max_new_tokens` ("length"). Neither the end token nor a stop sequence is part of the output.
  While the newest tokens could still be the start of a stop sequence they are held back, so the
  stream never yields a token that the final result does not contain.

The context window (C = model.config.max_position_embeddings) is never exceeded:
- a prompt longer than C - min(max_new_tokens, C // 4) keeps its most recent tokens (the left end
  is dropped), leaving room for at least min(max_new_tokens, C // 4) new tokens;
- when generation fills the context, the cache is rebuilt from each row's most recent
  C - C // 4 tokens (one prefill) and decoding continues: the model always sees the latest
  window, re-anchored every C // 4 tokens (a sliding window in jumps, not a crash).
- an empty prompt starts from the end-of-text token (documents are separated by it in training).

`reference=True` swaps the cache for the slow, obvious path: every step recomputes each row's
whole visible window with `MiniGLM.forward`. Same window rule, same sampler; tests compare them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from miniglm.config import SampleConfig
from miniglm.model.model import MiniGLM


@dataclass
class Completion:
    """One row's result: generated ids (no end token, no stop sequence) and why it ended."""

    tokens: list[int]
    finish_reason: str | None = None  # "eot" | "stop" | "length"; None while running
    prompt_tokens: int = 0  # prompt ids the model saw (after left truncation)
    dropped_prompt_tokens: int = 0  # ids cut from the prompt's left end to fit the context


def prompt_budget(context: int, max_new_tokens: int) -> int:
    """Most prompt tokens kept: the context minus room for min(max_new_tokens, context // 4) new ones."""
    return max(1, context - max(1, min(max_new_tokens, context // 4)))


def slide_window(context: int) -> int:
    """Tokens kept when generation fills the context and the cache is rebuilt."""
    return max(1, context - max(1, context // 4))


class StopScanner:
    """Finds stop sequences in a growing sequence (token ids or text) without releasing their starts.

    `push(items)` returns (items safe to emit, stopped). Items that could begin a stop sequence are
    held back until they either complete it (then they are dropped and `stopped` is True) or cannot
    anymore. The buffer never exceeds the longest stop sequence, so each push is cheap.
    """

    def __init__(self, stops: Sequence[Sequence], empty: Sequence = ()):
        convert = str if isinstance(empty, str) else type(empty)
        self.empty = empty
        self.stops = [convert(s) for s in stops if len(s)]
        self.buf = empty

    def push(self, items: Sequence) -> tuple[Sequence, bool]:
        buf = self.buf + items
        if not self.stops:
            return buf, False
        first = min((i for i in (_find(buf, s) for s in self.stops) if i >= 0), default=-1)
        if first >= 0:
            self.buf = self.empty
            return buf[:first], True
        hold = max((k for s in self.stops for k in range(1, len(s)) if buf[len(buf) - k:] == s[:k]), default=0)
        self.buf = buf[len(buf) - hold:] if hold else self.empty
        return buf[:len(buf) - hold], False

    def flush(self) -> Sequence:
        buf, self.buf = self.buf, self.empty
        return buf


def _find(seq: Sequence, sub: Sequence) -> int:
    if isinstance(seq, str):
        return seq.find(sub)
    n = len(sub)
    return next((i for i in range(len(seq) - n + 1) if seq[i:i + n] == sub), -1)


class Sampler:
    """Logit processing and token choice for a batch (see the module docstring for the order)."""

    def __init__(self, cfg: SampleConfig, histories: list[list[int]], vocab_size: int, device: torch.device,
                 seeds: Sequence[int] | None = None):
        self.cfg = cfg
        seeds = [cfg.seed] * len(histories) if seeds is None else list(seeds)
        if len(seeds) != len(histories):
            raise ValueError(f"{len(seeds)} seeds for {len(histories)} prompts")
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]  # one per row
        self.seen = None
        if cfg.repetition_penalty != 1.0:
            self.seen = torch.zeros(len(histories), vocab_size, dtype=torch.bool, device=device)
            for b, h in enumerate(histories):
                self.seen[b, torch.tensor(h, device=device)] = True
        n = cfg.no_repeat_ngram_size
        self.ngrams = [_NgramTable(n, h) for h in histories] if n > 0 else None

    def choose(self, logits: torch.Tensor, histories: list[list[int]]) -> torch.Tensor:
        """logits (B, V) float32 -> next token ids (B,)."""
        cfg = self.cfg
        if self.seen is not None:
            p = cfg.repetition_penalty
            logits = torch.where(self.seen, torch.where(logits > 0, logits / p, logits * p), logits)
        if self.ngrams is not None:
            logits = logits.clone() if self.seen is None else logits
            for b, (table, h) in enumerate(zip(self.ngrams, histories)):
                banned = table.banned(h)
                if banned and len(banned) < logits.size(-1):
                    logits[b, list(banned)] = float("-inf")
        if cfg.temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits / cfg.temperature
        idx = None
        if 0 < cfg.top_k < logits.size(-1):
            logits, idx = logits.topk(cfg.top_k, dim=-1)  # sorted, most likely first
        elif cfg.top_p < 1.0:
            logits, idx = logits.sort(dim=-1, descending=True)
        if cfg.top_p < 1.0:
            probs = logits.softmax(dim=-1)
            outside = probs.cumsum(dim=-1) - probs >= cfg.top_p  # the tokens before already reach p
            logits = logits.masked_fill(outside, float("-inf"))
        probs = logits.softmax(dim=-1)
        choice = torch.cat([torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(self.generators)])
        return choice if idx is None else idx.gather(-1, choice.unsqueeze(-1)).squeeze(-1)

    def observe(self, tokens: torch.Tensor, histories: list[list[int]]) -> None:
        """Record each row's new token (already appended to its history)."""
        if self.seen is not None:
            self.seen[torch.arange(len(tokens), device=tokens.device), tokens] = True
        if self.ngrams is not None:
            for table, h in zip(self.ngrams, histories):
                table.add(h)

    def keep(self, rows: list[int]) -> None:
        self.generators = [self.generators[r] for r in rows]
        if self.seen is not None:
            self.seen = self.seen[rows]
        if self.ngrams is not None:
            self.ngrams = [self.ngrams[r] for r in rows]


class _NgramTable:
    """(n-1)-gram -> tokens that followed it in one row's history."""

    def __init__(self, n: int, history: list[int]):
        self.n = n
        self.next: dict[tuple[int, ...], set[int]] = {}
        for end in range(n, len(history) + 1):
            self._add(history[end - n:end])

    def _add(self, gram: list[int]) -> None:
        self.next.setdefault(tuple(gram[:-1]), set()).add(gram[-1])

    def add(self, history: list[int]) -> None:
        if len(history) >= self.n:
            self._add(history[-self.n:])

    def banned(self, history: list[int]) -> set[int]:
        key = tuple(history[len(history) - self.n + 1:]) if self.n > 1 else ()
        return self.next.get(key, set()) if len(key) == self.n - 1 else set()


class _CachedForward:
    """The fast path: one prefill into a preallocated KV cache, then one position per step."""

    def __init__(self, model: MiniGLM, max_len: int):
        self.model = model
        self.device = model.model.embed_tokens.weight.device
        self.max_len = max_len
        self.cache = None
        self.valid = None  # (B, max_len) bool: which cache positions hold real tokens; None = no padding

    def start(self, rows: list[list[int]]) -> torch.Tensor:
        B, P, dev = len(rows), max(map(len, rows)), self.device
        if self.cache is None or self.cache.k[0].size(0) != B:
            self.cache = self.model.new_cache(B, self.max_len)
        self.cache.reset()
        ids = torch.tensor([[0] * (P - len(r)) + r for r in rows], device=dev)  # (B, P) left-padded
        lens = torch.tensor([len(r) for r in rows], device=dev)
        self.next_pos = lens.clone()
        if bool((lens == P).all()):
            self.valid = None
            return self._forward(ids)
        pad = (P - lens).unsqueeze(1)  # (B, 1)
        arange = torch.arange(P, device=dev)
        positions = (arange.unsqueeze(0) - pad).clamp(min=0)  # (B, P): 0 at each row's first real token
        self.valid = torch.zeros(B, self.max_len, dtype=torch.bool, device=dev)
        self.valid[:, :P] = arange.unsqueeze(0) >= pad
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        # a padding query may see itself, so no softmax row is empty (its output is never used)
        mask = (causal & self.valid[:, None, :P]) | torch.eye(P, dtype=torch.bool, device=dev)
        return self._forward(ids, positions, mask.unsqueeze(1))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.unsqueeze(1)  # (B, 1)
        if self.valid is None:
            logits = self._forward(ids)
        else:
            S = self.cache.pos + 1
            self.valid[:, S - 1] = True
            logits = self._forward(ids, self.next_pos.unsqueeze(1), self.valid[:, None, None, :S])
        self.next_pos += 1
        return logits

    def _forward(self, ids, positions=None, mask=None) -> torch.Tensor:
        """(B, V) float32 logits of each row's last position."""
        logits, _ = self.model(ids, kv_cache=self.cache, position_ids=positions, attn_mask=mask, last_only=True)
        return logits[:, -1].float()

    @property
    def full(self) -> bool:
        return self.cache.pos >= self.max_len

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, device=self.device)
        c = self.cache
        c.k = [t.index_select(0, index) for t in c.k]
        c.v = [t.index_select(0, index) for t in c.v]
        self.next_pos = self.next_pos[index]
        if self.valid is not None:
            self.valid = self.valid[index]


class _ReferenceForward:
    """The slow, obvious path: each step recomputes every row's whole window, no cache, no padding."""

    def __init__(self, model: MiniGLM, max_len: int):
        self.model, self.max_len = model, max_len
        self.device = next(model.parameters()).device

    def start(self, rows: list[list[int]]) -> torch.Tensor:
        self.rows = [list(r) for r in rows]
        return self._logits()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        for r, t in zip(self.rows, tokens.tolist()):
            r.append(t)
        return self._logits()

    def _logits(self) -> torch.Tensor:
        out = [self.model(torch.tensor([r], device=self.device))[0][0, -1] for r in self.rows]
        return torch.stack(out).float()  # (B, V)

    @property
    def full(self) -> bool:
        return max(map(len, self.rows)) >= self.max_len

    def keep(self, rows: list[int]) -> None:
        self.rows = [self.rows[r] for r in rows]


@dataclass
class _Row:
    history: list[int]  # visible prompt + every generated id (the model's view, before windowing)
    out: Completion
    scanner: StopScanner
    steps: int = 0  # model steps taken for this row (the end token counts)


class Decoder:
    """One batch generation in progress. Iterate it: each step yields, per row, the newly released ids.

    `stop(row)` ends a row from outside (the text layer does it for stop strings); the batch ends
    when every row has finished. `completions` holds the results (complete once iteration ends);
    `logits` the raw (B_active, V) logits the latest tokens were chosen from.
    """

    def __init__(self, model: MiniGLM, prompts: Sequence[Sequence[int]], cfg: SampleConfig,
                 eot_id: int | None = None, stop_sequences: Sequence[Sequence[int]] = (),
                 reference: bool = False, seeds: Sequence[int] | None = None):
        if not prompts:
            raise ValueError("no prompts to generate from")
        self.cfg, self.eot_id = cfg, eot_id
        self.context = model.config.max_position_embeddings
        vocab = model.config.vocab_size
        keep = prompt_budget(self.context, cfg.max_new_tokens)
        self.rows: list[_Row] = []
        for prompt in prompts:
            prompt = [int(t) for t in prompt]
            if not prompt:
                if eot_id is None:
                    raise ValueError("empty prompt and no end-of-text id to start from")
                prompt = [eot_id]
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
            visible = prompt[-keep:]
            out = Completion([], None, len(visible), len(prompt) - len(visible))
            self.rows.append(_Row(visible, out, StopScanner([list(s) for s in stop_sequences], [])))
        self.completions = [r.out for r in self.rows]
        longest = max(len(r.history) for r in self.rows)
        max_len = min(self.context, longest + cfg.max_new_tokens)
        self.forward = (_ReferenceForward if reference else _CachedForward)(model, max_len)
        device = next(model.parameters()).device
        self.sampler = Sampler(cfg, [r.history for r in self.rows], vocab, device, seeds)
        self.active = list(range(len(self.rows)))  # batch index -> row
        self.logits: torch.Tensor | None = None

    def stop(self, row: int, reason: str = "stop") -> None:
        if self.rows[row].out.finish_reason is None:
            self.rows[row].out.finish_reason = reason

    @property
    def done(self) -> bool:
        return all(r.out.finish_reason is not None for r in self.rows)

    def __iter__(self) -> Iterator[list[list[int]]]:
        with torch.inference_mode():
            tokens = self._choose(self.forward.start([r.history for r in self.rows]))
        while True:
            released: list[list[int]] = [[] for _ in self.rows]
            for row, token in zip(self.active, tokens.tolist()):
                released[row] = self._accept(self.rows[row], token)
            yield released  # the consumer may call stop() here
            if self.done:
                return
            with torch.inference_mode():
                self.sampler.observe(tokens, [self.rows[r].history for r in self.active])
                tokens = self._choose(self._advance(tokens))

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        self.logits = logits
        return self.sampler.choose(logits, [self.rows[r].history for r in self.active])

    def _accept(self, row: _Row, token: int) -> list[int]:
        """Append one chosen token to a row; returns the ids it releases."""
        if row.out.finish_reason is not None:  # stopped from outside while the step ran
            return []
        row.steps += 1
        if token == self.eot_id:
            row.out.finish_reason = "eot"
            released = list(row.scanner.flush())
        else:
            row.history.append(token)
            released, stopped = row.scanner.push([token])
            released = list(released)
            if stopped:
                row.out.finish_reason = "stop"
            elif row.steps >= self.cfg.max_new_tokens:
                row.out.finish_reason = "length"
                released += row.scanner.flush()
        row.out.tokens += released
        return released

    def _advance(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits for the next step: drop finished rows, slide the window if the cache is full."""
        still = [b for b, row in enumerate(self.active) if self.rows[row].out.finish_reason is None]
        if len(still) < len(self.active):
            self.forward.keep(still)
            self.sampler.keep(still)
            self.active = [self.active[b] for b in still]
            tokens = tokens[still]
        if self.forward.full:
            window = slide_window(self.context)
            return self.forward.start([self.rows[r].history[-window:] for r in self.active])
        return self.forward.step(tokens)


def generate(model: MiniGLM, prompts: Sequence[Sequence[int]], cfg: SampleConfig, eot_id: int | None = None,
             stop_sequences: Sequence[Sequence[int]] = (), reference: bool = False,
             seeds: Sequence[int] | None = None) -> list[Completion]:
    """Complete every prompt (batched); one `Completion` per prompt, in order."""
    decoder = Decoder(model, prompts, cfg, eot_id, stop_sequences, reference, seeds)
    for _ in decoder:
        pass
    return decoder.completions


def stream(model: MiniGLM, prompt: Sequence[int], cfg: SampleConfig, eot_id: int | None = None,
           stop_sequences: Sequence[Sequence[int]] = ()) -> Iterator[int]:
    """Yield generated token ids of one prompt as they are decided."""
    for released in Decoder(model, [prompt], cfg, eot_id, stop_sequences):
        yield from released[0]
