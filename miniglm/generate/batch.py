"""Continuous batching on token ids: generations join a running batch and leave it between steps.

    batch = ContinuousBatch(model, eot_id=tok.eot_id)
    events = batch.join([(key, prompt_ids, cfg, seed), ...])   # prefill + first token of each
    while batch: events = batch.step()                          # one token for every row
    batch.drop([key])                                           # a cancelled row leaves at once
    batch.check(prompt_ids, max_new_tokens)                     # ValueError if it cannot run here

Each call returns `Event(key, token, finish_reason)` per row it advanced: `token` is the new id (None
when the row chose the end-of-text token) and `finish_reason` is "eot", "length" or None. A finished
row leaves the batch by itself before the next step. Stop strings are the text layer's business
(it calls `drop`).

How rows of different ages share one KV cache (`MiniGLM.new_cache`: one write position for all
rows): a row occupies the cache columns from where it joined up to the shared position;
the columns before it are padding that its attention mask (`valid`) hides, and its rotary
positions (`next_pos`) count from 0 at its first token, so a row computes what it would alone
(greedy: the same tokens up to float rounding; sampled: its own `torch.Generator`, so the same
seed gives the same text batched or not). Joining rows are prefilled together in a cache of their
own, left-padded, then placed so that they end at the shared position (the batch's columns are
shifted right first if a new prompt is longer than the shared position). When the write position
reaches the end of the allocation, columns no row uses any more are cut from the left and `grow`
free columns are added: one copy every `grow` steps at most, and the width stays within the
longest live row + `grow`. Rows cannot outgrow the context: `join` refuses a prompt + max_new_tokens
that does not fit (`check`).

Sampling reuses the engine's `Sampler` (one per row: rows carry their own settings); rows that are
plain greedy (temperature 0, no penalties) share one argmax over the batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from miniglm.config import SampleConfig
from miniglm.generate.engine import Sampler
from miniglm.model.model import KVCache, MiniGLM


@dataclass
class Event:
    key: Hashable  # the caller's name for the row
    token: int | None  # the id chosen this step; None = the end-of-text token
    finish_reason: str | None  # "eot" | "length" | None while the row goes on


@dataclass
class _Row:
    key: Hashable
    history: list[int]  # prompt + generated ids (what the model has seen or will see next)
    cfg: SampleConfig
    sampler: Sampler | None  # None: plain greedy, decided by the batch's shared argmax
    generated: int = 0  # tokens chosen so far (the end token counts)
    finish_reason: str | None = None


def is_plain_greedy(cfg: SampleConfig) -> bool:
    return cfg.temperature == 0 and cfg.repetition_penalty == 1.0 and cfg.no_repeat_ngram_size == 0


class ContinuousBatch:
    """A batch of generations in progress that rows join and leave between decode steps."""

    def __init__(self, model: MiniGLM, eot_id: int | None, grow: int = 64):
        self.model, self.eot_id, self.grow = model, eot_id, max(1, grow)
        self.context = model.config.max_position_embeddings
        self.vocab = model.config.vocab_size
        self.device = model.model.embed_tokens.weight.device
        model.fuse()  # decode-time weights laid out now, so the first request does not pay for it
        self.rows: list[_Row] = []
        self.cache: KVCache | None = None  # (B, K, W, D) per layer, filled up to cache.pos
        self.valid: torch.Tensor | None = None  # (B, W) bool: which columns hold each row's tokens
        self.next_pos: torch.Tensor | None = None  # (B,) rotary position of each row's next token

    def __len__(self) -> int:
        return len(self.rows)

    def check(self, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
        """The ids a job starts from (an empty prompt starts from the end-of-text token); ValueError
        if one is outside the vocabulary or prompt + max_new_tokens does not fit the context."""
        ids = [int(t) for t in prompt] or ([self.eot_id] if self.eot_id is not None else [])
        if not ids:
            raise ValueError("empty prompt and no end-of-text id to start from")
        if not all(0 <= t < self.vocab for t in ids):
            raise ValueError(f"a token id is outside the vocabulary (0..{self.vocab - 1})")
        if len(ids) + max_new_tokens > self.context:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"the model's context of {self.context} tokens")
        return ids

    # ------------------------------------------------------------------ joining
    def join(self, jobs: Sequence[tuple[Hashable, Sequence[int], SampleConfig, int]]) -> list[Event]:
        """Prefill (key, prompt ids, settings, seed) jobs together and choose their first tokens."""
        if not jobs:
            return []
        rows, prompts = [], []
        for key, prompt, cfg, seed in jobs:
            prompt = self.check(prompt, cfg.max_new_tokens)
            sampler = None if is_plain_greedy(cfg) else Sampler(cfg, [prompt], self.vocab, self.device, [seed])
            rows.append(_Row(key, list(prompt), cfg, sampler))
            prompts.append(prompt)
        with torch.inference_mode():
            cache, valid, logits = self._prefill(prompts)
            events = self._accept(rows, self._choose(logits, rows))
            going = [i for i, r in enumerate(rows) if r.finish_reason is None]
            if going:
                self._attach(cache, valid, [rows[i] for i in going], going)
        return events

    def _prefill(self, prompts: list[list[int]]) -> tuple[KVCache, torch.Tensor, torch.Tensor]:
        """Run the new prompts, left-padded, through a cache of their own: (cache, valid (n, P), logits (n, V))."""
        n, P, dev = len(prompts), max(map(len, prompts)), self.device
        cache = self.model.new_cache(n, P + (0 if self.rows else self.grow))  # room to decode if it is the batch
        ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts], device=dev)  # (n, P)
        pad = torch.tensor([P - len(p) for p in prompts], device=dev).unsqueeze(1)  # (n, 1)
        arange = torch.arange(P, device=dev)
        valid = arange.unsqueeze(0) >= pad  # (n, P)
        if bool(valid.all()):
            return cache, valid, self._forward(ids, cache)
        positions = (arange.unsqueeze(0) - pad).clamp(min=0)  # (n, P): 0 at each row's first real token
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        # a padding query may see itself, so no softmax row is empty (its output is never used)
        mask = (causal & valid[:, None, :]) | torch.eye(P, dtype=torch.bool, device=dev)
        return cache, valid, self._forward(ids, cache, positions, mask.unsqueeze(1))

    def _attach(self, new: KVCache, valid: torch.Tensor, rows: list[_Row], keep: list[int]) -> None:
        """Add prefilled rows (indices `keep` of `new`) to the batch so that they end at the shared position."""
        index = torch.tensor(keep, device=self.device)
        P = new.pos
        next_pos = valid[index].sum(dim=1)  # (n,) = each prompt's length
        if self.cache is None:  # the new rows are the batch
            new.k = [t.index_select(0, index) for t in new.k]
            new.v = [t.index_select(0, index) for t in new.v]
            self.cache, self.next_pos = new, next_pos
            self.valid = torch.zeros(len(keep), new.max_len, dtype=torch.bool, device=self.device)
            self.valid[:, :P] = valid[index]
            self.rows = rows
            return
        if self.cache.pos < P:  # a longer prompt than the batch so far: shift everyone right
            self._move(0, P - self.cache.pos, self._width + P - self.cache.pos)
        c, W, end = self.cache, self._width, self.cache.pos

        def placed(t: torch.Tensor) -> torch.Tensor:  # (n, K, P, D) -> (n, K, W, D) ending at `end`
            out = t.new_zeros(len(keep), t.size(1), W, t.size(3))
            out[:, :, end - P:end] = t.index_select(0, index)[:, :, :P]
            return out

        c.k = [torch.cat([a, placed(b)]) for a, b in zip(c.k, new.k)]
        c.v = [torch.cat([a, placed(b)]) for a, b in zip(c.v, new.v)]
        v = torch.zeros(len(keep), W, dtype=torch.bool, device=self.device)
        v[:, end - P:end] = valid[index]
        self.valid = torch.cat([self.valid, v])
        self.next_pos = torch.cat([self.next_pos, next_pos])
        self.rows += rows

    # ------------------------------------------------------------------ decoding
    def step(self) -> list[Event]:
        """One decode step for every row still going: each gets its next token."""
        self._drop(lambda r: r.finish_reason is not None)
        if not self.rows:
            return []
        with torch.inference_mode():
            if self.cache.pos >= self._width:
                self._make_room()
            c, S = self.cache, self.cache.pos + 1
            self.valid[:, S - 1] = True
            ids = torch.tensor([[r.history[-1]] for r in self.rows], device=self.device)  # (B, 1)
            mask = None if bool(self.valid[:, :S].all()) else self.valid[:, None, None, :S]  # (B, 1, 1, S)
            logits = self._forward(ids, c, self.next_pos.unsqueeze(1), mask)
            self.next_pos += 1
            return self._accept(self.rows, self._choose(logits, self.rows))

    def _forward(self, ids: torch.Tensor, cache: KVCache, positions: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V) float32 logits of each row's last position; appends to `cache`."""
        logits, _ = self.model(ids, kv_cache=cache, position_ids=positions, attn_mask=mask, last_only=True)
        return logits[:, -1].float()

    def drop(self, keys: Sequence[Hashable]) -> None:
        """Remove rows now (a cancelled request, a stop string found by the text layer)."""
        gone = set(keys)
        self._drop(lambda r: r.key in gone)

    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        tokens = logits.argmax(dim=-1)  # (B,): plain greedy rows, all at once
        for b, row in enumerate(rows):
            if row.sampler is not None:
                tokens[b] = row.sampler.choose(logits[b:b + 1], [row.history])[0]
        return tokens

    def _accept(self, rows: list[_Row], tokens: torch.Tensor) -> list[Event]:
        events = []
        for b, (row, token) in enumerate(zip(rows, tokens.tolist())):
            row.generated += 1
            if token == self.eot_id:
                row.finish_reason = "eot"
                events.append(Event(row.key, None, "eot"))
                continue
            row.history.append(token)
            if row.sampler is not None:
                row.sampler.observe(tokens[b:b + 1], [row.history])
            if row.generated >= row.cfg.max_new_tokens or len(row.history) >= self.context:
                row.finish_reason = "length"
            events.append(Event(row.key, token, row.finish_reason))
        return events

    # ------------------------------------------------------------------ cache layout
    @property
    def _width(self) -> int:
        return self.cache.k[0].size(2)

    def _drop(self, gone) -> None:
        keep = [b for b, r in enumerate(self.rows) if not gone(r)]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.valid, self.next_pos = [], None, None, None
            return
        index = torch.tensor(keep, device=self.device)
        self.cache.k = [t.index_select(0, index) for t in self.cache.k]
        self.cache.v = [t.index_select(0, index) for t in self.cache.v]
        self.valid, self.next_pos = self.valid[index], self.next_pos[index]
        self.rows = [self.rows[b] for b in keep]

    def _make_room(self) -> None:
        """Cut the columns no row uses any more from the left and add `grow` free ones."""
        used = self.valid[:, :self.cache.pos].any(dim=0)
        first = int(used.int().argmax()) if bool(used.any()) else self.cache.pos
        self._move(first, 0, self.cache.pos - first + self.grow)

    def _move(self, start: int, offset: int, width: int) -> None:
        """New allocation of `width` columns holding the old columns [start, pos) at [offset, ...)."""
        c, n = self.cache, self.cache.pos - start

        def moved(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros(*t.shape[:-2], width, t.size(-1))
            out[..., offset:offset + n, :] = t[..., start:start + n, :]
            return out

        c.k, c.v = [moved(t) for t in c.k], [moved(t) for t in c.v]
        valid = self.valid.new_zeros(len(self.rows), width)
        valid[:, offset:offset + n] = self.valid[:, start:start + n]
        self.valid = valid
        c.pos, c.max_len = offset + n, width
