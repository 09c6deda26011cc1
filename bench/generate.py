"""Benchmark: generation speed of MiniGLM's engine vs Hugging Face `transformers` on the same weights.

The `base` preset (6 layers, hidden 512, context 512) with random weights and a vocabulary of
--vocab-size (default 16000); the same weights are copied into `transformers.LlamaForCausalLM`
(identical parameter names, tied embeddings); the share of identical greedy tokens is printed
(100% in float32; in bfloat16 the rounding differs, e.g. our attention runs in float32, so a long
generation may drift apart). Batch 1, a prompt of --prompt-tokens (default 32) tokens of the four
novels, --new-tokens (default 256) new tokens, greedy (or, with --sampling, SampleConfig's default
sampling on both sides), no end token.
Ours: `engine.generate`; theirs: `LlamaForCausalLM.generate(use_cache=True)` (sdpa attention).
Each side gets a warm-up run, then --repeats timed runs, interleaved; the medians are reported.
Times include the prefill.

chars/s needs text: a byte-level BPE of the same vocabulary size is trained on a slice of the
novels (--corpus-chars) and decodes the generated ids. With random weights the ids are arbitrary,
so chars/s is tokens/s times the average characters per generated token (whatever the tokenizer's
tokens hold), not a property of a trained model.

    python bench/generate.py                  # float32 and bfloat16 (miniglm installed or PYTHONPATH=.)
    python bench/generate.py --dtype float32 --repeats 5

Last line: `ratio_vs_transformers: X.XX`, ours / theirs in tokens/s for the dtype `miniglm sample`
uses by default on this machine (`--dtype auto`), or for the one dtype asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from miniglm.config import SampleConfig, TrainConfig, load_config
from miniglm.device import DTYPES, resolve_dtype
from miniglm.generate import engine
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import train_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pretrain"


def corpus_slice(data: Path, chars: int) -> str:
    files = sorted(data.glob("*.txt"))
    if not files:
        raise SystemExit(f"no .txt files in {data} (pass --data)")
    per_file = chars // len(files)
    return "\n".join(f.read_text(encoding="utf-8")[:per_file] for f in files)


def hf_copy(model: MiniGLM):
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    hc = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                     num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
                     intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
                     rms_norm_eps=c.rms_norm_eps, rope_theta=c.rope_theta, tie_word_embeddings=True,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None, attn_implementation="sdpa")
    hf = LlamaForCausalLM(hc).eval()
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    hf.tie_weights()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return hf.to(next(model.parameters()).dtype)


def ours(model: MiniGLM, prompt: list[int], cfg: SampleConfig) -> list[int]:
    return engine.generate(model, [prompt], cfg)[0].tokens


def theirs(hf, prompt: list[int], cfg: SampleConfig) -> list[int]:
    ids = torch.tensor([prompt])
    kw = dict(do_sample=False) if cfg.temperature == 0 else dict(
        do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty)
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=cfg.max_new_tokens,
                          use_cache=True, **kw)
    return out[0, len(prompt):].tolist()


def measure(dtype: torch.dtype, base: MiniGLM, tok, prompt: list[int], cfg: SampleConfig, repeats: int) -> dict:
    model = MiniGLM(base.config).eval()
    model.load_state_dict(base.state_dict())
    model.to(dtype)
    hf = hf_copy(model)
    short = dataclasses.replace(cfg, max_new_tokens=16)
    ours(model, prompt, short), theirs(hf, prompt, short)  # warm-up: weight packing, kernel selection
    runs = {"miniglm": [], "transformers": []}
    tokens = {}
    for _ in range(repeats):
        for name, fn, m in (("miniglm", ours, model), ("transformers", theirs, hf)):
            t0 = time.perf_counter()
            tokens[name] = fn(m, prompt, cfg)
            runs[name].append(time.perf_counter() - t0)
    a, b = tokens["miniglm"], tokens["transformers"]
    assert len(a) == len(b) == cfg.max_new_tokens, (len(a), len(b))
    result = {"agree": sum(x == y for x, y in zip(a, b)) / len(a)}
    for name, times in runs.items():
        sec = statistics.median(times)
        chars = len(tok.decode(tokens[name], skip_special_tokens=True))
        result[name] = {"tokens_per_s": len(tokens[name]) / sec, "chars_per_s": chars / sec,
                        "ms_per_token": 1000 * sec / len(tokens[name]), "best_tokens_per_s": len(tokens[name]) / min(times)}
    result["ratio"] = result["miniglm"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="all", choices=["all", "auto", "float32", "bfloat16"],
                    help="dtype(s) to measure; all = float32 and bfloat16 (default)")
    ap.add_argument("--vocab-size", type=int, default=16000, help="vocabulary size (default 16000)")
    ap.add_argument("--new-tokens", type=int, default=256, help="tokens generated per run (default 256)")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="prompt length in tokens (default 32)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per side (default 5; median reported)")
    ap.add_argument("--sampling", action="store_true", help="sample with SampleConfig's defaults instead of greedy")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    ap.add_argument("--data", default=str(DATA), help="directory of .txt files for the tokenizer and prompt")
    ap.add_argument("--corpus-chars", type=int, default=2_000_000, help="characters of --data to train the tokenizer on")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    default = resolve_dtype("auto", torch.device("cpu"))
    names = {"all": ["float32", "bfloat16"], "auto": [str(default).removeprefix("torch.")]}.get(args.dtype, [args.dtype])

    text = corpus_slice(Path(args.data), args.corpus_chars)
    t0 = time.perf_counter()
    tok = train_tokenizer([text[i:i + 10_000] for i in range(0, len(text), 10_000)], args.vocab_size,
                          show_progress=False)
    prompt = tok.encode(text[:4 * args.prompt_tokens])[:args.prompt_tokens]
    print(f"tokenizer: {tok.vocab_size} tokens trained on {len(text):,} chars in {time.perf_counter() - t0:.1f} s; "
          f"prompt {len(prompt)} tokens; torch {torch.__version__}, {torch.get_num_threads()} threads")
    mcfg = load_config(TrainConfig, "base").model
    mcfg.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    base = MiniGLM(mcfg).eval()
    cfg = SampleConfig(max_new_tokens=args.new_tokens) if args.sampling else SampleConfig(
        temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=args.new_tokens)
    print(f"model: base preset, {base.num_params() / 1e6:.1f}M parameters; batch 1, {args.new_tokens} new tokens, "
          f"{'sampling ' + str(cfg) if args.sampling else 'greedy'}")
    print(f"{'dtype':<9} {'engine':<13} {'tokens/s':>9} {'chars/s':>9} {'ms/token':>9} {'best tok/s':>10}")
    ratios = {}
    for name in names:
        r = measure(DTYPES[name], base, tok, prompt, cfg, args.repeats)
        for side in ("miniglm", "transformers"):
            s = r[side]
            print(f"{name:<9} {side:<13} {s['tokens_per_s']:>9.1f} {s['chars_per_s']:>9.1f} {s['ms_per_token']:>9.2f} "
                  f"{s['best_tokens_per_s']:>10.1f}")
        agree = "n/a with sampling" if args.sampling else f"{100 * r['agree']:.0f}% of greedy tokens identical"
        print(f"{name:<9} {'ratio':<13} {r['ratio']:>9.2f}   ({agree})")
        ratios[name] = r["ratio"]
    key = str(default).removeprefix("torch.") if str(default).removeprefix("torch.") in ratios else names[0]
    print(f"default dtype: {key} (what `miniglm sample` uses on this machine: --dtype auto -> "
          f"{str(default).removeprefix('torch.')})")
    print(f"ratio_vs_transformers: {ratios[key]:.2f}")


if __name__ == "__main__":
    main()
