"""`miniglm prepare`: documents, split, token files that decode back to the input, bad input, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from miniglm.__main__ import main
from miniglm.config import PrepareConfig
from miniglm.data import DataError
from miniglm.data import prepare as prepare_mod
from miniglm.data.prepare import Corpus, capped_vocab_size, choose_val, prepare
from miniglm.data.store import token_dtype
from miniglm.data.text import read_documents, split_documents
from miniglm.tokenizer import EOT, Tokenizer

PRETRAIN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pretrain"
NUMERALS = "一二三四五六七八九十"


def chapters(n: int, seed: int = 0) -> str:
    """A small novel: n chapters of varied sentences (enough text for a tokenizer of a few hundred)."""
    words = "天下大势分久必合合久必分周末七国分争并入于秦及秦灭之后楚汉分争又并入于汉"
    out = []
    for c in range(n):
        body = "\n\n".join("".join(words[(seed + c * 7 + p * 3 + k) % len(words)] for k in range(40)) + "。"
                           for p in range(4))
        out.append(f"第{NUMERALS[c % 10]}回　标题{c}\n\n{body}\n")
    return "\n".join(out)


def decode_bin(out: Path, split: str) -> list[str]:
    """Documents of a .bin file: split at eot_id, decode each piece."""
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(out / "tokenizer.json")
    ids = np.fromfile(out / f"{split}.bin", dtype=meta["dtype"])
    assert len(ids) == meta[f"{split}_tokens"] and ids[-1] == meta["eot_id"]
    cuts = np.flatnonzero(ids == meta["eot_id"])
    return [tok.decode(ids[a + 1:b].tolist()) for a, b in zip([-1, *cuts[:-1]], cuts)]


def assert_partition(train: list[str], val: list[str], docs: list[str]) -> None:
    """train and val are complementary subsequences of docs (each in corpus order)."""
    ti = vi = 0
    for d in docs:
        if ti < len(train) and train[ti] == d:
            ti += 1
        elif vi < len(val) and val[vi] == d:
            vi += 1
        else:
            raise AssertionError(f"document not found in order: {d[:40]!r}")
    assert (ti, vi) == (len(train), len(val))


def assert_tiles(text: str, docs: list[str]) -> None:
    """The documents cover the text exactly, in order, with only whitespace between them."""
    pos = 0
    for d in docs:
        j = text.index(d, pos)
        assert text[pos:j].strip() == "", text[pos:j][:80]
        pos = j + len(d)
    assert text[pos:].strip() == ""


@pytest.fixture
def novel(tmp_path) -> Path:
    p = tmp_path / "in" / "novel.txt"
    p.parent.mkdir()
    p.write_text(chapters(10), encoding="utf-8")
    return p


# --------------------------------------------------------------------------- the full-data check


@pytest.mark.skipif(not PRETRAIN.is_dir(), reason=f"shared data not found at {PRETRAIN}")
def test_prepare_four_novels_decodes_to_the_input_minus_held_out_documents(tmp_path):
    files = sorted(PRETRAIN.glob("*.txt"))
    result = prepare([str(f) for f in files], tmp_path / "out", PrepareConfig(vocab_size=2000), progress=False)
    meta = result.meta
    docs: list[str] = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        file_docs, unit = read_documents(f, "chapter")
        assert unit == "chapter" and all(d.startswith("第") and "回" in d.split("\n")[0] for d in file_docs)
        assert_tiles(text, file_docs)
        docs += file_docs
    assert len(docs) == 460  # 100 + 120 + 120 + 120 chapters
    assert sum(map(len, docs)) > 3_000_000

    train, val = decode_bin(tmp_path / "out", "train"), decode_bin(tmp_path / "out", "val")
    assert len(val) == round(0.05 * 460) == meta["val_documents"] and len(train) == 460 - len(val)
    assert_partition(train, val, docs)
    assert meta["train_chars"] == sum(map(len, train)) and meta["val_chars"] == sum(map(len, val))
    # decoding the whole file at once gives the same text, documents joined (and ended) by the eot token
    tok = Tokenizer.from_file(tmp_path / "out" / "tokenizer.json")
    whole = tok.decode(np.fromfile(tmp_path / "out" / "val.bin", dtype=meta["dtype"]).tolist())
    assert whole == EOT.join(val) + EOT
    assert meta["vocab_size"] == tok.vocab_size == 2000 and meta["tokenizer_sha256"] == tok.sha256
    assert [s["documents"] for s in meta["sources"]] == [120, 120, 120, 100]
    assert 1.0 < meta["chars_per_token"] < 2.0


# --------------------------------------------------------------------------- documents


def test_chapter_split_keeps_preface_and_text_exactly():
    text = "序言一行\n\n第一回　甲\n\n  正文一\n第二回\n正文二\n\n\n第一百二十回 结局\n末\n第3章：三\n三\n\n"
    docs, unit = split_documents(text, "chapter")
    assert unit == "chapter"
    assert docs == ["序言一行", "第一回　甲\n\n  正文一", "第二回\n正文二", "第一百二十回 结局\n末", "第3章：三\n三"]
    assert_tiles(text, docs)


def test_lines_that_only_start_with_an_ordinal_are_not_headings():
    text = "第一回 开始\n正文\n第二日，他又来了。\n第三个好汉姓杨。\n" + "第一" + "回" * 70 + "\n"
    docs, _ = split_documents(text, "chapter")
    assert len(docs) == 1


def test_no_headings_falls_back_to_paragraphs():
    assert split_documents("甲段\n续\n\n\n乙段\n \n丙段\n", "chapter") == (["甲段\n续", "乙段", "丙段"], "paragraph")
    assert split_documents("一行\n二行\n三行", "chapter") == (["一行", "二行", "三行"], "paragraph")
    assert split_documents("  \n第一回 x\n\n正文\n", "document") == (["第一回 x\n\n正文"], "document")
    assert split_documents(" \n\n", "chapter") == ([], "paragraph")


def test_files_without_headings_are_split_into_paragraphs_and_reported(novel, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("第一段，没有回目。\n\n第二段。\n\n第三段。\n", encoding="utf-8")
    corpus = Corpus([novel, plain])
    assert [(s.documents, s.unit) for s in corpus.sources] == [(10, "chapter"), (3, "paragraph")]
    assert corpus.describe_units() == "unit chapter; 1 of 2 files have no chapter headings: paragraphs"
    assert len(Corpus([novel, plain], "document")) == 2


def test_bom_and_crlf_are_normalised(tmp_path):
    p = tmp_path / "w.txt"
    p.write_bytes("\ufeff第一回 甲\r\n正文\r\n第二回 乙\r正文二\r\n".encode())
    assert read_documents(p, "chapter") == (["第一回 甲\n正文", "第二回 乙\n正文二"], "chapter")


# --------------------------------------------------------------------------- split, vocabulary, dtype


def test_split_is_seeded_and_never_empty():
    assert choose_val(100, 0.1, 1) == choose_val(100, 0.1, 1)
    assert choose_val(100, 0.1, 1) != choose_val(100, 0.1, 2)
    assert len(choose_val(100, 0.1, 1)) == 10
    assert len(choose_val(3, 0.01, 1)) == 1  # at least one val document
    assert len(choose_val(2, 0.99, 1)) == 1  # at least one train document
    with pytest.raises(DataError, match="only 1 document: a train/val split needs at least 2"):
        choose_val(1, 0.5, 1)


def test_vocab_cap_and_dtype():
    assert capped_vocab_size(16000, 3_000_000) == 16000
    assert capped_vocab_size(16000, 800) == 258 + 100
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


# --------------------------------------------------------------------------- end to end on small inputs


def test_prepare_small_novel_round_trips_and_writes_config(novel, tmp_path):
    cfg = PrepareConfig(vocab_size=400, val_fraction=0.2, seed=7)
    result = prepare([novel], tmp_path / "out", cfg, progress=False)
    meta = result.meta
    docs, _ = read_documents(novel, "chapter")
    assert_partition(decode_bin(result.out, "train"), decode_bin(result.out, "val"), docs)
    assert meta["val_documents"] == 2 and meta["train_documents"] == 8
    assert meta["vocab_size"] <= min(400, 258 + meta["train_chars"] // 8)
    assert meta["split"] == {"rule": meta["split"]["rule"], "unit": "chapter", "seed": 7, "val_fraction": 0.2}
    assert json.loads((result.out / "config.json").read_text())["val_fraction"] == 0.2
    assert sorted(p.name for p in result.out.iterdir()) == sorted(prepare_mod.OUTPUT_FILES)


def test_same_seed_same_files_other_seed_other_split(novel, tmp_path):
    cfg = PrepareConfig(vocab_size=300, val_fraction=0.3, seed=11)
    a = prepare([novel], tmp_path / "a", cfg, progress=False).out
    b = prepare([novel], tmp_path / "b", cfg, progress=False).out
    for name in ("train.bin", "val.bin", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    c = prepare([novel], tmp_path / "c", PrepareConfig(vocab_size=300, val_fraction=0.3, seed=12), progress=False).out
    assert decode_bin(a, "val") != decode_bin(c, "val")


def test_directory_and_jsonl_inputs_with_given_tokenizer(novel, tmp_path):
    first = prepare([novel], tmp_path / "first", PrepareConfig(vocab_size=300), progress=False).out
    (novel.parent / "sub").mkdir()
    records = [{"text": "金庸\r\n射雕英雄传"}, {"text": "  "}, {"text": "😀 emoji & ASCII"}, {"text": "三\n\n四"}]
    (novel.parent / "sub" / "r.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n", encoding="utf-8")
    out = prepare([novel.parent], tmp_path / "out", PrepareConfig(val_fraction=0.5),
                  tokenizer=first / "tokenizer.json", progress=False).out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer_sha256"] == Tokenizer.from_file(first).sha256
    assert [Path(s["path"]).name for s in meta["sources"]] == ["novel.txt", "r.jsonl"]
    assert meta["sources"][1]["documents"] == 3
    assert meta["split"]["rule"].endswith("(unit chapter; 1 JSONL files: one document per record); "
                                          "each document is followed by eot_id")
    expected = read_documents(novel, "chapter")[0] + ["金庸\n射雕英雄传", "😀 emoji & ASCII", "三\n\n四"]
    assert_partition(decode_bin(out, "train"), decode_bin(out, "val"), expected)


# --------------------------------------------------------------------------- bad input


def test_missing_input(tmp_path):
    with pytest.raises(DataError, match="input not found: .*nope.txt"):
        prepare([tmp_path / "nope.txt"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_corpus(tmp_path):
    (tmp_path / "e.txt").write_text(" \n\n\u3000\n", encoding="utf-8")
    (tmp_path / "e.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty corpus: no text in .*e.txt"):
        prepare([tmp_path / "e.txt", tmp_path / "e.jsonl"], tmp_path / "out", progress=False)
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(DataError, match="directory holds no .txt or .jsonl files"):
        prepare([d], tmp_path / "out", progress=False)


def test_non_utf8_names_file_and_byte_offset(tmp_path):
    p = tmp_path / "gbk.txt"
    p.write_bytes("中ab".encode() + "中文".encode("gb18030"))  # the bad byte is the 6th
    with pytest.raises(DataError, match=r"gbk\.txt: not UTF-8 text \(invalid byte 0xd6 at offset 5\); "
                                        r"`miniglm fetch .*gbk\.txt` converts GB18030"):
        prepare([p], tmp_path / "out", progress=False)


@pytest.mark.parametrize("line, msg", [
    ('{"text": "ok"', "invalid JSON"),
    ('["text"]', 'expected an object with a string "text" field'),
    ('{"content": "x"}', 'expected an object with a string "text" field'),
])
def test_bad_jsonl_line_names_file_and_line(tmp_path, line, msg):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "一"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"c\.jsonl:3: {msg}"):
        Corpus([p])


def test_single_document_is_an_error_and_writes_nothing(tmp_path):
    p = tmp_path / "one.txt"
    p.write_text("只有一段。", encoding="utf-8")
    with pytest.raises(DataError, match="only 1 document"):
        prepare([p], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_failure_keeps_previous_outputs(novel, tmp_path, monkeypatch):
    out = prepare([novel], tmp_path / "out", PrepareConfig(vocab_size=300), progress=False).out
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff")
    with pytest.raises(DataError):
        prepare([novel, bad], out, progress=False)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prepare_mod, "build_meta", broken)  # fails after train.bin/val.bin were written
    with pytest.raises(RuntimeError, match="disk full"):
        prepare([novel], out, PrepareConfig(vocab_size=300, seed=5), progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(RuntimeError):
        prepare([novel], tmp_path / "fresh", PrepareConfig(vocab_size=300), progress=False)
    assert not (tmp_path / "fresh").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_prepare_summary_and_overrides(novel, tmp_path, capsys):
    toml = tmp_path / "p.toml"
    toml.write_text("max_steps = 5\n[prepare]\nvocab_size = 300\nseed = 3\n", encoding="utf-8")
    rc = main(["prepare", str(novel), "--out", str(tmp_path / "o"), "--config", str(toml), "--val-fraction", "0.3",
               "--seed=4", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "prepared 10 documents from 1 files" in out and "chars/token" in out and "MB/s" in out
    assert "train.bin" in out and "meta.json" in out
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert (cfg["vocab_size"], cfg["seed"], cfg["val_fraction"]) == (300, 4, 0.3)


@pytest.mark.parametrize("flag, msg", [
    ("--vocab-size=abc", "vocab_size: expected an integer, got 'abc'"),
    ("--val-fraction=1.5", "val_fraction: must be in (0, 1), got 1.5"),
    ("--split-on=book", "split_on: must be one of document, chapter, paragraph; got 'book'"),
])
def test_cli_prepare_bad_values_exit_2(novel, tmp_path, capsys, flag, msg):
    assert main(["prepare", str(novel), "--out", str(tmp_path / "o"), flag, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"miniglm prepare: error: {msg}\n"
    assert not (tmp_path / "o").exists()


def test_cli_prepare_missing_input_exit_2(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("miniglm prepare: error: input not found:")
