"""Q&A evaluation: reference-answer perplexity, generated answers, their scores, flags and speed.

Owns how a Q&A file is read and how a model is judged on it:
- items: JSONL, one {"question", "answer", optional "references": [...]} per line (all
  references, the answer first, count as acceptable for Rouge-L/BLEU/chrF);
- teacher-forced loss/perplexity of the reference answers: answer tokens + end token only, the
  mask of `Tokenizer.render_conversation`; a conversation longer than the context keeps its last
  `context + 1` tokens (counted in `reference_contexts_truncated`);
- generated answers (`miniglm.generate.text.answer_batch`, `batch_size` questions at a time, with the
  given SampleConfig; `miniglm eval` makes it greedy) scored with `miniglm.evaluate.metrics`;
- speed: throughput of the batched generation (chars/s and tokens/s of all answers over the wall
  time), per-row numbers inside a batch, and a single-stream probe: the first `speed_probe`
  questions answered again one at a time, as a chat user would see it (chars/s, tokens/s, time
  to first token).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from miniglm.evaluate import metrics
from miniglm.evaluate.heldout import EvalError, autocast, model_device
from miniglm.io import iter_jsonl
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import Tokenizer

# --------------------------------------------------------------------------- Q&A files


@dataclass
class QAItem:
    question: str
    answer: str
    references: list[str] = field(default_factory=list)  # all acceptable answers, `answer` first
    line: int = 0


def _qa_item(obj: Any, path: Path, lineno: int) -> QAItem:
    where = f"{path}:{lineno}"
    if not isinstance(obj, dict):
        raise EvalError(f"{where}: expected a JSON object with 'question' and 'answer'")
    for key in ("question", "answer"):
        if key not in obj:
            raise EvalError(f"{where}: missing field '{key}'")
        if not isinstance(obj[key], str):
            raise EvalError(f"{where}: field '{key}' must be a string")
    for key in ("question", "answer"):
        if not obj[key].strip():
            raise EvalError(f"{where}: field '{key}' is empty")
    refs = obj.get("references", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise EvalError(f"{where}: field 'references' must be a list of strings")
    references = list(dict.fromkeys([obj["answer"], *refs]))
    return QAItem(obj["question"], obj["answer"], references, lineno)


def load_qa(path: str | Path, limit: int | None = None) -> list[QAItem]:
    """Items of a Q&A JSONL file ({"question", "answer", optional "references"}), the first `limit`."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path}: Q&A file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EvalError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    items: list[QAItem] = []
    for lineno, obj in iter_jsonl(path, text, EvalError):
        if limit is not None and len(items) >= limit:
            break
        items.append(_qa_item(obj, path, lineno))
    if not items:
        raise EvalError(f"{path}: no Q&A items")
    return items


@torch.no_grad()
def answer_losses(model: MiniGLM, tokenizer: Tokenizer, items: Sequence[QAItem], batch_size: int = 8,
                  dtype: torch.dtype = torch.float32) -> tuple[list[tuple[float, int]], int]:
    """Teacher-forced (nats, tokens) of each reference answer + end token; and how many were cut."""
    ctx = model.config.max_position_embeddings
    seqs, cut = [], 0
    for it in items:
        ids, mask = tokenizer.render_conversation([(it.question, it.answer)])
        if len(ids) > ctx + 1:  # keep the end: the answer is what is scored
            ids, mask, cut = ids[-(ctx + 1):], mask[-(ctx + 1):], cut + 1
        seqs.append((ids, mask))
    device = model_device(model)
    out: list[tuple[float, int]] = []
    for i in range(0, len(seqs), batch_size):
        batch = seqs[i:i + batch_size]
        width = max(len(ids) for ids, _ in batch) - 1
        x = torch.full((len(batch), width), tokenizer.pad_id, dtype=torch.long)  # (B, T), right-padded
        y = torch.full_like(x, tokenizer.pad_id)
        m = torch.zeros(x.shape)
        for b, (ids, mask) in enumerate(batch):
            n = len(ids) - 1
            x[b, :n], y[b, :n], m[b, :n] = torch.tensor(ids[:-1]), torch.tensor(ids[1:]), torch.tensor(mask[1:])
        x, y, m = x.to(device), y.to(device), m.to(device)
        with autocast(device, dtype):
            _, loss = model(x, y, m, reduction="none")  # (B, T) nats, 0 off the answer
        out += [(loss[b].double().sum().item(), int(m[b].sum().item())) for b in range(len(batch))]
    return out, cut


def generate_answers(model: MiniGLM, tokenizer: Tokenizer, questions: Sequence[str], cfg: Any,
                     batch_size: int = 8, progress: bool = False) -> tuple[list[Any], float]:
    """Generated answers (`textgen.Generation`) of all questions, and the wall time it took."""
    from miniglm.generate import text as textgen

    gens: list[Any] = []
    wall = 0.0
    for i in tqdm(range(0, len(questions), batch_size), desc="answering", disable=not progress):
        batch = list(questions[i:i + batch_size])
        t0 = time.perf_counter()
        if len(batch) == 1:
            gens.append(textgen.answer(model, tokenizer, batch[0], cfg))
        else:
            gens += textgen.answer_batch(model, tokenizer, batch, cfg)
        wall += time.perf_counter() - t0
    return gens, wall


def score_item(index: int, item: QAItem, gen: Any, loss: tuple[float, int], seen: frozenset[str],
               raw: str | None = None, *, collapse_share: float) -> dict[str, Any]:
    """Everything known about one answer (a row of report.json's `items`); `raw` = plain decode of its ids.

    `collapse_share`: its entry of `metrics.collapse_shares` over all answers of the run (`score_items`).
    """
    score = metrics.rouge_l_best(gen.text, item.references)
    nats, tokens = loss
    return {
        "index": index, "line": item.line, "question": item.question, "reference": item.answer,
        "references": item.references, "answer": gen.text,
        "rouge_l": {"precision": score.precision, "recall": score.recall, "f": score.f},
        "flags": metrics.quality_flags(item.question, gen.text, gen.finish_reason, seen, raw,
                                       collapse_share=collapse_share),
        "collapse_share": collapse_share,
        "relevance": metrics.relevance(item.question, gen.text),
        "unseen_chars": "".join(metrics.unseen_characters(gen.text, seen)),
        "finish_reason": gen.finish_reason, "answer_tokens": len(gen.token_ids),
        "seconds": gen.seconds, "first_token_seconds": gen.first_token_seconds,
        "reference_loss": nats / tokens if tokens else None, "reference_tokens": tokens,
    }


def score_items(items: Sequence[QAItem], gens: Sequence[Any], losses: Sequence[tuple[float, int]],
                seen: frozenset[str], raws: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
    """The rows of all answers of a run; the collapse flag compares each answer with all the others."""
    shares = metrics.collapse_shares([it.question for it in items], [g.text for g in gens])
    raws = raws if raws is not None else [None] * len(items)
    return [score_item(i, it, g, loss, seen, raw, collapse_share=share)
            for i, (it, g, loss, raw, share) in enumerate(zip(items, gens, losses, raws, shares, strict=True))]


def summarize_qa(rows: Sequence[dict[str, Any]], wall: float, batch_size: int) -> dict[str, Any]:
    """Corpus-level Q&A numbers from the per-item rows.

    `unique_answer_share`: answers NOT flagged `collapsed` / all answers (1.0 when no answer is
    reused for other questions; near 0 for a model that gives every question the same answer).
    """
    n = len(rows)
    answers = [r["answer"] for r in rows]
    nats = sum(r["reference_loss"] * r["reference_tokens"] for r in rows if r["reference_tokens"])
    ref_tokens = sum(r["reference_tokens"] for r in rows)
    flags = {name: sum(r["flags"][name] for r in rows) for name in metrics.FLAG_NAMES}
    chars = sum(len(a) for a in answers)
    tokens = sum(r["answer_tokens"] for r in rows)
    ttft = sorted(r["first_token_seconds"] for r in rows if r["first_token_seconds"] is not None)
    return {
        "items": n,
        "reference_loss": nats / ref_tokens if ref_tokens else None,
        "reference_perplexity": math.exp(nats / ref_tokens) if ref_tokens else None,
        "reference_tokens": ref_tokens,
        "rouge_l": {k: sum(r["rouge_l"][k] for r in rows) / n for k in ("precision", "recall", "f")},
        **metrics.bleu_chrf(answers, [r["references"] for r in rows]),
        "distinct_1": metrics.distinct_n(answers, 1), "distinct_2": metrics.distinct_n(answers, 2),
        "flags": flags, "flag_rates": {k: v / n for k, v in flags.items()},
        "any_flag": sum(any(r["flags"].values()) for r in rows),
        "unique_answer_share": 1 - flags["collapsed"] / n,
        "finish_reasons": {k: sum(r["finish_reason"] == k for r in rows) for k in ("eot", "stop", "length")},
        "mean_answer_chars": chars / n,
        "speed": {
            "batch_size": batch_size, "wall_seconds": wall,
            "chars_per_second": chars / wall if wall else None,  # all answers together, batching included
            "tokens_per_second": tokens / wall if wall else None,
            "stream_chars_per_second": _mean([len(r["answer"]) / r["seconds"] for r in rows if r["seconds"]]),
            "stream_tokens_per_second": _mean([r["answer_tokens"] / r["seconds"] for r in rows if r["seconds"]]),
            "first_token_seconds_mean": _mean(ttft),
            "first_token_seconds_median": ttft[len(ttft) // 2] if ttft else None,
        },
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def single_stream_speed(model: MiniGLM, tokenizer: Tokenizer, questions: Sequence[str], cfg: Any) -> dict[str, Any]:
    """Answer `questions` one at a time (batch 1, as in chat): chars/s, tokens/s, time to first token."""
    from miniglm.generate import text as textgen

    gens = [textgen.answer(model, tokenizer, q, cfg) for q in questions]
    seconds = sum(g.seconds for g in gens)
    ttft = sorted(g.first_token_seconds for g in gens if g.first_token_seconds is not None)
    return {"answers": len(gens), "seconds": seconds,
            "chars_per_second": sum(len(g.text) for g in gens) / seconds if seconds else None,
            "tokens_per_second": sum(len(g.token_ids) for g in gens) / seconds if seconds else None,
            "first_token_seconds_median": ttft[len(ttft) // 2] if ttft else None}


def evaluate_qa(model: MiniGLM, tokenizer: Tokenizer, items: Sequence[QAItem], cfg: Any, batch_size: int = 8,
                dtype: torch.dtype = torch.float32, progress: bool = False,
                generation_dtype: torch.dtype | None = None, speed_probe: int = 3,
                training_chars: frozenset[str] | None = None, training_source: str = "") -> dict[str, Any]:
    """Teacher-forced reference loss, generated answers, their scores and flags, speed.

    `generation_dtype`: generate with a copy of the model in this dtype (the caller's model is not changed).
    `speed_probe`: how many questions to answer again one at a time for the single-stream speed.
    `training_chars`: characters of the model's training data; with the characters of the
    vocabulary's tokens they form the seen set of the garbled flag (vocabulary alone when None).
    """
    losses, cut = answer_losses(model, tokenizer, items, batch_size, dtype)
    if generation_dtype is not None and generation_dtype != next(model.parameters()).dtype:
        model = copy.deepcopy(model).to(generation_dtype)  # generate as `sample`/`chat` would
    gens, wall = generate_answers(model, tokenizer, [it.question for it in items], cfg, batch_size, progress)
    seen = metrics.seen_characters(tokenizer.decode([i], skip_special_tokens=True)
                                   for i in range(tokenizer.vocab_size))
    seen_set = {"source": "tokenizer vocabulary", "chars": len(seen)}
    if training_chars:
        seen = seen | training_chars
        seen_set = {"source": f"tokenizer vocabulary + training data ({training_source})", "chars": len(seen)}
    rows = score_items(items, gens, losses, seen,
                       [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in gens])
    summary = summarize_qa(rows, wall, batch_size)
    summary["reference_contexts_truncated"] = cut
    probe = [it.question for it in items[:speed_probe]]
    summary["speed"]["single_stream"] = single_stream_speed(model, tokenizer, probe, cfg) if probe else None
    return {"summary": summary, "seen_set": seen_set, "items": rows, "decode": decode_record(model)}


def decode_record(model: MiniGLM) -> dict[str, Any]:
    """How the answers were decoded: each decode-time product's kernel (a fixed rule per CPU and
    format, see `miniglm.model.kernels`), the weight bytes read per token, the CPU threads."""
    plan = model.decode_plan()
    kernels: dict[str, int] = {}
    for p in plan:
        kernels[p["kernel"]] = kernels.get(p["kernel"], 0) + 1
    return {"kernels": kernels, "weight_bytes_per_token": sum(p["bytes"] for p in plan),
            "threads": torch.get_num_threads()}
