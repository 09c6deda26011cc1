"""The eval report: evaluate one or two checkpoints, compare them, write and read report.json/.md.

Owns the report's shape (`report.json`, format below) and its readable form (`report.md`: a
summary table with one column per checkpoint and, for two, the delta; then the 3 worst and 3
best answers by Rouge-L with question, reference, answer and flags). The measuring itself is
`miniglm.evaluate.heldout`; `miniglm plot` reads reports back through `load_report`.

report.json:
    {"report": "miniglm-eval", "format_version": 1, "created": ISO time, "settings": {...},
     "runs": [{"name", "run", "checkpoint", "step", "params", "device", "dtype", "quantization" (e.g. "int8/dynamic" | null),
               "heldout": [LossResult...], "qa": {"summary": {...}, "items": [...],
                                                  "decode": {"kernels": {kernel: count}, "weight_bytes_per_token",
                                                             "threads"}} | null,
               "summary": {metric: value}, "judge": {...} (only after `miniglm judge`)}],
     "comparison": {metric: {"a", "b", "delta"}} | null,
     "judge": {"settings", "usage", "pairwise"} (only after `miniglm judge`; see evaluate/judge.py)}
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniglm.errors import UserError
from miniglm.evaluate import metrics
from miniglm.io import atomic_write

if TYPE_CHECKING:  # torch and the model are imported only when evaluating, not to read a report

    from miniglm.evaluate.qa import QAItem

REPORT_KIND = "miniglm-eval"
FORMAT_VERSION = 1
SHOWN = 3  # worst and best answers shown in report.md


class ReportError(UserError, ValueError):
    """A file that is not a readable MiniGLM eval report."""


# --------------------------------------------------------------------------- running


def default_data(run: str | Path) -> Path:
    """The prepared data a run was trained on (its config.json's `data`), when nothing is given."""
    cfg = Path(run) / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        data = None
    if not data or not Path(data).is_dir():
        from miniglm.evaluate.heldout import EvalError

        raise EvalError(f"nothing to evaluate: give --data DIR, --text FILE or --qa FILE "
                        f"({cfg} names no existing data directory)")
    return Path(data)


def default_out(run: str | Path) -> Path:
    """RUN_DIR/eval; for a checkpoint directory, its run's eval/ (or a sibling `<name>_eval`)."""
    path = Path(run)
    if path.parent.name == "checkpoints":
        return path.parent.parent / "eval"
    if (path / "meta.json").is_file() and (path / "model.safetensors").is_file():
        return path.with_name(path.name + "_eval")
    return path / "eval"


def training_data_dirs(ckpt: Path, meta: dict[str, Any]) -> list[str]:
    """Prepared directories a checkpoint learned from: its own data, then (following each run's
    config.json `init_from`) the data of the runs it started from, e.g. SFT data + pretraining data."""
    dirs = [meta["data"]] if isinstance(meta.get("data"), str) else []
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    visited: set[Path] = set()
    while run is not None and run.resolve() not in visited and len(visited) < 8:
        visited.add(run.resolve())
        try:
            cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            break
        if isinstance(cfg.get("data"), str):
            dirs.append(cfg["data"])
        init = Path(cfg["init_from"]) if isinstance(cfg.get("init_from"), str) and cfg["init_from"] else None
        run = init.parent.parent if init is not None and init.parent.name == "checkpoints" else init
    return list(dict.fromkeys(dirs))


def run_name(ckpt: Path) -> str:
    """runs/a/checkpoints/best -> "a"; a bare checkpoint directory -> its own name."""
    return ckpt.parent.parent.name if ckpt.parent.name == "checkpoints" else ckpt.name


def evaluate_run(run: str | Path, data_dir: str | Path | None, text_files: Sequence[str | Path],
                 qa_items: Sequence[QAItem] | None, cfg: Any, batch_size: int = 8, which: str = "best",
                 progress: bool = False, speed_probe: int = 3) -> dict[str, Any]:
    """All measurements of one checkpoint (a run directory's best/latest one, or a checkpoint dir)."""
    from miniglm.checkpoint import load_checkpoint
    from miniglm.device import resolve_device, resolve_dtype
    from miniglm.evaluate.heldout import evaluate_heldout, training_characters
    from miniglm.evaluate.qa import evaluate_qa

    device = resolve_device(cfg.device)
    loaded = load_checkpoint(run, device=device, which=which)  # float32 weights for the losses
    dtype = resolve_dtype(cfg.dtype, device, scoring=True, quantize=cfg.quantize)
    if cfg.quantize != "none":  # losses and answers both from the int8 products
        loaded.model.quantize(cfg.quantize)
    heldout = evaluate_heldout(loaded.model, loaded.tokenizer, data_dir, text_files, batch_size, dtype, progress)
    qa, gen_dtype = None, None
    if qa_items:
        # Losses first (float32 weights, autocast); then the weights in the dtype `sample`/`chat`
        # generate with, so the speed measured is the one users see.
        gen_dtype = resolve_dtype(cfg.dtype, device, quantize=cfg.quantize)
        chars, used = training_characters(training_data_dirs(loaded.path, loaded.meta), loaded.tokenizer)
        qa = evaluate_qa(loaded.model, loaded.tokenizer, qa_items, cfg, batch_size, dtype, progress,
                         generation_dtype=gen_dtype, speed_probe=speed_probe,
                         training_chars=chars, training_source=", ".join(used))
    result = {"name": run_name(loaded.path), "run": str(run), "checkpoint": str(loaded.path),
              "step": loaded.meta.get("step"), "params": loaded.model.num_params(), "device": str(device),
              "dtype": str(dtype).removeprefix("torch."),
              "quantization": None if loaded.model.quantization is None else "/".join(loaded.model.quantization),
              "generation_dtype": str(gen_dtype).removeprefix("torch.") if gen_dtype else None,
              "heldout": [r.to_dict() for r in heldout], "qa": qa}
    result["summary"] = summary_metrics(result)
    return result


# --------------------------------------------------------------------------- building


def summary_metrics(run: dict[str, Any]) -> dict[str, float | int | None]:
    """The numbers of the summary table, in display order."""
    out: dict[str, float | int | None] = {}
    for h in run["heldout"]:
        label = {"pretrain": "val", "sft": "SFT val answers", "text": "text"}[h["kind"]]
        out[f"{label} loss (nats/token)"] = h["loss"]
        out[f"{label} perplexity"] = h["perplexity"]
        out[f"{label} bits/char"] = h["bpc"]
        out[f"{label} tokens scored"] = h["tokens_scored"]
    if run.get("qa"):
        s = run["qa"]["summary"]
        out |= {"Q&A items": s["items"], "reference answer perplexity": s["reference_perplexity"],
                "Rouge-L F": s["rouge_l"]["f"], "Rouge-L P": s["rouge_l"]["precision"],
                "Rouge-L R": s["rouge_l"]["recall"], "BLEU": s["bleu"], "chrF": s["chrf"],
                "distinct-1": s["distinct_1"], "distinct-2": s["distinct_2"],
                "mean answer chars": s["mean_answer_chars"]}
        out |= {f"flag: {k} (share)": v for k, v in s["flag_rates"].items()}
        out["any flag (share)"] = s["any_flag"] / s["items"]
        out["unique answers (share not collapsed)"] = s.get("unique_answer_share")  # None in older reports
        sp = s["speed"]
        b = sp["batch_size"]
        out |= {f"chars/s (batches of {b}, all answers)": sp["chars_per_second"],
                f"tokens/s (batches of {b}, all answers)": sp["tokens_per_second"],
                f"chars/s (per answer in a batch of {b})": sp["stream_chars_per_second"]}
        one = sp.get("single_stream")
        if one:
            out |= {"chars/s (one at a time)": one["chars_per_second"],
                    "tokens/s (one at a time)": one["tokens_per_second"],
                    "time to first token (s, one at a time, median)": one["first_token_seconds_median"]}
    if run.get("judge"):  # grades of `miniglm judge`
        from miniglm.evaluate.judge import summary_rows

        out |= summary_rows(run["judge"])
    return out


def compare_runs(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Each summary metric of two runs side by side with the delta (second - first); None for one run."""
    if len(runs) != 2:
        return None
    a, b = runs[0]["summary"], runs[1]["summary"]
    return {k: {"a": a.get(k), "b": b.get(k),
                "delta": b[k] - a[k] if a.get(k) is not None and b.get(k) is not None else None}
            for k in dict.fromkeys([*a, *b])}


def build_report(runs: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    return {"report": REPORT_KIND, "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {**metrics.settings(), **settings}, "runs": list(runs), "comparison": compare_runs(runs)}


# --------------------------------------------------------------------------- markdown


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)


def _cell(text: str, limit: int = 0) -> str:
    if limit and len(text) > limit:
        text = text[:limit] + "…"
    return text.replace("|", "\\|").replace("\n", " ⏎ ") or "(empty)"


def summary_table(report: dict[str, Any]) -> list[str]:
    runs = report["runs"]
    names = [r["name"] for r in runs]
    header = ["metric", *names] + (["delta (2 − 1)"] if report.get("comparison") else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = list(dict.fromkeys(k for r in runs for k in r["summary"]))
    for k in keys:
        row = [k, *(_fmt(r["summary"].get(k)) for r in runs)]
        if report.get("comparison"):
            row.append(_fmt(report["comparison"][k]["delta"]))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def ranked_answers(items: Sequence[dict[str, Any]], n: int = SHOWN) -> tuple[list[dict], list[dict]]:
    """(worst n, best n) by Rouge-L F, never the same answer in both; ties keep file order."""
    worst = sorted(items, key=lambda r: (r["rouge_l"]["f"], r["index"]))[:n]
    shown = {r["index"] for r in worst}
    best = [r for r in sorted(items, key=lambda r: (-r["rouge_l"]["f"], r["index"])) if r["index"] not in shown][:n]
    return worst, best


def _answer_block(r: dict[str, Any]) -> list[str]:
    flags = ", ".join(k for k, v in r["flags"].items() if v) or "none"
    rl = r["rouge_l"]
    return [f"- **#{r['index']}** (line {r['line']}) Rouge-L F {rl['f']:.3f} (P {rl['precision']:.3f}, "
            f"R {rl['recall']:.3f}) · finish: {r['finish_reason']} · flags: {flags}",
            f"  - question: {_cell(r['question'], 240)}",
            f"  - reference: {_cell(' / '.join(r['references']), 240)}",
            f"  - answer: {_cell(r['answer'], 400)}"]


def render_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = ["# MiniGLM evaluation report", "", f"Created {report['created']}."]
    for r in report["runs"]:
        lines.append(f"- **{r['name']}**: checkpoint `{r['checkpoint']}`, step {r['step']}, "
                     f"{r['params']:,} parameters, {r['device']} {r['dtype']}"
                     + (f", {r['quantization']} weights" if r.get("quantization") else ""))
        decode = (r.get("qa") or {}).get("decode")
        if decode:
            kernels = ", ".join(f"{n} x {k}" for k, n in decode["kernels"].items())
            lines.append(f"  - answers decoded with {kernels}; {decode['weight_bytes_per_token'] / 1e6:.1f} MB of "
                         f"weights read per token; {decode['threads']} CPU threads")
    for r in report["runs"]:
        if r.get("qa") and r["qa"].get("seen_set"):
            seen = r["qa"]["seen_set"]
            lines.append(f"- {r['name']}: seen set of the garbled flag = {seen['source']}, {seen['chars']:,} characters")
    for h in report["runs"][0]["heldout"]:
        lines.append(f"- held-out `{h['source']}`: {h['rule']}")
    if s.get("qa_file"):
        sample = s.get("sample", {})
        lines.append(f"- Q&A `{s['qa_file']}`: {report['runs'][0]['qa']['summary']['items']} items; sampling "
                     f"temperature {sample.get('temperature')}, max_new_tokens {sample.get('max_new_tokens')}; "
                     f"Rouge-L on characters, β = {s['rouge_l']['beta']}, best of the references; BLEU with "
                     f"sacrebleu tokenize=zh; flags as defined in miniglm/metrics.py")
    lines += ["", "## Summary", "", *summary_table(report)]
    for r in report["runs"]:
        if not r.get("qa"):
            continue
        worst, best = ranked_answers(r["qa"]["items"])
        lines += ["", f"## {r['name']}: the {len(worst)} worst answers by Rouge-L", "",
                  *[x for a in worst for x in _answer_block(a)]]
        if best:
            lines += ["", f"## {r['name']}: the {len(best)} best answers by Rouge-L", "",
                      *[x for a in best for x in _answer_block(a)]]
    if report.get("judge"):
        from miniglm.evaluate.judge import markdown_lines

        lines += markdown_lines(report)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """report.json and report.md in `out_dir` (created), each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "report.json", out / "report.md"
    atomic_write(js, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write(md, render_markdown(report))
    return js, md


def load_report(path: str | Path) -> dict[str, Any]:
    """A report.json, checked enough that plotting and comparing can trust its shape."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: report not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a MiniGLM eval report (invalid JSON: {e})") from None
    if not isinstance(report, dict) or report.get("report") != REPORT_KIND:
        raise ReportError(f"{path}: not a MiniGLM eval report (no \"report\": \"{REPORT_KIND}\" field)")
    if report.get("format_version") != FORMAT_VERSION:
        raise ReportError(f"{path}: report format version {report.get('format_version')!r}, "
                          f"this MiniGLM reads {FORMAT_VERSION}")
    runs = report.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) and "name" in r for r in runs):
        raise ReportError(f"{path}: 'runs' must be a non-empty list of runs with a name")
    for i, r in enumerate(runs):
        items = (r.get("qa") or {}).get("items", [])
        if not isinstance(items, list) or not all(
                isinstance(it, dict) and isinstance(it.get("rouge_l"), dict) and isinstance(it.get("flags"), dict)
                for it in items):
            raise ReportError(f"{path}: runs[{i}].qa.items must be objects with 'rouge_l' and 'flags'")
    return report
