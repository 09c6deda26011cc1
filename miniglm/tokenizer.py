"""Byte-level BPE tokenizer (Hugging Face `tokenizers`) and the ONE chat template.

Owns: training a tokenizer on a corpus, loading any `tokenizer.json`, the special tokens, and how a
conversation becomes token ids (`render_conversation` for training with its loss mask,
`render_prompt` for generation). Nothing else in MiniGLM formats a conversation.

The template is the course's: every turn is `问：{question}\n答：` followed by `{answer}` and the
end-of-text token; the loss mask is 1 exactly on the answer tokens and that end token. The pieces
are encoded separately and concatenated, so the mask comes from the spans recorded while
rendering, never from searching the token stream, and a prompt at inference time tokenizes
exactly like the same prefix did in training.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from miniglm.errors import UserError

EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [EOT, PAD]
USER_PREFIX = "问："
ASSISTANT_PREFIX = "\n答："


def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode` (the byte-level alphabet): printable bytes stand for
    themselves, the other bytes for the characters 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(others)}


def with_system(system: str, question: str) -> str:
    """The template has no system slot: a system message goes in front of the first question, so the
    instruction sits exactly where a question does (the rule for SFT data and for served chats)."""
    return f"{system}\n{question}" if system else question


class TokenizerError(UserError, ValueError):
    """A missing or unusable tokenizer file."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Tokenizer:
    """A thin wrapper over `tokenizers.Tokenizer` with MiniGLM's special tokens and template."""

    def __init__(self, hf_tokenizer, path: str | Path | None = None):
        self.hf = hf_tokenizer
        self.path = Path(path) if path else None
        self.eot_id = self._special_id(EOT, ["</s>", "<|im_end|>", "<eos>"])
        pad = self.hf.token_to_id(PAD)
        self.pad_id = pad if pad is not None else self.eot_id

    def _special_id(self, name: str, fallbacks: list[str]) -> int:
        for tok in [name, *fallbacks]:
            idx = self.hf.token_to_id(tok)
            if idx is not None:
                return idx
        where = f" in {self.path}" if self.path else ""
        raise TokenizerError(f"tokenizer has no end-of-text token ({name}){where}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
        return cls(hf, path)

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json at `path` (atomically); `self.path` keeps naming where it was loaded from."""
        from miniglm.io import atomic_write

        path = atomic_write(path, self.to_json())
        if self.path is None:
            self.path = path
        return path

    @property
    def sha256(self) -> str:
        """Hash of the serialized tokenizer: identifies it in data and checkpoint metadata."""
        return hashlib.sha256(self.hf.to_str().encode("utf-8")).hexdigest()

    def id_to_token(self, idx: int) -> str | None:
        """The vocabulary entry of an id, in the tokenizer's own alphabet (byte-level: GPT-2's)."""
        return self.hf.id_to_token(idx)

    def to_json(self) -> str:
        """The whole tokenizer as `tokenizer.json` text (what `save` writes)."""
        return self.hf.to_str(pretty=True)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts on all cores (the Rust side parallelises the batch)."""
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, rows: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
        return self.hf.decode_batch([list(r) for r in rows], skip_special_tokens=skip_special_tokens)

    @functools.cached_property
    def token_bytes(self) -> list[bytes] | None:
        """id -> the bytes it stands for, if this is a byte-level tokenizer (special tokens -> b"").

        None for other tokenizers (e.g. a foreign tokenizer.json with a different decoder).
        Lets a streaming decoder work byte by byte without re-decoding windows of ids.
        """
        if type(self.hf.decoder).__name__ != "ByteLevel":
            return None
        to_byte = _unicode_to_byte()
        added = self.hf.get_added_tokens_decoder()
        table = []
        for i in range(self.vocab_size):
            if i in added:
                table.append(b"" if added[i].special else added[i].content.encode("utf-8"))
                continue
            piece = self.hf.id_to_token(i) or ""
            if any(ch not in to_byte for ch in piece):
                return None
            table.append(bytes(to_byte[ch] for ch in piece))
        return table

    # ------------------------------------------------------------------ the chat template
    def render_conversation(self, turns: Sequence[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """[(question, answer), ...] -> (ids, mask); mask is 1 on answer tokens and each end token."""
        ids: list[int] = []
        mask: list[int] = []
        for question, answer in turns:
            prompt = self.encode(USER_PREFIX + question + ASSISTANT_PREFIX)
            reply = self.encode(answer) + [self.eot_id]
            ids += prompt + reply
            mask += [0] * len(prompt) + [1] * len(reply)
        return ids, mask

    def render_prompt(self, history: Sequence[tuple[str, str]], question: str) -> list[int]:
        """Ids of past turns plus the new question, ending right where the answer begins."""
        ids, _ = self.render_conversation(history)
        return ids + self.encode(USER_PREFIX + question + ASSISTANT_PREFIX)


def train_tokenizer(texts: Iterable[str] | Iterator[str], vocab_size: int, min_frequency: int = 2,
                    show_progress: bool = True, length: int | None = None) -> Tokenizer:
    """Train a byte-level BPE on an iterator of texts.

    The vocabulary stops growing when no pair occurs `min_frequency` times, so a tiny corpus gets
    a small vocabulary instead of thousands of useless merges. Byte-level means every UTF-8 string
    (emoji, rare characters) round-trips exactly, with no unknown token.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    hf.train_from_iterator(texts, trainer=trainer, length=length)
    return Tokenizer(hf)
