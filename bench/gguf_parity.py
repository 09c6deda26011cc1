"""Benchmark: llama.cpp (through llama-cpp-python) against MiniGLM on an exported GGUF file.

Tokenization: --strings random strings (Chinese, CJK and ASCII punctuation, other scripts, emoji
incl. ZWJ/flag/skin-tone sequences, combining marks, whitespace runs of every kind, control and
zero-width characters, contractions, the special tokens and broken halves of them) plus a fixed
list of adversarial ones and lines of the bundled corpus, each tokenized by MiniGLM (`encode`,
which always splits special tokens) and by llama.cpp (`tokenize(add_bos=False, special=True)`);
then llama.cpp's detokenization of MiniGLM's ids is compared with the original text.
Generation: greedy continuations of plain and chat-template prompts, MiniGLM's engine vs llama.cpp
evaluating token by token; at each step the largest logit difference is recorded, and where the
two pick different tokens the gap between MiniGLM's top two logits is shown (a near tie means
rounding, a large gap a bug).

    python bench/gguf_parity.py                        # a tokenizer trained on the bundled corpus, random model
    python bench/gguf_parity.py runs/sft --dtype q8_0  # a real run, quantized

Needs `pip install llama-cpp-python` (builds llama.cpp from source) and `gguf`. Prints counts and
the first mismatches; the last line is `token_mismatches: N / M, greedy_equal: K / P, max_logit_diff: X`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from miniglm.config import ModelConfig, SampleConfig
from miniglm.export.gguf import export_gguf
from miniglm.export.source import Source, load_source
from miniglm.generate import engine
from miniglm.tokenizer import EOT, PAD, Tokenizer, train_tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "miniglm" / "assets" / "corpus"
POOLS = {
    "cjk": [chr(c) for c in range(0x4E00, 0x9FA6, 37)] + ["𠀀", "𪚥", "〇"],
    "cjk_punct": list("，。！？：；“”‘’（）《》【】、…—·「」『』～") + ["……", "——", "：“", "。”", "！”"],
    "ascii": list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    "ascii_punct": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "words": ["the", " the", "Hello", " world", "don't", "it's", "I'LL", "we've", "'s", "'t", "'re", "'d", " 's"],
    "digits": ["0", "12", "345", "2024", "3.14", "１２３", "٣٤", "½", "²", "Ⅻ"],
    "space": [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", "\u3000", "\xa0", "\u2009", " \n ", "\t \t", "\x0b", "\x0c",
              "\x85", "\u1680", "\u2028", "\u202f", "\u205f", "\x1c", "\u180e"],  # edges of what counts as \s
    "emoji": ["😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇨🇳", "❤️", "★", "☆", "✓", "🤖", "\U0001FAE0"],
    "scripts": ["Привет", "مرحبا", "नमस्ते", "こんにちは", "カタカナ", "안녕하세요", "Γειά", "สวัสดี", "שלום", "ê", "ñ"],
    "marks": ["e\u0301", "a\u0308", "\u0301", "\u200b", "\u200d", "\ufeff", "\x00", "\x1b", "\x7f", "\ue000", "\U000e0041"],
    "special": [EOT, PAD, "<|endoftext", "<|", "|>", "<|endoftext|><|endoftext|>", "<|pad|>x", "问：", "\n答："],
}
ADVERSARIAL = ["", " ", "  ", "\n", " \n", "\n ", "a  b", "a\n\nb", "hello   ", "   hello", "x \t\ny", "',.", "''s",
               "'ss", " 's", "'S", "问：你好\n答：你好！<|endoftext|>问：再见\n答：", "道：“好。”", "1234567890" * 3,
               "😀" * 5, "\u3000\u3000正文", "\r\n\r\n", "a\u0301\u0302\u0303", "<|endoftext|>" * 3, "<<|endoftext|>>",
               "\ufeffBOM", "ＡＢＣ１２３", "e=mc²", "C++/C#", "http://x.y/z?a=1&b=2", "—" * 10]


def parity_strings(n: int, seed: int = 0) -> list[str]:
    """`n` random strings of 1-12 pieces from random pools, after the adversarial list and corpus lines."""
    rng = random.Random(seed)
    lines = [ln for f in sorted(CORPUS.glob("*.txt")) for ln in f.read_text(encoding="utf-8").splitlines() if ln]
    out = ADVERSARIAL + rng.sample(lines, min(200, len(lines)))
    pools = list(POOLS.values())
    while len(out) < n:
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 12))))
    return out[:n]


def compare_tokenization(llm, tok: Tokenizer, strings: list[str], show: int = 5) -> tuple[int, int]:
    """(token mismatches, detokenization mismatches); prints the first `show` of each."""
    bad_ids, bad_text = 0, 0
    for s in strings:
        ours = tok.encode(s)
        theirs = llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
        if ours != theirs:
            bad_ids += 1
            if bad_ids <= show:
                print(f"  tokens differ for {s!r}:\n    miniglm   {ours}\n    llama.cpp {theirs}")
        text = llm.detokenize(ours, special=True).decode("utf-8", errors="replace")
        if text != tok.decode(ours):
            bad_text += 1
            if bad_text <= show:
                print(f"  detokenized text differs for {s!r}: llama.cpp gives {text!r}")
    return bad_ids, bad_text


def greedy_llama_cpp(llm, prompt: list[int], n: int, eot: int) -> tuple[list[int], list[np.ndarray]]:
    llm.reset()
    llm.eval(prompt)
    out, logits = [], []
    for _ in range(n):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        logits.append(row)
        t = int(row.argmax())
        if t == eot:
            break
        out.append(t)
        llm.eval([t])
    return out, logits


@dataclass
class Greedy:
    same: bool  # the same new tokens
    max_diff: float  # largest |logit difference| over the steps that saw the same tokens on both sides
    tie_gap: float | None  # where the tokens first differ: MiniGLM's top-2 logit gap (a near tie = rounding)


def compare_generation(llm, src: Source, prompts: list[list[int]], n: int) -> list[Greedy]:
    model, tok = src.loaded.model, src.loaded.tokenizer
    cfg = SampleConfig(temperature=0, max_new_tokens=n, repetition_penalty=1.0, top_k=0, top_p=1.0)
    results = []
    for ids in prompts:
        [ours] = engine.generate(model, [ids], cfg, eot_id=tok.eot_id)
        theirs, their_logits = greedy_llama_cpp(llm, ids, n, tok.eot_id)
        with torch.no_grad():
            our_logits = model(torch.tensor([ids + ours.tokens]))[0][0, len(ids) - 1:].double().numpy()
        k = next((i for i, (a, b) in enumerate(zip(ours.tokens + [-1], theirs + [-1])) if a != b), None)
        steps = min(len(their_logits), len(our_logits), len(ours.tokens) + 1 if k is None else k + 1)
        diff = max(float(np.abs(our_logits[i] - their_logits[i]).max()) for i in range(steps))
        line = f"  prompt of {len(ids)} tokens: {len(ours.tokens)} new, max |logit diff| {diff:.2e}, "
        if k is None:
            results.append(Greedy(True, diff, None))
            print(line + "same tokens")
        else:
            top2 = np.sort(our_logits[k])[-2:]
            results.append(Greedy(False, diff, float(top2[1] - top2[0])))
            print(line + f"first different token at {k} (MiniGLM top-2 logit gap there {top2[1] - top2[0]:.2e})")
    return results


def demo_source(root: Path, vocab_size: int, seed: int) -> Source:
    """A tokenizer trained on the bundled corpus and a random 4-layer model, as a checkpoint."""
    from miniglm.checkpoint import save_checkpoint
    from miniglm.model.model import MiniGLM

    texts = [f.read_text(encoding="utf-8") for f in sorted(CORPUS.glob("*.txt"))]
    tok = train_tokenizer(texts, vocab_size=vocab_size, min_frequency=2, show_progress=False)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=352, max_position_embeddings=256, initializer_range=0.1)
    save_checkpoint(root / "demo" / "checkpoints" / "step_0000000", MiniGLM(cfg), tok, step=0)
    return load_source(root / "demo")


def run(source: Source, dtype: str, n_strings: int, n_tokens: int, seed: int,
        workdir: Path) -> tuple[int, int, list[Greedy]]:
    """(strings whose ids differ, strings compared, one Greedy per prompt)."""
    from llama_cpp import GGML_TYPE_F32, Llama

    tok, cfg = source.loaded.tokenizer, source.loaded.model.config
    path = export_gguf(source, workdir / f"parity-{dtype}.gguf", dtype=dtype, overwrite=True)
    # logits_all: llama-cpp-python (0.3.x) keeps an eval()'s logits in `scores` only with it on.
    # An f32 KV cache (llama.cpp's default is f16) so that logit differences measure the file.
    llm = Llama(model_path=str(path), n_ctx=cfg.max_position_embeddings, n_threads=2, verbose=False,
                logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    strings = parity_strings(n_strings, seed)
    t0 = time.perf_counter()
    bad_ids, bad_text = compare_tokenization(llm, tok, strings)
    print(f"tokenization: {len(strings) - bad_ids}/{len(strings)} strings give identical ids, "
          f"{len(strings) - bad_text}/{len(strings)} identical detokenized text ({time.perf_counter() - t0:.1f} s)")
    questions = ["你好", "宝玉是谁？", "Tell me a story."]
    prompts = [tok.encode(s) for s in ["天地玄黄，宇宙洪荒。", "话说天下大势，分久必合", "The quick brown"]]
    prompts += [tok.render_prompt([], q) for q in questions] + [tok.render_prompt([("你好", "你好！")], "再见")]
    results = compare_generation(llm, source, prompts, n_tokens)
    ties = [f"{r.tie_gap:.1e}" for r in results if not r.same]
    print(f"greedy generation ({dtype}): {sum(r.same for r in results)}/{len(prompts)} prompts give the same "
          f"{n_tokens} tokens; max |logit diff| {max(r.max_diff for r in results):.1e}"
          + (f"; the others part at top-2 gaps {', '.join(ties)}" if ties else ""))
    return bad_ids, len(strings), results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", help="run or checkpoint directory (default: a demo model, see above)")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "q8_0"], help="GGUF dtype (default f32)")
    ap.add_argument("--strings", type=int, default=5000, help="strings to tokenize (default 5000)")
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt (default 32)")
    ap.add_argument("--vocab-size", type=int, default=4000, help="demo tokenizer size (default 4000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        src = load_source(args.source) if args.source else demo_source(Path(tmp), args.vocab_size, args.seed)
        bad, total, results = run(src, args.dtype, args.strings, args.tokens, args.seed, Path(tmp))
    print(f"token_mismatches: {bad} / {total}, greedy_equal: {sum(r.same for r in results)} / {len(results)}, "
          f"max_logit_diff: {max(r.max_diff for r in results):.2e}")


if __name__ == "__main__":
    main()
