"""The `miniglm` entry point: `miniglm <command> [args]` -> `miniglm.cli.<command>.main(argv)`.

Each command lives in its own small module under `miniglm/cli/`, imported only when run, so
`miniglm --help` is instant and a command never pays for another's imports.
"""

from __future__ import annotations

import importlib
import os
import sys

# command -> (module under miniglm.cli, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch": ("fetch", "download a known corpus or any URL/local file into data/raw/<name>/"),
    "tokenizer": ("tokenizer", "train a byte-level BPE tokenizer on text files"),
    "prepare": ("prepare", "text -> tokenizer.json + train.bin/val.bin + meta.json"),
    "prepare-sft": ("prepare_sft", "Q&A JSONL/text -> fixed-length token rows + loss_mask"),
    "inspect-sft": ("inspect_sft", "show rendered SFT examples with the trained (masked) tokens highlighted"),
    "train": ("train", "pretrain or fine-tune (SFT); resumable; single process or torchrun"),
    "sample": ("sample", "generate completions from a checkpoint"),
    "chat": ("chat", "interactive terminal chat with a checkpoint"),
    "serve": ("serve", "OpenAI-compatible HTTP API (batched streaming) and, with --ui, a web chat page"),
    "eval": ("eval", "loss/perplexity/bits-per-char, Q&A scores and answer-quality checks"),
    "plot": ("plot", "loss and metric curves from run directories as PNG figures"),
    "export": ("export", "a checkpoint as a Hugging Face model directory or a GGUF file (llama.cpp)"),
    "judge": ("judge", "grade answers against references with an LLM judge; compare two checkpoints"),
    "arena": ("arena", "two models side by side in the browser, blind votes, leaderboard with intervals"),
    "demo": ("demo", "the whole pipeline on the bundled data, in one command"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: miniglm <command> [options]   (miniglm <command> --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from miniglm import __version__

        print(f"miniglm {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"miniglm: error: unknown command '{name}' (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    # Before numpy (and its OpenBLAS) loads: OpenBLAS's idle threads sleep after ~2^22 cycles (about
    # a millisecond) instead of ~0.1 s. Batch-1 decoding runs its products on them, and a thread
    # still spinning when torch's own threads start (a prefill, a batch, training) halves their
    # speed on a 2-core CPU (measured; see miniglm.model.kernels). The user's setting wins.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")
    module = importlib.import_module(f"miniglm.cli.{COMMANDS[name][0]}")
    from miniglm.cli.common import run_command

    return run_command(f"miniglm {name}", module.main, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
