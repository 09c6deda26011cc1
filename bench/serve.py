"""Benchmark: `miniglm serve` under 1, 4 and 16 concurrent streaming clients (continuous batching).

The `base` preset (6 layers, hidden 512, context 512) with random weights and a byte-level BPE of
--vocab-size trained on a slice of the novels, saved as a checkpoint and served by a real
`miniglm serve` process (default --max-batch 16, the dtype `miniglm sample` would use). Each of
C clients sends --rounds streaming /v1/completions requests one after another: a prompt of about
--prompt-tokens tokens cut from the novels, max_tokens=--new-tokens, SampleConfig's default
sampling with a per-request seed. The clients start together, so at C=16 every round the whole
batch prefills at once and later requests join a running batch.

Per level: aggregate generated tokens/s (all clients' completion tokens from `usage` / wall time of
the level), time to first token (request sent -> first chunk with text) p50 and p95, and requests
that ended early (end-of-text). Last line: `ratio_16_vs_1: X.XX`, aggregate tokens/s at 16 clients
over 1 client.

    python bench/serve.py            # miniglm installed or PYTHONPATH=.
    python bench/serve.py --quick    # a smaller vocabulary, 32 new tokens, one round (about a minute)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from miniglm.checkpoint import save_checkpoint
from miniglm.config import TrainConfig, load_config
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import train_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pretrain"
LEVELS = (1, 4, 16)


def corpus_slice(data: Path, chars: int) -> str:
    files = sorted(data.glob("*.txt"))
    if not files:
        raise SystemExit(f"no .txt files in {data} (pass --data)")
    return "\n".join(f.read_text(encoding="utf-8")[:chars // len(files)] for f in files)


def make_checkpoint(root: Path, text: str, vocab_size: int) -> Path:
    tok = train_tokenizer([text[i:i + 10_000] for i in range(0, len(text), 10_000)], vocab_size, show_progress=False)
    cfg = load_config(TrainConfig, "base").model
    cfg.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    model = MiniGLM(cfg)
    print(f"model: base preset, {model.num_params() / 1e6:.1f}M parameters, vocabulary {tok.vocab_size}")
    return save_checkpoint(root / "base" / "checkpoints" / "step_0000001", model, tok, step=1)


def start_server(ckpt: Path, max_batch: int, threads: int = 0) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "miniglm", "serve", f"base={ckpt}", "--port", "0", "--max-batch", str(max_batch),
           "--max-queue", "256", "--device", "cpu", "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    found = re.search(r"listening on (http://\S+:\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"miniglm serve did not start: {line}{proc.stdout.read()}")
    url = found.group(1)
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"miniglm serve exited: {proc.stdout.read()}")
        time.sleep(0.2)
    raise SystemExit("miniglm serve was not ready after 120 s")


async def one_request(http: httpx.AsyncClient, prompt: str, new_tokens: int, seed: int) -> tuple[float, int, str]:
    """(time to first token, completion tokens, finish_reason) of one streamed completion."""
    body = {"model": "base", "prompt": prompt, "max_tokens": new_tokens, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft, tokens, reason = None, 0, ""
    async with http.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {await r.aread()}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice["text"] and ttft is None:
                    ttft = time.perf_counter() - start
                reason = choice["finish_reason"] or reason
    return (ttft if ttft is not None else time.perf_counter() - start), tokens, reason


async def warm_up(url: str, prompt: str) -> None:
    """One short request first: weight packing and kernel choice happen outside the timings."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await one_request(http, prompt, 8, 0)


async def run_level(url: str, clients: int, rounds: int, prompts: list[str], new_tokens: int) -> dict:
    async def client(c: int, http: httpx.AsyncClient) -> list[tuple[float, int, str]]:
        return [await one_request(http, prompts[(c * rounds + k) % len(prompts)], new_tokens, seed=c * 1000 + k)
                for k in range(rounds)]

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        start = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(client(c, http) for c in range(clients))) for r in rs]
        wall = time.perf_counter() - start
    ttfts = sorted(t for t, _, _ in results)
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    tokens = sum(n for _, n, _ in results)
    return {"clients": clients, "requests": len(results), "tokens": tokens, "seconds": wall,
            "tokens_per_s": tokens / wall, "ttft_p50": statistics.median(ttfts), "ttft_p95": p95,
            "ended_early": sum(reason == "stop" for _, _, reason in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="vocabulary 4000, 32 new tokens, 1 round (a smoke run)")
    ap.add_argument("--vocab-size", type=int, default=16000, help="vocabulary size (default 16000)")
    ap.add_argument("--new-tokens", type=int, default=128, help="max_tokens of every request (default 128)")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="approximate prompt length (default 32)")
    ap.add_argument("--rounds", type=int, default=3, help="requests per client, one after another (default 3)")
    ap.add_argument("--max-batch", type=int, default=16, help="the server's --max-batch (default 16)")
    ap.add_argument("--threads", type=int, default=0, help="the server's --threads (default 0: torch's default)")
    ap.add_argument("--data", default=str(DATA), help="directory of .txt files for the tokenizer and prompts")
    ap.add_argument("--corpus-chars", type=int, default=1_000_000, help="characters of --data for the tokenizer")
    args = ap.parse_args()
    if args.quick:
        args.vocab_size, args.new_tokens, args.rounds = 4000, 32, 1
        args.corpus_chars = min(args.corpus_chars, 300_000)
    text = corpus_slice(Path(args.data), args.corpus_chars)
    span = 2 * args.prompt_tokens  # ~1.5-2 characters per token for Chinese BPE: a generous cut
    prompts = [text[i:i + span].replace("\n", "") for i in range(0, len(text) - span, len(text) // 64)][:64]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp), text, args.vocab_size)
        proc, url = start_server(ckpt, args.max_batch, args.threads)
        try:
            asyncio.run(warm_up(url, prompts[0]))
            print(f"serving at {url}; {args.new_tokens} new tokens per request, {args.rounds} round(s) per client, "
                  f"torch {torch.__version__}")
            print(f"{'clients':>7} {'requests':>8} {'tokens':>7} {'seconds':>8} {'tok/s':>8} {'TTFT p50':>9} "
                  f"{'TTFT p95':>9} {'ended early':>11}")
            results = {}
            for clients in LEVELS:
                r = asyncio.run(run_level(url, clients, args.rounds, prompts, args.new_tokens))
                results[clients] = r
                print(f"{clients:>7} {r['requests']:>8} {r['tokens']:>7} {r['seconds']:>8.2f} {r['tokens_per_s']:>8.1f} "
                      f"{r['ttft_p50']:>8.3f}s {r['ttft_p95']:>8.3f}s {r['ended_early']:>11}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"ratio_16_vs_1: {results[16]['tokens_per_s'] / results[1]['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
