"""Streaming prepare: the same documents, tokens and files as reading whole, in bounded memory."""

import json
import random
import tracemalloc
from pathlib import Path

import pytest

from miniglm.config import PrepareConfig
from miniglm.data import DataError, text
from miniglm.data import prepare as prep
from miniglm.data.text import iter_documents, read_documents, read_utf8, scan_layout
from miniglm.tokenizer import Tokenizer

BUNDLED = Path(__file__).resolve().parents[2] / "miniglm" / "assets" / "corpus"


@pytest.fixture
def tiny_corpus():
    return BUNDLED

PIECES = ["第一回 甲", "第2章：乙", "  第三回", "正文一段", "  ", "", "\u3000", "abc  ", "\r", "好😀", "第十回\t", " x "]
ENDS = ["\n", "\n", "\r\n", "\r", ""]


def random_text(rng: random.Random) -> str:
    body = "".join(rng.choice(PIECES) + rng.choice(ENDS) for _ in range(rng.randint(0, 14)))
    return ("\ufeff" if rng.random() < 0.2 else "") + body


@pytest.mark.parametrize("unit", ["document", "chapter", "paragraph"])
def test_streamed_documents_equal_whole_file_reading(tmp_path, unit):
    rng = random.Random(unit)
    path = tmp_path / "f.txt"
    for _ in range(300):
        path.write_bytes(random_text(rng).encode("utf-8"))
        expected = read_documents(path, unit)
        for chunk in (1, 3, 1 << 20):  # 1 byte cuts every UTF-8 sequence and every CRLF in two
            layout = scan_layout(path, unit, chunk)
            assert (list(iter_documents(path, layout, chunk)), layout.unit) == expected


def test_streamed_jsonl_records_and_their_errors(tmp_path):
    path = tmp_path / "wiki.jsonl"
    path.write_text('{"text": "甲\\r\\n乙"}\n\n{"text": "  \\n丙\\n"}\r\n{"text": " "}\n', encoding="utf-8")
    layout = scan_layout(path, "chapter")
    assert list(iter_documents(path, layout, 4)) == read_documents(path, "chapter")[0] == ["甲\n乙", "丙"]
    path.write_text('{"text": "a"}\n{"txt": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"wiki.jsonl:2: expected an object"):
        list(iter_documents(path, layout, 4))


def test_a_bad_byte_is_reported_at_its_file_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("第一回\n好".encode() + b"\xff" + "\n尾".encode())
    with pytest.raises(DataError) as whole:
        read_utf8(path)
    with pytest.raises(DataError) as streamed:
        list(text.iter_lines(path, 2))
    assert str(streamed.value) == str(whole.value) and "offset 13" in str(whole.value)


def test_long_documents_encode_in_pieces_to_the_same_tokens(tmp_path, tiny_corpus):
    cfg = PrepareConfig(vocab_size=400)
    tok = Tokenizer.from_file(prep.prepare([tiny_corpus], tmp_path / "p", cfg, progress=False).out / "tokenizer.json")
    assert prep.cuts_at_lines(tok)
    doc = "\n".join(["  缩进的一行", "第一回 甲", "", "话说天下大势，分久必合。 "] * 30)
    pieces = list(prep.line_pieces(doc, 40))
    assert len(pieces) > 3 and "".join(pieces) == doc
    assert all(p.endswith("\n") and not q[0].isspace() for p, q in zip(pieces, pieces[1:]))
    encoded = [ids for _, ids, _ in prep.encode_batches(tok, [doc, "短"], batch_size=1, chunk_chars=40)]
    assert [t for ids in encoded[:-1] for t in ids] == tok.encode(doc)


def test_prepare_output_is_identical_streamed_in_small_chunks(tmp_path, monkeypatch, tiny_corpus):
    cfg = PrepareConfig(vocab_size=400, val_fraction=0.2)
    whole = prep.prepare([tiny_corpus], tmp_path / "whole", cfg, progress=False)
    monkeypatch.setattr(text, "READ_CHUNK", 7)
    monkeypatch.setattr(prep, "ENCODE_CHUNK_CHARS", 50)
    small = prep.prepare([tiny_corpus], tmp_path / "small", PrepareConfig(vocab_size=400, val_fraction=0.2,
                                                                          encode_batch_size=2), progress=False)
    for name in ("tokenizer.json", "train.bin", "val.bin"):
        assert (whole.out / name).read_bytes() == (small.out / name).read_bytes(), name
    assert whole.meta == small.meta


def test_tokenizer_trained_on_a_seeded_sample(tmp_path, tiny_corpus):
    full = prep.Corpus([tiny_corpus])
    cfg = PrepareConfig(vocab_size=400, tokenizer_sample_mb=sum(full.doc_bytes) / 3e6)
    val = prep.choose_val(len(full), cfg.val_fraction, cfg.seed)
    picked = prep.tokenizer_documents(full, val, cfg)
    assert picked == prep.tokenizer_documents(full, val, cfg)  # seeded: the same sample every time
    assert picked and picked < set(range(len(full))) - val
    assert prep.tokenizer_documents(full, val, PrepareConfig(tokenizer_sample_mb=1e6)) == set(range(len(full))) - val
    out = prep.prepare([tiny_corpus], tmp_path / "s", cfg, progress=False)
    assert out.meta["train_documents"] + out.meta["val_documents"] == len(full)  # all text is still encoded
    assert out.meta["tokenizer_trained_on"] == {"documents": len(picked),
                                                "chars": sum(full.doc_chars[i] for i in picked)}


def _peak_python_bytes(tmp_path, megabytes: float) -> int:
    """Peak Python memory of counting and streaming the documents of a corpus of this size."""
    chapter = "第一回 甲乙\n" + "话说天下大势，分久必合，合久必分。\n" * 200
    path = tmp_path / f"c{megabytes}.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(int(megabytes * 1e6 / len(chapter.encode()))):
            f.write(chapter)
    tracemalloc.start()
    corpus = prep.Corpus([path])
    chars = sum(map(len, corpus.documents()))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert chars == corpus.chars
    return peak


def test_memory_stays_bounded_as_the_corpus_grows(tmp_path):
    # both larger than one read block (text.READ_CHUNK, 1 MB), so the peak is that of the block
    small, large = _peak_python_bytes(tmp_path, 2), _peak_python_bytes(tmp_path, 10)
    print(f"peak Python memory: 2 MB corpus {small / 1e6:.2f} MB, 10 MB corpus {large / 1e6:.2f} MB")
    assert large < 1.5 * small  # read whole, the 10 MB corpus would peak near 5x


def test_prepare_meta_still_names_each_file_unit(tmp_path):
    (tmp_path / "a.txt").write_text("第一回 甲\n正文\n第二回 乙\n正文\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "一\n二"}) + "\n", encoding="utf-8")
    corpus = prep.Corpus([tmp_path])
    assert [s.unit for s in corpus.sources] == ["chapter", "record"]
    assert list(corpus.documents()) == ["第一回 甲\n正文", "第二回 乙\n正文", "一\n二"]
