"""`miniglm sample`: completions (or chat answers) from a checkpoint, printed and optionally saved.

    miniglm sample runs/small --prompt "话说天下大势" --max_new_tokens 100
    miniglm sample runs/small --prompt-file prompts.txt --num-samples 3 --output samples.jsonl
    miniglm sample runs/sft --chat --prompt "什么是长江？" --temperature 0

Prompts come from --prompt, or --prompt-file (one prompt per line; blank lines skipped); without
either, one unconditional sample starts from the end-of-text token. With --chat each prompt is a
question rendered with the chat template. A single sample on a terminal streams as it is
generated; otherwise prompts are generated in batches of --batch-size. Sample j of every prompt
is drawn with seed + j (whatever batch it lands in), so repeated samples differ and the same
command gives the same output. The last line reports throughput (tokens/s, chars/s) over the
whole run.
"""

from __future__ import annotations

import contextlib
import json
import stat
import sys
import time
from pathlib import Path

from miniglm.cli.common import Parser
from miniglm.config import SampleConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.errors import UserError
from miniglm.io import check_output_dir, check_writable_target, write_output
from miniglm.tokenizer import ASSISTANT_PREFIX, USER_PREFIX


def build_parser() -> Parser:
    p = Parser(prog="miniglm sample", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (its best checkpoint) or a checkpoint directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", metavar="TEXT", help="the prompt to continue (a question with --chat)")
    src.add_argument("--prompt-file", metavar="FILE", help="UTF-8 text file with one prompt per line")
    p.add_argument("--num-samples", type=int, default=1, metavar="N", help="samples per prompt (default 1)")
    p.add_argument("--stop", action="append", default=[], metavar="STR",
                   help="stop when the text contains STR (cut before it); repeatable; \\n and \\t are understood")
    p.add_argument("--output", metavar="FILE",
                   help="also write every sample as one JSON object per line (- = stdout; a device or FIFO "
                        "is written to directly, a regular file replaced atomically)")
    p.add_argument("--chat", action="store_true", help="treat prompts as questions in the chat template")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="prompts generated together when not streaming (default 8)")
    add_config_arguments(p, SampleConfig)
    return p


def unescape(text: str) -> str:
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def read_prompts(args) -> list[str]:
    if args.prompt is not None:
        return [args.prompt]
    if args.prompt_file is None:
        return [""]
    path = Path(args.prompt_file)
    if not path.is_file():
        raise UserError(f"prompt file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise UserError(f"{path}: no prompts (expected one prompt per line)")
    return prompts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_samples < 1 or args.batch_size < 1:
        raise UserError("--num-samples and --batch-size must be >= 1")
    cfg = load_config(SampleConfig, overrides=overrides_from_args(args))
    if args.output and args.output != "-" and not is_special(Path(args.output)):
        check_writable_target(Path(args.output))  # now, not after generating
        check_output_dir(Path(args.output).parent)
    prompts = read_prompts(args)
    stop = [unescape(s) for s in args.stop]
    from miniglm.generate import text as textgen

    loaded = textgen.load_for_generation(args.run_dir, cfg)
    jobs = [(i, j, prompt) for i, prompt in enumerate(prompts) for j in range(args.num_samples)]
    # with --output - the JSONL owns stdout: the readable text and the summary go to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.output == "-" else contextlib.nullcontext():
        streaming = len(jobs) == 1 and sys.stdout.isatty()
        start = time.perf_counter()
        records = []
        for chunk in ([jobs[k:k + args.batch_size] for k in range(0, len(jobs), args.batch_size)]
                      if not streaming else [jobs]):
            records += run_chunk(loaded, chunk, cfg, stop, args.chat, streaming)
        wall = time.perf_counter() - start
    if args.output:
        write_output(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tokens = sum(r["new_tokens"] for r in records)
    chars = sum(len(r["text"]) for r in records)
    print(f"{len(records)} sample(s): {tokens} tokens, {chars} chars in {wall:.2f} s -> "
          f"{tokens / wall:.1f} tokens/s, {chars / wall:.1f} chars/s", file=sys.stderr if args.output == "-" else None)
    return 0


def run_chunk(loaded, chunk, cfg: SampleConfig, stop, chat: bool, streaming: bool) -> list[dict]:
    """Generate one batch of (prompt index, sample index, prompt) jobs; print them; their records."""
    import dataclasses

    from miniglm.generate import text as textgen

    model, tok = loaded.model, loaded.tokenizer
    texts = [prompt for _, _, prompt in chunk]
    for i, j, prompt in chunk:  # once per prompt, on stderr: the output itself stays clean
        ids = tok.render_prompt([], prompt) if chat else tok.encode(prompt)
        note = j == 0 and textgen.cut_notice(len(ids), model.config.max_position_embeddings, cfg.max_new_tokens,
                                             f"prompt {i + 1}")
        if note:
            print(note, file=sys.stderr)
    seeds = [cfg.seed + j for _, j, _ in chunk]
    if streaming:
        i, j, prompt = chunk[0]
        print_header(i, j, prompt, chat)
        one = dataclasses.replace(cfg, seed=seeds[0])
        stream = (textgen.stream_answer if chat else textgen.stream_complete)(model, tok, prompt, one, stop=stop)
        for piece in stream:
            print(piece, end="", flush=True)
        print()
        gens = [stream.generation]
    else:
        gens = (textgen.answer_batch if chat else textgen.complete_batch)(model, tok, texts, cfg, stop, seeds)
        for (i, j, prompt), gen in zip(chunk, gens):
            print_header(i, j, prompt, chat)
            print(gen.text, flush=True)
    return [{"prompt_index": i, "sample": j, "prompt": prompt, "text": g.text, "finish_reason": g.finish_reason,
             "prompt_tokens": g.prompt_tokens, "new_tokens": len(g.token_ids), "seconds": round(g.seconds, 4),
             "first_token_seconds": g.first_token_seconds, "tokens_per_second": round(g.tokens_per_second, 2),
             "chars_per_second": round(g.chars_per_second, 2), "seed": seed, "chat": chat}
            for (i, j, prompt), g, seed in zip(chunk, gens, seeds)]


def print_header(i: int, j: int, prompt: str, chat: bool) -> None:
    print(f"--- prompt {i + 1}, sample {j + 1} ---")
    print(USER_PREFIX + prompt + ASSISTANT_PREFIX if chat else prompt, end="", flush=True)


def is_special(path: Path) -> bool:
    """A device or FIFO (e.g. /dev/stdout): written to directly by `write_output`, never replaced."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


if __name__ == "__main__":
    sys.exit(main())
