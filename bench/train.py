"""Training throughput: MiniGLM's trainer step vs a plain loop over `transformers.LlamaForCausalLM`.

    python bench/train.py                       # base preset, context 512, 8,192 tokens per step
    python bench/train.py --dtype both --steps 5 --vocab 50000

For each dtype (float32, bfloat16 autocast, or both) and each contender, one child process builds
the same model (the `base` preset: 6 layers, hidden 512, 8 heads, intermediate 1408, context 512;
vocabulary `--vocab`, default 50,000: the reference model of the issue, ~45M parameters, and
the setting of its reference numbers; `--vocab 16000` is our tokenizer's default for the novels;
transformers gets our initial weights, copied by identical names), runs `--warmup` optimizer
steps that are not timed, then `--steps` timed ones, each `--micro-batch` x 512 tokens x
`--accum` micro-batches (default 4 x 512 x 4 = 8,192 tokens). Both use fused AdamW, gradient
clipping at 1.0 and the same autocast; ours runs `miniglm.train.step.Stepper.step` (the trainer's own
step), transformers a textbook `loss = model(input_ids, labels=...).loss; loss.backward()` loop.

Printed per run: tokens/s (median step), peak memory (CPU: peak RSS of the child;
CUDA: max_memory_allocated), and MFU against one peak per dtype for all contenders: on a CPU the
measured rate of a 1024^2 matmul in that dtype through the fastest GEMM available (see
miniglm.train.mfu), on a GPU the spec-sheet bf16 peak; the peaks are printed too. The last line is `ratio_vs_transformers: X.XX` for
the default dtype (the trainer's default: what dtype=auto picks on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASE = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=1408,
            max_position_embeddings=512)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "both"],
                   help="autocast dtype; auto = the trainer's default on this machine; both = float32 and bfloat16")
    p.add_argument("--vocab", type=int, default=50000,
                   help="vocabulary size (50,000: the issue's reference base model, ~45M parameters; "
                        "16,000 is what `miniglm prepare` builds for the bundled novels)")
    p.add_argument("--block-size", type=int, default=512, help="context length T")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per micro-batch")
    p.add_argument("--accum", type=int, default=4, help="micro-batches per optimizer step")
    p.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--only", choices=["ours", "transformers", "transformers+alloc"], help="run one contender only")
    p.add_argument("--no-alloc-baseline", action="store_true",
                   help="skip the transformers run with our allocator setting")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one measurement, print JSON
    return p.parse_args(argv)


# --------------------------------------------------------------------------- one measurement (child)


def measure(args, who: str, dtype_name: str) -> dict:
    import torch

    from miniglm.config import ModelConfig
    from miniglm.device import resolve_device, tune_cpu_allocator
    from miniglm.model.model import MiniGLM
    from miniglm.train.mfu import model_flops_per_token
    from miniglm.train.step import Stepper

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu" and who != "transformers":
        tune_cpu_allocator()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    torch.manual_seed(0)
    ours = MiniGLM(ModelConfig(vocab_size=args.vocab, **BASE))
    flops = model_flops_per_token(ours, args.block_size)
    model = ours if who == "ours" else transformers_twin(ours)
    model.to(device).train()
    net = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type in ("cpu", "cuda"))
    B, T = args.micro_batch, args.block_size
    gen = torch.Generator().manual_seed(1)

    def batches():
        while True:
            x = torch.randint(0, args.vocab, (B, T + 1), generator=gen).to(device)
            yield x[:, :-1], x[:, 1:], None

    it = batches()
    if who == "ours":
        stepper = Stepper(net, optimizer, device, dtype, args.accum, grad_clip=1.0)

        def step():
            stepper.step(it, 1e-4)[0].item()
            stepper.apply()
    else:
        def step():
            for _ in range(args.accum):
                x, _, _ = next(it)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    loss = net(input_ids=x, labels=x).loss  # labels are shifted inside the model
                (loss / args.accum).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    tokens = B * T * args.accum
    tps = tokens / statistics.median(times)
    memory = (torch.cuda.max_memory_allocated() if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"who": who, "dtype": dtype_name, "tokens_per_sec": tps, "best_tokens_per_sec": tokens / min(times),
            "step_seconds": times, "peak_memory": memory, "memory_kind": "CUDA max allocated"
            if device.type == "cuda" else "peak RSS", "flops_per_token": flops, "params": ours.num_params(),
            "threads": torch.get_num_threads(), "device": str(device)}


def transformers_twin(ours):
    """`LlamaForCausalLM` with our config and our initial weights (copied by identical names)."""
    import transformers

    c = ours.config
    cfg = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
        intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps, rope_theta=c.rope_theta, tie_word_embeddings=c.tie_word_embeddings,
        attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(cfg)
    model.load_state_dict(ours.state_dict(), strict=False)  # tied lm_head comes with the embedding
    return model


# --------------------------------------------------------------------------- driver


def run_child(args, who: str, dtype: str) -> dict:
    argv = [a for a in sys.argv[1:] if not a.startswith("--child")]
    cmd = [sys.executable, __file__, *argv, "--child", f"{who}:{dtype}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"{who} {dtype} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def matmul_peak(args, dtype_name: str) -> tuple[float, str]:
    """The device's peak FLOP/s in `dtype_name` (see miniglm.train.mfu), measured here with the children's threads."""
    import torch

    from miniglm.device import resolve_device
    from miniglm.train.mfu import peak_flops

    if args.threads:
        torch.set_num_threads(args.threads)
    return peak_flops(resolve_device(args.device), getattr(torch, dtype_name))


def default_device(device_name: str) -> str:
    from miniglm.device import resolve_device

    return resolve_device(device_name).type


def default_dtype(device_name: str) -> str:
    from miniglm.device import resolve_device, resolve_dtype

    return str(resolve_dtype("auto", resolve_device(device_name))).removeprefix("torch.")


def report(r: dict) -> str:
    return (f"{r['who']:<18} {r['dtype']:<9} {r['tokens_per_sec']:>8,.0f} tokens/s (best {r['best_tokens_per_sec']:,.0f})"
            f"  step {statistics.median(r['step_seconds']):6.2f} s  {r['memory_kind']} "
            f"{r['peak_memory'] / 2**30:5.2f} GiB  MFU {100 * r['mfu']:5.1f}%")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        who, dtype = args.child.split(":")
        print(json.dumps(measure(args, who, dtype)))
        return 0
    default = default_dtype(args.device)
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [default if args.dtype == "auto" else args.dtype]
    contenders = [args.only] if args.only else ["ours", "transformers"] + (
        [] if args.no_alloc_baseline or default_device(args.device) != "cpu" else ["transformers+alloc"])
    tokens = args.micro_batch * args.block_size * args.accum
    print(f"base preset, vocab {args.vocab:,}, context {args.block_size}, {tokens:,} tokens per step "
          f"({args.micro_batch} x {args.block_size} x {args.accum} micro-batches), {args.warmup} warm-up + "
          f"{args.steps} timed steps{', torch.compile' if args.compile else ''}; default dtype here: {default}",
          flush=True)
    ratios = {}
    for dtype in dtypes:
        peak, source = matmul_peak(args, dtype)  # one reference for every contender
        results = {}
        for who in contenders:
            results[who] = r = run_child(args, who, dtype)
            r["mfu"] = r["tokens_per_sec"] * r["flops_per_token"] / peak
            print(report(r), flush=True)
        r = next(iter(results.values()))
        print(f"  ({r['params'] / 1e6:.1f}M parameters, {r['flops_per_token'] / 1e6:.0f} MFLOP per token, "
              f"MFU against {peak / 1e12:.2f} TFLOP/s: {source}, {r['threads']} threads)")
        if "ours" in results and "transformers" in results:
            ratios[dtype] = results["ours"]["tokens_per_sec"] / results["transformers"]["tokens_per_sec"]
            print(f"  ratio ours/transformers in {dtype}: {ratios[dtype]:.2f}", flush=True)
        if "ours" in results and "transformers+alloc" in results:
            tuned = results["ours"]["tokens_per_sec"] / results["transformers+alloc"]["tokens_per_sec"]
            print(f"  ratio ours/(transformers with our allocator setting) in {dtype}: {tuned:.2f}", flush=True)
    if ratios:
        key = default if default in ratios else next(iter(ratios))
        print(f"ratio_vs_transformers: {ratios[key]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
