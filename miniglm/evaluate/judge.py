"""LLM-as-judge: grade answers against references and compare two checkpoints, through any
OpenAI-compatible chat endpoint (`miniglm judge`; prompts in judge_prompts.py, HTTP in judge_client.py).

    graded = grade_answers(client, rows)                    # rows: {"index", "question", "reference", "answer"}
    pairs = compare_answers(client, rows_a, rows_b, ("base", "sft"))
    votes = pair_votes(pairs, endpoint)                      # arena votes, mode "judge"

Owns the judge's numbers and their place in report.json / report.md:
- grading: each answer graded once; status "ok" (scores), "unparseable" (the judge answered, but
  not in the fixed format: shown, never scored) or "failed" (no answer after the retries).
  Summary: means per dimension and of 综合得分 over the ok items, with a bootstrap interval;
- pairwise: each pair judged in both orders (a first, then b first) to cancel position bias; two
  parsed orders that agree give the verdict, disagreeing orders are a tie; a pair with an
  unparseable or failed order is not scored. From b's side: wins/ties/losses, win rate = (wins +
  ties/2) / scored pairs with a seeded percentile bootstrap interval, and how often the orders agreed;
- report.json: runs[i].judge = {"summary", "items"}; report.judge = {"settings", "usage",
  "pairwise"}; the summary table gains judge rows (so two runs get a delta), and report.md gains
  the worst-graded answers with the judge's reasons, the unparseable and failed ones, and the
  pairwise result.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from miniglm.errors import UserError
from miniglm.evaluate.judge_client import Endpoint, JudgeClient, JudgeError
from miniglm.evaluate.judge_prompts import (
    DIMENSIONS,
    GRADE_PROMPT_VERSION,
    OVERALL,
    PAIR_PROMPT_VERSION,
    grade_prompt,
    pair_prompt,
    parse_grade,
    parse_pair,
)

BOOTSTRAP_SAMPLES = 2000
SHOWN = 3  # worst-graded answers in report.md
EXCERPT = 300  # characters of a judge reply shown in report.md


def bootstrap_ci(values: Sequence[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of `values` (None when there are none)."""
    if not len(values):
        return None
    x = np.asarray(values, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(samples, len(x)))
    means = x[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- answers


def answer_questions(run: str | Path, items: Sequence[Any], cfg: Any, batch_size: int = 8, which: str = "best",
                     name: str | None = None, progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A checkpoint's answers to Q&A items (`evaluate.qa.QAItem`), generated as `miniglm eval` does:
    (the report's run entry, rows to judge)."""
    from miniglm.checkpoint import resolve_checkpoint
    from miniglm.evaluate.qa import generate_answers
    from miniglm.evaluate.report import run_name
    from miniglm.generate.text import load_for_generation

    loaded = load_for_generation(resolve_checkpoint(run, which), cfg)
    gens, wall = generate_answers(loaded.model, loaded.tokenizer, [it.question for it in items], cfg,
                                  batch_size, progress)
    rows = [{"index": i, "line": it.line, "question": it.question, "reference": it.answer,
             "answer": g.text, "finish_reason": g.finish_reason} for i, (it, g) in enumerate(zip(items, gens))]
    param = next(loaded.model.parameters())
    entry = {"name": name or run_name(loaded.path), "run": str(run), "checkpoint": str(loaded.path),
             "step": loaded.meta.get("step"), "params": loaded.model.num_params(), "device": str(param.device),
             "dtype": str(param.dtype).removeprefix("torch."), "heldout": [], "qa": None,
             "answer_seconds": wall}
    return entry, rows


def report_rows(report: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The answers of each run of an eval report (`miniglm eval --qa`), as rows to judge."""
    out = []
    for run in report["runs"]:
        # answers of `miniglm eval --qa`, or those a previous `miniglm judge RUN` generated (to re-judge them)
        items = (run.get("qa") or {}).get("items") or (run.get("judge") or {}).get("items") or []
        if not items:
            raise UserError(f"run {run['name']!r} of the report has no Q&A answers; "
                            "make the report with `miniglm eval RUN --qa FILE`")
        try:
            out.append([{"index": it["index"], "question": it["question"], "reference": it["reference"],
                         "answer": it["answer"]} for it in items])
        except KeyError as e:
            raise UserError(f"run {run['name']!r}: a Q&A item has no {e.args[0]!r}") from None
    return out


# --------------------------------------------------------------------------- grading


def grade_answers(client: JudgeClient, rows: Sequence[dict[str, Any]], seed: int = 0,
                  desc: str = "grading") -> dict[str, Any]:
    """Each answer graded against its reference: {"summary", "items"}."""
    replies = client.ask_many([grade_prompt(r["question"], r["reference"], r["answer"]) for r in rows], desc)
    items = []
    for row, reply in zip(rows, replies):
        item = {k: row[k] for k in ("index", "question", "reference", "answer")}
        if reply.content is None:
            item |= {"status": "failed", "scores": None, "reason": "", "problem": reply.error, "reply": None}
        else:
            g = parse_grade(reply.content)
            item |= {"status": "ok" if g.scores else "unparseable", "scores": g.scores, "reason": g.reason,
                     "problem": g.problem, "reply": reply.content}
        item["cached"] = reply.cached
        items.append(item)
    return {"summary": summarize_grades(items, seed), "items": items}


def summarize_grades(items: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    ok = [it["scores"] for it in items if it["status"] == "ok"]
    means = {k: (sum(s[k] for s in ok) / len(ok) if ok else None) for k in (*DIMENSIONS, OVERALL)}
    return {"items": len(items), "graded": len(ok),
            "unparseable": sum(it["status"] == "unparseable" for it in items),
            "failed": sum(it["status"] == "failed" for it in items),
            "means": means, "overall_ci": bootstrap_ci([s[OVERALL] for s in ok], seed)}


# --------------------------------------------------------------------------- pairwise

_SWAP = {"A": "b", "B": "a", "tie": "tie"}  # verdict of the b-first order -> the answer it prefers


def compare_answers(client: JudgeClient, rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]],
                    names: tuple[str, str], seed: int = 0) -> dict[str, Any]:
    """Both answers to each question judged in both orders: {"a", "b", "summary", "items"}."""
    if len(rows_a) != len(rows_b):
        raise UserError(f"the two runs answered {len(rows_a)} and {len(rows_b)} questions; "
                        "compare runs evaluated on the same Q&A file")
    for ra, rb in zip(rows_a, rows_b):
        if ra["question"] != rb["question"]:
            raise UserError(f"item {ra['index']}: the two runs answered different questions; "
                            "compare runs evaluated on the same Q&A file")
    prompts = []
    for ra, rb in zip(rows_a, rows_b):
        prompts += [pair_prompt(ra["question"], ra["reference"], ra["answer"], rb["answer"]),
                    pair_prompt(ra["question"], ra["reference"], rb["answer"], ra["answer"])]
    replies = client.ask_many(prompts, "comparing")
    items = [_pair_item(ra, rb, replies[2 * i], replies[2 * i + 1]) for i, (ra, rb) in enumerate(zip(rows_a, rows_b))]
    return {"a": names[0], "b": names[1], "summary": summarize_pairs(items, seed), "items": items}


def _pair_item(ra: dict[str, Any], rb: dict[str, Any], first: Any, second: Any) -> dict[str, Any]:
    orders = []
    for reply, swap in ((first, {"A": "a", "B": "b", "tie": "tie"}), (second, _SWAP)):
        if reply.content is None:
            orders.append({"status": "failed", "verdict": None, "prefers": None, "problem": reply.error,
                           "reason": "", "reply": None})
            continue
        v = parse_pair(reply.content)
        orders.append({"status": "ok" if v.winner else "unparseable", "verdict": v.winner,
                       "prefers": swap[v.winner] if v.winner else None, "problem": v.problem,
                       "reason": v.reason, "reply": reply.content})
    statuses = {o["status"] for o in orders}
    status = "failed" if "failed" in statuses else "unparseable" if "unparseable" in statuses else "ok"
    p1, p2 = orders[0]["prefers"], orders[1]["prefers"]
    winner = (p1 if p1 == p2 else "tie") if status == "ok" else None
    return {"index": ra["index"], "question": ra["question"], "reference": ra["reference"],
            "answers": {"a": ra["answer"], "b": rb["answer"]}, "orders": orders, "status": status,
            "consistent": p1 == p2 if status == "ok" else None, "winner": winner}


def summarize_pairs(items: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """From b's side: wins, ties, losses, win rate with its interval; order agreement and position bias."""
    scored = [it for it in items if it["status"] == "ok"]
    wins = sum(it["winner"] == "b" for it in scored)
    losses = sum(it["winner"] == "a" for it in scored)
    ties = len(scored) - wins - losses
    points = [{"b": 1.0, "tie": 0.5, "a": 0.0}[it["winner"]] for it in scored]
    verdicts = [o["verdict"] for it in items for o in it["orders"] if o["status"] == "ok"]
    return {"pairs": len(items), "scored": len(scored), "wins": wins, "ties": ties, "losses": losses,
            "win_rate": sum(points) / len(points) if points else None, "win_rate_ci": bootstrap_ci(points, seed),
            "orders_agreed": sum(bool(it["consistent"]) for it in scored),
            "unparseable": sum(it["status"] == "unparseable" for it in items),
            "failed": sum(it["status"] == "failed" for it in items),
            # position bias: of the parsed non-tie verdicts, the share that picked whichever came first
            "first_position_preferred": (verdicts.count("A") / (verdicts.count("A") + verdicts.count("B"))
                                         if verdicts.count("A") + verdicts.count("B") else None)}


def pair_votes(pairwise: dict[str, Any], endpoint: Endpoint, session: str | None = None) -> list[dict[str, Any]]:
    """Arena vote records (mode "judge") of the scored pairs: a left, b right, as in the first order.

    Anonymous: the judge never sees the contestants' names."""
    from miniglm.serve.arena.votes import make_vote

    session = session or f"judge-{uuid.uuid4().hex[:12]}"
    side = {"a": "left", "b": "right", "tie": "tie"}
    votes = []
    for it in pairwise["items"]:
        if it["status"] != "ok":
            continue  # never a vote the judge did not cast
        settings = {"judge": {"url": endpoint.url, "model": endpoint.model, "prompt": PAIR_PROMPT_VERSION,
                              "temperature": 0}, "orders": [side[o["prefers"]] for o in it["orders"]],
                    "reference": it["reference"]}
        votes.append(make_vote(session=session, mode="judge", left=pairwise["a"], right=pairwise["b"],
                               vote=side[it["winner"]], conversation=[{"role": "user", "content": it["question"]}],
                               answers={"left": it["answers"]["a"], "right": it["answers"]["b"]},
                               settings=settings, anonymous=True))
    return votes


def write_votes(path: str | Path, votes: Sequence[dict[str, Any]]) -> None:
    """Append judge votes to an arena votes log (created if absent), all with one fsync."""
    from miniglm.serve.arena.votes import VoteLog

    VoteLog(path).extend(votes)


# --------------------------------------------------------------------------- report


def contestant_names(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The runs' names, made distinct (two checkpoints of one run: "a@step_100", "a@step_200")."""
    names = [r["name"] for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r['name']}@{Path(r['checkpoint']).name}" for r in runs]
    if len(set(names)) < len(names):
        names = [f"{n}#{i + 1}" for i, n in enumerate(names)]
    return names


def check_answered(graded: Sequence[dict[str, Any]], pairwise: dict[str, Any] | None, url: str) -> None:
    """JudgeError when the judge answered nothing at all: a report of failures only would hide that."""
    items = [it for g in graded for it in g["items"]]
    problems = [it["problem"] for it in items if it["status"] == "failed"]
    if pairwise:
        orders = [o for it in pairwise["items"] for o in it["orders"]]
        items += orders
        problems += [o["problem"] for o in orders if o["status"] == "failed"]
    if items and len(problems) == len(items):
        raise JudgeError(f"the judge at {url} answered none of {len(items)} prompts; the first failure: {problems[0]}")


def console_lines(report: dict[str, Any]) -> list[str]:
    """What `miniglm judge` prints: each run's grades, the pairwise result, the requests and tokens."""
    lines = []
    for r in report["runs"]:
        s = r["judge"]["summary"]
        lines.append(f"{r['name']}: {OVERALL} {_num(s['means'][OVERALL])}{_ci(s['overall_ci'])} over {s['graded']} "
                     f"graded answers; {s['unparseable']} unparseable, {s['failed']} failed")
    p = report["judge"].get("pairwise")
    if p:
        s = p["summary"]
        lines.append(f"{p['b']} against {p['a']}: {s['wins']} wins, {s['ties']} ties, {s['losses']} losses; win rate "
                     f"{_num(s['win_rate'], 3)}{_ci(s['win_rate_ci'])}; {s['unparseable']} unparseable, "
                     f"{s['failed']} failed pairs")
    u = report["judge"]["usage"]
    lines.append(f"judge: {u['requests']} requests ({u['retries']} retries), {u['cache_hits']} cached replies, "
                 f"{u['failed']} failed; {u['prompt_tokens']} prompt + {u['completion_tokens']} completion tokens")
    return lines


def judge_settings(endpoint: Endpoint, seed: int) -> dict[str, Any]:
    return {"url": endpoint.url, "model": endpoint.model, "temperature": 0, "max_tokens": endpoint.max_tokens,
            "grade_prompt": GRADE_PROMPT_VERSION, "pair_prompt": PAIR_PROMPT_VERSION,
            "bootstrap": {"samples": BOOTSTRAP_SAMPLES, "seed": seed, "level": 0.95},
            "pairwise_rule": "both orders; agreeing orders give the verdict, disagreeing orders a tie; "
                             "a pair with an unparseable or failed order is not scored"}


def attach(report: dict[str, Any], graded: Sequence[dict[str, Any]], pairwise: dict[str, Any] | None,
           settings: dict[str, Any], usage: dict[str, int]) -> dict[str, Any]:
    """Put the judge's results into an eval report (runs in order) and refresh its summary and comparison."""
    from miniglm.evaluate import report as rep

    for run, g in zip(report["runs"], graded):
        run["judge"] = g
        run["summary"] = rep.summary_metrics(run)
    report["comparison"] = rep.compare_runs(report["runs"])
    report["judge"] = {"settings": settings, "usage": dict(usage), "pairwise": pairwise}
    return report


def summary_rows(judge: dict[str, Any]) -> dict[str, float | int | None]:
    """A run's judge numbers for the report's summary table."""
    s = judge["summary"]
    out: dict[str, float | int | None] = {f"judge {OVERALL} (1-10)": s["means"][OVERALL]}
    out |= {f"judge {k} (1-10)": s["means"][k] for k in DIMENSIONS}
    out |= {"judge graded": s["graded"], "judge unparseable": s["unparseable"], "judge failed": s["failed"]}
    return out


def _cell(text: str | None, limit: int) -> str:
    text = text or ""
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.replace("|", "\\|").replace("\n", " ⏎ ") or "(empty)"


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(ci: Sequence[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def _grade_lines(name: str, judge: dict[str, Any]) -> list[str]:
    items = judge["items"]
    worst = sorted((it for it in items if it["status"] == "ok"), key=lambda it: (it["scores"][OVERALL], it["index"]))
    lines = ["", f"### {name}: the {min(SHOWN, len(worst))} worst-graded answers", ""]
    for it in worst[:SHOWN]:
        dims = ", ".join(f"{k} {it['scores'][k]}" for k in DIMENSIONS)
        lines += [f"- **#{it['index']}** {OVERALL} {it['scores'][OVERALL]} ({dims})",
                  f"  - question: {_cell(it['question'], 240)}", f"  - reference: {_cell(it['reference'], 240)}",
                  f"  - answer: {_cell(it['answer'], 400)}", f"  - judge: {_cell(it['reason'], EXCERPT)}"]
    for status, title in (("unparseable", "unparseable verdicts (not scored)"), ("failed", "failed requests")):
        bad = [it for it in items if it["status"] == status]
        if bad:
            lines += ["", f"### {name}: {len(bad)} {title}", ""]
            lines += [f"- **#{it['index']}** {it['problem']}" + (f"; reply: {_cell(it['reply'], EXCERPT)}"
                                                               if it["reply"] is not None else "")
                      for it in bad]
    return lines


def _pair_lines(p: dict[str, Any]) -> list[str]:
    s = p["summary"]
    bias = s["first_position_preferred"]
    lines = ["", f"### Pairwise: {p['b']} against {p['a']}", "",
             f"| {p['b']} wins | ties | {p['b']} losses | not scored (unparseable / failed) | win rate of {p['b']} (95% CI) |",
             "|---|---|---|---|---|",
             f"| {s['wins']} | {s['ties']} | {s['losses']} | {s['unparseable']} / {s['failed']} | "
             f"{_num(s['win_rate'], 3)}{_ci(s['win_rate_ci'])} |", "",
             f"- win rate = (wins + ties / 2) / {s['scored']} scored pairs; each pair judged with either answer first",
             f"- the two orders agreed on {s['orders_agreed']} of {s['scored']} scored pairs (disagreement = tie)",
             f"- position bias: the first answer won {_num(bias if bias is None else 100 * bias, 0)}% of the "
             "decisive single-order verdicts (50% = none)"]
    for it in (it for it in p["items"] if it["status"] != "ok"):
        problems = "; ".join(f"order {i + 1}: {o['problem']}" for i, o in enumerate(it["orders"]) if o["problem"])
        lines.append(f"- #{it['index']} not scored ({it['status']}): {_cell(problems, EXCERPT)}")
    return lines


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """report.md's judge section: settings, usage, per-run grades and answers, the pairwise result."""
    j = report.get("judge")
    if not j:
        return []
    st, u = j["settings"], j["usage"]
    lines = ["", "## LLM judge", "",
             f"- judge `{st['model']}` at `{st['url']}`, temperature 0; grading prompt {st['grade_prompt']} "
             f"(AlignBench-style, against the reference); pairwise prompt {st['pair_prompt']}",
             f"- requests: {u['requests']} sent ({u['retries']} retries), {u['cache_hits']} replies from the cache, "
             f"{u['failed']} failed; tokens this run: {u['prompt_tokens']} prompt + {u['completion_tokens']} "
             f"completion (cached replies: {u['cached_prompt_tokens']} + {u['cached_completion_tokens']})"]
    qa_file = report["settings"].get("judge_qa_file")
    if qa_file:  # answers generated by `miniglm judge RUN` rather than read from an eval report
        sample = report["settings"].get("sample", {})
        lines.append(f"- answers generated for `{qa_file}` with temperature {sample.get('temperature')}, "
                     f"max_new_tokens {sample.get('max_new_tokens')}")
    lines += ["", f"| run | graded | unparseable | failed | {' | '.join(DIMENSIONS)} | {OVERALL} (95% CI) |",
              "|" + "---|" * (len(DIMENSIONS) + 5)]
    judged = [(r["name"], r["judge"]) for r in report["runs"] if r.get("judge")]
    for name, jr in judged:
        s = jr["summary"]
        dims = " | ".join(_num(s["means"][k]) for k in DIMENSIONS)
        lines.append(f"| {name} | {s['graded']} | {s['unparseable']} | {s['failed']} | {dims} | "
                     f"{_num(s['means'][OVERALL])}{_ci(s['overall_ci'])} |")
    for name, jr in judged:
        lines += _grade_lines(name, jr)
    if j.get("pairwise"):
        lines += _pair_lines(j["pairwise"])
    return lines
