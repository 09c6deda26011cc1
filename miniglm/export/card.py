"""The model card (README.md) of an exported Hugging Face directory: what the model is, how it was
trained (the run's resolved config), how it scored (the run's eval report, when there is one), and
how to use it with `transformers`, including the chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from miniglm.export.source import Source

# Training settings worth a line in the card; the full resolved config follows in a details block.
HEADLINE_KEYS = ("mode", "data", "init_from", "max_steps", "batch_size", "grad_accum_steps", "block_size",
                 "learning_rate", "min_lr", "warmup_steps", "weight_decay", "seed", "dtype")


def _report_section(src: Source) -> list[str]:
    if src.report is None:
        note = f" ({src.report_note})" if src.report_note else ""
        return ["## Evaluation", "", f"No eval report for this run{note}; `miniglm eval RUN_DIR` writes one.", ""]
    from miniglm.evaluate.report import summary_table

    mine = [r for r in src.report["runs"] if _same_path(r.get("checkpoint"), src.path)]
    lines = ["## Evaluation", "", "From `eval/report.json` of the run (`miniglm eval`), "
             f"created {src.report.get('created', '?')}."]
    if not mine:
        steps = ", ".join(f"{r.get('checkpoint')} (step {r.get('step')})" for r in src.report["runs"])
        lines.append(f"Measured on {steps}, not on the exported checkpoint (step {src.loaded.meta.get('step')}).")
    report = {**src.report, "runs": mine or src.report["runs"], "comparison": None}
    return [*lines, "", *summary_table(report), ""]


def _same_path(a: Any, b: Path) -> bool:
    try:
        return a is not None and Path(a).resolve() == b.resolve()
    except OSError:
        return False


def _training_section(src: Source) -> list[str]:
    meta = src.loaded.meta
    lines = ["## Training", ""]
    if src.run_config is None:
        return [*lines, f"Exported from `{src.path.name}` (step {meta.get('step')}); no run config was found.", ""]
    cfg = src.run_config
    lines.append(f"Checkpoint `{src.path.name}` at step {meta.get('step')} of run `{src.run_dir.name}`.")
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {cfg[k]} |" for k in HEADLINE_KEYS if k in cfg and cfg[k] not in ("", None)]
    full = json.dumps(cfg, indent=2, ensure_ascii=False)
    return [*lines, "", "<details><summary>resolved run config</summary>", "", "```json", full, "```", "",
            "</details>", ""]


def render_card(src: Source, dtype: str) -> str:
    m, tok = src.loaded.model, src.loaded.tokenizer
    eot = tok.id_to_token(tok.eot_id)
    c = m.config
    name = src.run_dir.name if src.run_dir else src.path.name
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "language:", "- zh",
        "tags:", "- miniglm", "- llama", "---", "",
        f"# {name} (MiniGLM)", "",
        "A small Chinese GPT-style model trained with MiniGLM, exported as a Hugging Face "
        "`LlamaForCausalLM` (same weights, same tokenizer, same chat template).", "",
        "## Model", "",
        f"- {m.num_params() / 1e6:.2f}M parameters ({m.num_params(non_embedding=True) / 1e6:.2f}M without embeddings), "
        f"weights stored as {dtype}",
        f"- {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads "
        f"({c.num_key_value_heads} key/value), SwiGLU {c.intermediate_size}, RMSNorm eps {c.rms_norm_eps}",
        f"- rotary base {c.rope_theta}, context {c.max_position_embeddings} tokens, "
        f"{'tied' if c.tie_word_embeddings else 'separate'} input/output embeddings",
        f"- byte-level BPE, {tok.vocab_size} tokens; end of text `{eot}` "
        f"(id {tok.eot_id}), padding id {tok.pad_id}; no BOS token is prepended", "",
        *_training_section(src), *_report_section(src),
        "## Use", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tok = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "ids = tok.apply_chat_template([{\"role\": \"user\", \"content\": \"你好\"}], add_generation_prompt=True,",
        "                              return_tensors=\"pt\", return_dict=True)",
        "out = model.generate(**ids, max_new_tokens=100)",
        "print(tok.decode(out[0, ids[\"input_ids\"].shape[1]:], skip_special_tokens=True))",
        "```", "",
        f"Chat template: every turn is `问：{{question}}\\n答：{{answer}}{eot}`; there is no system "
        "role. `generation_config.json` holds MiniGLM's default sampling settings.", "",
    ]
    return "\n".join(lines)
