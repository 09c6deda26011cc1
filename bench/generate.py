"""Benchmark: decoding speed of MiniGLM's engine vs Hugging Face `transformers`, and against the memory roofline.

The `base` preset (6 layers, hidden 512, context 512) with random weights and a vocabulary of
--vocab-size (default 16000); the same weights are copied into `transformers.LlamaForCausalLM`
(identical parameter names, tied embeddings); the share of identical greedy tokens is printed
(100% in float32; in bfloat16 the rounding differs, e.g. our attention runs in float32, so a long
generation may drift apart). Batch 1, a prompt of --prompt-tokens (default 32) tokens of the four
novels, --new-tokens (default 256) new tokens, greedy (or, with --sampling, SampleConfig's default
sampling on both sides), no end token. With --checkpoint, a trained model instead (its own
tokenizer and shape; new tokens capped by its context), where int8's greedy agreement with float32
means something (with random weights the top two logits are often nearly tied).
Ours: `engine.generate`; theirs: `LlamaForCausalLM.generate(use_cache=True)` (sdpa attention).
Each side gets a warm-up run, then --repeats timed runs, interleaved; the medians are reported.
Times include the prefill.

Formats (--formats): float32, bfloat16 (weights and compute), int8 (`--quantize int8`: per-channel
int8 weights, float32 activations; its peer is transformers in float32, and its greedy tokens are
compared with our float32 ones).

Roofline: decoding one token reads every weight of the decode-time products once
(`MiniGLM.decode_plan`: bytes per format, int8 scales included) plus the KV cache (keys and
values of every layer, float32, at the run's mean length); the machine's read bandwidth is
measured here (the best of a few sums over a 512 MB float32 buffer, far beyond any cache, with
torch's threads). roofline tok/s = bandwidth / bytes per token; "of roofline" = measured / that.
A model whose bytes fit in the CPU's last-level cache (int8 base: 28 MB) may read faster than
memory allows, so its fraction can exceed what DRAM alone would permit.

chars/s needs text: a byte-level BPE of the same vocabulary size is trained on a slice of the
novels (--corpus-chars) and decodes the generated ids. With random weights the ids are arbitrary,
so chars/s is tokens/s times the average characters per generated token (whatever the tokenizer's
tokens hold), not a property of a trained model.

    python bench/generate.py                        # float32, int8 (+ bfloat16 where the CPU has bf16)
    python bench/generate.py --formats float32 --repeats 5
    python bench/generate.py --profile              # also where each format's decode time goes, part by part

Last line: `ratio_vs_transformers: X.XX`, ours / theirs in tokens/s for the format `miniglm sample`
uses by default on this machine (float32 or bfloat16 per `--dtype auto`), or the first format asked for.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")  # as `miniglm` sets it (miniglm/__main__.py), before numpy loads

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from miniglm.config import SampleConfig, TrainConfig, load_config
from miniglm.device import DTYPES, cpu_prefers_bf16, resolve_dtype
from miniglm.generate import engine
from miniglm.model import kernels
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


def read_bandwidth(mb: int = 512, tries: int = 5) -> float:
    """Bytes/s of the best of `tries` sums over an `mb` MB float32 buffer (far larger than any cache)."""
    buf = torch.ones(mb * (1 << 20) // 4)
    buf.sum()  # fault the pages in
    best = min(_timed(buf.sum) for _ in range(tries))
    return buf.numel() * 4 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def our_model(base: MiniGLM, fmt: str) -> MiniGLM:
    model = MiniGLM(base.config).eval()
    model.load_state_dict(base.state_dict())
    if fmt == "int8":
        return model.quantize("int8")
    return model.to(DTYPES[fmt])


def kv_bytes_per_token(model: MiniGLM, mean_len: float) -> float:
    """Keys and values of every layer read per decoded token (float32 cache on a CPU)."""
    c = model.config
    return 2 * c.num_hidden_layers * mean_len * c.num_key_value_heads * c.head_dim * 4


def measure(formats: list[str], base: MiniGLM, tok, prompt: list[int], cfg: SampleConfig, repeats: int) -> dict:
    """Interleaved timed runs: ours in every format and transformers in the dtypes they pair with."""
    peer_of = {f: ("float32" if f == "int8" else f) for f in formats}
    sides = {f"miniglm {f}": (ours, our_model(base, f)) for f in formats}
    for dtype in dict.fromkeys(peer_of.values()):
        sides[f"transformers {dtype}"] = (theirs, hf_copy(our_model(base, dtype)))
    short = dataclasses.replace(cfg, max_new_tokens=16)
    for fn, m in sides.values():
        fn(m, prompt, short)  # warm-up: weight packing, kernel selection
    runs: dict[str, list[float]] = {name: [] for name in sides}
    tokens: dict[str, list[int]] = {}
    for _ in range(repeats):
        for name, (fn, m) in sides.items():
            t0 = time.perf_counter()
            tokens[name] = fn(m, prompt, cfg)
            runs[name].append(time.perf_counter() - t0)
    result: dict = {"sides": {}, "formats": {}}
    for name, times in runs.items():
        n = len(tokens[name])
        assert n == cfg.max_new_tokens, (name, n)
        sec = statistics.median(times)
        chars = len(tok.decode(tokens[name], skip_special_tokens=True))
        result["sides"][name] = {"tokens_per_s": n / sec, "chars_per_s": chars / sec, "ms_per_token": 1000 * sec / n,
                                 "best_tokens_per_s": n / min(times)}
    mean_len = len(prompt) + cfg.max_new_tokens / 2
    for f in formats:
        model = sides[f"miniglm {f}"][1]
        plan = model.decode_plan()
        ours_tok, peer = tokens[f"miniglm {f}"], tokens[f"transformers {peer_of[f]}"]
        reference = tokens.get("miniglm float32", peer)
        result["formats"][f] = {
            "peer": f"transformers {peer_of[f]}",
            "ratio": result["sides"][f"miniglm {f}"]["tokens_per_s"] / result["sides"][f"transformers {peer_of[f]}"]["tokens_per_s"],
            "agree_peer": sum(x == y for x, y in zip(ours_tok, peer)) / len(peer),
            "agree_float32": sum(x == y for x, y in zip(ours_tok, reference)) / len(reference),
            "first_difference": next((i for i, (x, y) in enumerate(zip(ours_tok, reference)) if x != y), None),
            "weight_bytes": sum(p["bytes"] for p in plan), "kv_bytes": kv_bytes_per_token(model, mean_len),
            "kernels": sorted({p["kernel"] for p in plan})}
    return result


def top1_agreement(base: MiniGLM, fmt: str, ids: list[int], block: int) -> float:
    """Teacher-forced: the share of positions of `ids` where `fmt`'s most likely next token is float32's."""
    model, same, total = our_model(base, fmt), 0, 0
    with torch.inference_mode():
        for s in range(0, len(ids) - 1, block):
            x = torch.tensor([ids[s:s + block]])
            a, b = base(x)[0].argmax(-1), model(x)[0].argmax(-1)
            same, total = same + int((a == b).sum()), total + a.numel()
    return same / total


class _Timed:
    """A decode-time product that adds the seconds of each call (torch path or numpy row) to `spent[name]`."""

    def __init__(self, fn, name: str, spent: collections.Counter):
        self.fn, self.name, self.spent = fn, name, spent
        self.kernel, self.nbytes = fn.kernel, fn.nbytes

    def __call__(self, x):
        t0 = time.perf_counter()
        y = self.fn(x)
        self.spent[self.name] += time.perf_counter() - t0
        return y

    def row(self, v):
        t0 = time.perf_counter()
        y = self.fn.row(v)
        self.spent[self.name] += time.perf_counter() - t0
        return y


def profile_decode(base: MiniGLM, prompt: list[int], cfg: SampleConfig, fmt: str) -> None:
    """Where one generation's time goes: each kind of product, timed around its calls, and the rest
    (norms, rotary, cache writes, attention over the cache, sampling, Python), on the numpy step
    (batch 1, what generation uses) and on the torch decode path (batch > 1 and bf16 use it)."""
    model = our_model(base, fmt)
    model.fuse()
    spent: collections.Counter = collections.Counter()
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        a.fused = (_Timed(a.fused[0], "qkv", spent), _Timed(a.fused[1], "o", spent))
        m.fused = (_Timed(m.fused[0], "gate_up", spent), _Timed(m.fused[1], "down", spent))
    model.fused_head = _Timed(model.fused_head, "lm_head", spent)
    nbytes: collections.Counter = collections.Counter()
    for p in model.decode_plan():
        nbytes[p["name"].rsplit(".", 1)[-1]] += p["bytes"]  # layers.3.qkv -> qkv
    n = cfg.max_new_tokens
    print(f"\nwhere a {fmt} token's time goes ({n} new tokens after a {len(prompt)}-token prompt; products timed "
          f"around their calls, the prefill's included):")
    print(f"{'path':<19} {'part':<10} {'ms/token':>8} {'share':>6} {'MB/token':>8} {'GB/s':>6}")
    for path, numpy_step in (("numpy step", True), ("torch decode path", False)):
        if numpy_step and fmt == "bfloat16":
            continue  # numpy has no bf16: bf16 always decodes through torch
        model.numpy_step = numpy_step
        ours(model, prompt, cfg)  # warm-up
        spent.clear()
        t0 = time.perf_counter()
        ours(model, prompt, cfg)
        total = time.perf_counter() - t0
        parts = [(k, spent[k], nbytes[k]) for k in ("qkv", "o", "gate_up", "down", "lm_head")]
        parts.append(("the rest", total - sum(spent.values()), 0))
        for name, sec, b in parts + [("total", total, sum(nbytes.values()))]:
            rate = f"{b * n / sec / 1e9:>6.1f}" if b else f"{'':>6}"
            print(f"{path:<19} {name:<10} {1000 * sec / n:>8.2f} {100 * sec / total:>5.0f}% {b / 1e6:>8.1f} {rate}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default="",
                    help="comma-separated formats among float32, bfloat16, int8 (default: float32,int8, plus "
                         "bfloat16 where the CPU has native bf16)")
    ap.add_argument("--profile", action="store_true", help="also print where each format's decode time goes")
    ap.add_argument("--checkpoint", metavar="RUN_OR_CHECKPOINT",
                    help="measure a trained model (its tokenizer, its shape) instead of the random base preset")
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
    default = str(resolve_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] or (
        ["float32", "bfloat16", "int8"] if cpu_prefers_bf16() else ["float32", "int8"])
    bad = [f for f in formats if f not in ("float32", "bfloat16", "int8")]
    if bad:
        raise SystemExit(f"--formats: unknown {', '.join(bad)} (float32, bfloat16, int8)")

    if args.checkpoint:  # a trained model: its own tokenizer, greedy agreement that means something
        from miniglm.checkpoint import load_checkpoint

        loaded = load_checkpoint(args.checkpoint)
        base, tok, what = loaded.model, loaded.tokenizer, f"checkpoint {loaded.path}"
        text = corpus_slice(Path(args.data), 4 * args.prompt_tokens * 4)
        prompt = tok.encode(text)[:args.prompt_tokens]
        args.new_tokens = min(args.new_tokens, base.config.max_position_embeddings - len(prompt))
        print(f"tokenizer: the checkpoint's ({tok.vocab_size} tokens); prompt {len(prompt)} tokens; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    else:
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
        base, what = MiniGLM(mcfg).eval(), "base preset, random weights"
    cfg = SampleConfig(max_new_tokens=args.new_tokens) if args.sampling else SampleConfig(
        temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=args.new_tokens)
    print(f"model: {what}, {base.num_params() / 1e6:.1f}M parameters; batch 1, {args.new_tokens} new tokens, "
          f"{'sampling ' + str(cfg) if args.sampling else 'greedy'}")
    print(f"CPU: torch capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_prefers_bf16()}; "
          f"float32 GEMM routine {kernels.active_float32_matmul()}; int8 kernel rule: {kernels.default_int8_kernel()}")
    bandwidth = read_bandwidth()
    print(f"measured read bandwidth: {bandwidth / 1e9:.1f} GB/s (best of 5 sums over 512 MB, {torch.get_num_threads()} threads)")
    r = measure(formats, base, tok, prompt, cfg, args.repeats)
    print(f"\n{'side':<21} {'tokens/s':>9} {'chars/s':>9} {'ms/token':>9} {'best tok/s':>10}")
    for name, s in r["sides"].items():
        print(f"{name:<21} {s['tokens_per_s']:>9.1f} {s['chars_per_s']:>9.1f} {s['ms_per_token']:>9.2f} "
              f"{s['best_tokens_per_s']:>10.1f}")
    print(f"\n{'format':<9} {'MB/token':>8} {'roofline tok/s':>14} {'of roofline':>11} {'read GB/s':>9} "
          f"{'vs peer':>7}  peer; greedy tokens identical; kernels")
    for f, x in r["formats"].items():
        tps = r["sides"][f"miniglm {f}"]["tokens_per_s"]
        per_token = x["weight_bytes"] + x["kv_bytes"]
        roof = bandwidth / per_token
        agree = "n/a (sampling)" if args.sampling else (
            f"{100 * x['agree_peer']:.0f}% vs peer, {100 * x['agree_float32']:.0f}% vs our float32")
        print(f"{f:<9} {per_token / 1e6:>8.1f} {roof:>14.1f} {100 * tps / roof:>10.0f}% {tps * per_token / 1e9:>9.1f} "
              f"{x['ratio']:>6.2f}x  {x['peer']}; {agree}; {', '.join(x['kernels'])}")
    for f, x in r["formats"].items():
        if f != "float32" and "float32" in r["formats"] and not args.sampling:
            first = x["first_difference"]
            print(f"{f}: greedy generation identical to float32 " + (
                "throughout" if first is None else f"for the first {first} tokens"))
    if args.checkpoint and "int8" in r["formats"]:
        ids = tok.encode(corpus_slice(Path(args.data), 40_000))[:8 * base.config.max_position_embeddings]
        share = top1_agreement(base, "int8", ids, base.config.max_position_embeddings)
        print(f"int8: most likely next token = float32's at {100 * share:.1f}% of {len(ids):,} positions of the novels "
              f"(teacher-forced)")
    if "int8" in r["formats"] and "float32" in r["formats"]:
        print(f"int8 vs our float32: {r['sides']['miniglm int8']['tokens_per_s'] / r['sides']['miniglm float32']['tokens_per_s']:.2f}x")
    if args.profile:
        for f in formats:
            profile_decode(base, prompt, cfg, f)
    key = default if default in r["formats"] else formats[0]
    print(f"default format: {key} (what `miniglm sample` uses on this machine: --dtype auto -> {default})")
    print(f"ratio_vs_transformers: {r['formats'][key]['ratio']:.2f}")


if __name__ == "__main__":
    main()
