"""`miniglm chat`: talk to a checkpoint in the terminal, answers streamed as they are generated.

    miniglm chat runs/sft                    # an SFT model: multi-turn chat in the chat template
    miniglm chat runs/small --mode complete  # a pretrained model: each line is continued as text

Chat mode keeps the conversation: each question is rendered after the earlier turns with the
tokenizer's chat template; when they no longer fit the context, the oldest turns are dropped
first (the current question always stays). Complete mode continues each line on its own.
--mode auto (the default) picks complete for a checkpoint the trainer marked as pretraining and
chat otherwise. Commands: /reset forgets the conversation, /exit (or Ctrl-D) quits, /help.
Ctrl-C stops the answer being generated. After each answer one line reports prompt and new
tokens, time, tokens/s and chars/s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from miniglm.cli.common import Parser
from miniglm.config import SampleConfig, add_config_arguments, load_config, overrides_from_args
from miniglm.tokenizer import ASSISTANT_PREFIX, USER_PREFIX

HELP = "/reset forgets the conversation, /exit (or Ctrl-D) quits, /help shows this"


def build_parser() -> Parser:
    p = Parser(prog="miniglm chat", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (its best checkpoint) or a checkpoint directory")
    p.add_argument("--mode", choices=["auto", "chat", "complete"], default="auto",
                   help="chat (SFT models), complete (pretrained models: continue each line), "
                        "or auto: from the checkpoint's training mode (default)")
    p.add_argument("--stop", action="append", default=[], metavar="STR",
                   help="also stop an answer at STR (repeatable; \\n and \\t are understood)")
    add_config_arguments(p, SampleConfig)
    return p


def is_utf8(line: str) -> bool:
    """False for a line read with errors="surrogateescape" that held bytes invalid in UTF-8."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def pick_mode(requested: str, meta: dict) -> str:
    if requested != "auto":
        return requested
    return "complete" if meta.get("mode") == "pretrain" else "chat"


class ChatSession:
    """The conversation state and one turn of it; `turn` writes the streamed answer with `write`."""

    def __init__(self, model, tokenizer, cfg: SampleConfig, mode: str, stop: list[str],
                 write: Callable[[str], None]):
        self.model, self.tokenizer, self.cfg, self.mode, self.stop = model, tokenizer, cfg, mode, stop
        self.write = write
        self.history: list[tuple[str, str]] = []

    def reset(self) -> None:
        self.history = []

    def turn(self, line: str) -> None:
        from miniglm.generate import text as textgen

        if self.mode == "chat":
            ids, dropped = textgen.chat_prompt(self.tokenizer, self.history, line,
                                               self.model.config.max_position_embeddings, self.cfg.max_new_tokens)
            if dropped:
                self.write(f"[the {dropped} oldest turn(s) no longer fit the context and were dropped]\n")
                self.history = self.history[dropped:]
            note = textgen.cut_notice(len(ids), self.model.config.max_position_embeddings, self.cfg.max_new_tokens,
                                      "the question")
            if note:
                print(note, file=sys.stderr)
            stream = textgen.stream_answer(self.model, self.tokenizer, line, self.cfg, self.history, self.stop)
            self.write(ASSISTANT_PREFIX.lstrip("\n"))
        else:
            stream = textgen.stream_complete(self.model, self.tokenizer, line, self.cfg, self.stop)
        try:
            for piece in stream:
                self.write(piece)
        except KeyboardInterrupt:
            stream.close()
            self.write("\n[stopped]\n")
            return
        gen = stream.generation
        if self.mode == "chat":
            self.history.append((line, gen.text))
        self.write(f"\n[prompt {gen.prompt_tokens} tokens, {len(gen.token_ids)} new tokens ({gen.finish_reason}) "
                   f"in {gen.seconds:.2f} s: {gen.tokens_per_second:.1f} tokens/s, "
                   f"{gen.chars_per_second:.1f} chars/s]\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(SampleConfig, overrides=overrides_from_args(args))
    from miniglm.cli.sample import unescape
    from miniglm.generate import text as textgen

    loaded = textgen.load_for_generation(args.run_dir, cfg)
    mode = pick_mode(args.mode, loaded.meta)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    session = ChatSession(loaded.model, loaded.tokenizer, cfg, mode, [unescape(s) for s in args.stop], write)
    try:
        import readline  # noqa: F401  (line editing for input() on a terminal)
    except ImportError:  # pragma: no cover - not on every platform
        pass
    write(f"MiniGLM {mode} mode, {loaded.path} (step {loaded.meta.get('step')}). {HELP}.\n")
    prompt = USER_PREFIX if mode == "chat" else "> "
    if hasattr(sys.stdin, "reconfigure"):  # bad bytes reach us as surrogates, not as a decode error mid-read
        sys.stdin.reconfigure(errors="surrogateescape")
    while True:
        try:
            line = input(prompt).strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return 0
        if not line:
            continue
        if not is_utf8(line):
            write("[that line is not UTF-8 text; skipped (check the terminal's encoding)]\n")
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            session.reset()
            write("[conversation cleared]\n")
        elif line == "/help":
            write(HELP + "\n")
        elif line.startswith("/") and " " not in line:
            write(f"[unknown command {line}; {HELP}]\n")
        else:
            session.turn(line)


if __name__ == "__main__":
    sys.exit(main())
