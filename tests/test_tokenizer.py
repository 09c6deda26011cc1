"""Tokenizer: exact round-trips of any text, fixed special ids, loading errors, `miniglm tokenizer train`."""

from __future__ import annotations

import json

import pytest

from miniglm.__main__ import main
from miniglm.data.prepare import train_corpus_tokenizer
from miniglm.tokenizer import EOT, PAD, Tokenizer, TokenizerError, train_tokenizer

CORPUS = [
    "话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。",
    "却说张飞拍马赶到关下，关上矢石如雨，不得进而回。",
    "The quick brown fox jumps over the lazy dog. 1234567890",
    "宝玉听了，喜不自禁。黛玉笑道：“你又来了。”",
] * 20

NASTY = [
    "",
    "中文 and ASCII mixed, 数字123，标点！？",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇨🇳🏳️‍🌈",
    "CJK Ext-B 𠀀𠀁𪚥 Ext-A 㐀 compatibility 豈 and 〇",
    "combining e\u0301 a\u0308\u0323 Hangul 한국어 jamo \u1100\u1161",
    "controls \x00\x01\x07\x1b[0m\x7f NBSP\xa0 ZWJ\u200d ZWSP\u200b BOM\ufeff RTL \u202eabc",
    "windows\r\nline\rends\n\ttabs\t\t  spaces   \n\n",
    "replacement \ufffd private \ue000 astral \U0010fffd",
    "   leading and trailing spaces   ",
    f"special token text {EOT} {PAD} inside",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(iter(CORPUS), vocab_size=400, show_progress=False)


@pytest.mark.parametrize("text", NASTY)
def test_round_trip_is_exact(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_of_every_case_in_one_batch(tok):
    assert [tok.decode(ids) for ids in tok.encode_batch(NASTY)] == NASTY
    assert tok.encode_batch(NASTY) == [tok.encode(t) for t in NASTY]


def test_unseen_characters_still_encode_without_unknown_token(tok):
    ids = tok.encode("𠀀")  # 4 UTF-8 bytes never seen in training -> byte tokens
    assert len(ids) == 4 and all(i >= 2 for i in ids)


def test_special_tokens_have_fixed_ids(tok):
    assert (tok.eot_id, tok.pad_id) == (0, 1)
    assert tok.hf.token_to_id(EOT) == 0 and tok.hf.token_to_id(PAD) == 1
    assert tok.decode([0, 1]) == EOT + PAD
    assert tok.decode([0, 1], skip_special_tokens=True) == ""


def test_save_and_load_keep_ids_and_hash(tok, tmp_path):
    path = tok.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.from_file(tmp_path)  # a directory holding tokenizer.json works too
    assert loaded.sha256 == tok.sha256 and loaded.vocab_size == tok.vocab_size
    assert loaded.encode(NASTY[1]) == tok.encode(NASTY[1])
    assert loaded.path == path


def test_vocab_is_capped_for_a_tiny_corpus():
    small = train_corpus_tokenizer(iter(CORPUS[:4]), 4, sum(map(len, CORPUS[:4])), 16000, 2, progress=False)
    assert small.vocab_size <= 258 + sum(map(len, CORPUS[:4])) // 8
    big = train_corpus_tokenizer(iter(CORPUS), len(CORPUS), sum(map(len, CORPUS)), 300, 2, progress=False)
    assert big.vocab_size == 300


@pytest.mark.parametrize("content, msg", [
    ("{not json", "not a valid tokenizer.json"),
    ('{"version": "1.0", "model": {"type": "Nope"}}', "not a valid tokenizer.json"),
])
def test_bad_tokenizer_file_is_a_tokenizer_error(tmp_path, content, msg):
    p = tmp_path / "tokenizer.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerError, match=msg):
        Tokenizer.from_file(p)


def test_tokenizer_without_end_token_and_missing_file(tok, tmp_path):
    data = json.loads(tok.hf.to_str())
    data["added_tokens"] = []
    del data["model"]["vocab"][EOT]
    del data["model"]["vocab"][PAD]
    p = tmp_path / "noeot.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"no end-of-text token \(<\|endoftext\|>\) in .*noeot.json"):
        Tokenizer.from_file(p)
    with pytest.raises(TokenizerError, match="tokenizer file not found"):
        Tokenizer.from_file(tmp_path / "absent.json")


def test_cli_tokenizer_train_reports_vocab_and_chars_per_token(tmp_path, capsys):
    src = tmp_path / "c.txt"
    src.write_text("\n\n".join(CORPUS), encoding="utf-8")
    out = tmp_path / "new_dir" / "t.json"
    assert main(["tokenizer", "train", str(src), "--out", str(out), "--vocab-size", "300", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    tok = Tokenizer.from_file(out)
    assert f"vocab {tok.vocab_size:,} (requested 300)" in printed
    text = src.read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n")]
    tokens = sum(len(ids) for ids in tok.encode_batch(docs))
    assert f"{sum(map(len, docs)) / tokens:.3f} chars/token on the training text ({tokens:,} tokens)" in printed


def test_cli_tokenizer_errors_exit_2(tmp_path, capsys):
    assert main(["tokenizer", "train", str(tmp_path), "--vocab-size", "100"]) == 2
    assert capsys.readouterr().err == "miniglm tokenizer: error: vocab_size: must be >= 258, got 100\n"
    assert main(["tokenizer", "train", str(tmp_path / "none.txt")]) == 2
    assert "input not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["tokenizer"])
    assert e.value.code == 2
