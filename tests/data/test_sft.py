"""SFT data: formats, the mask (checked by decoding), the truncation rule, packing, errors, CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from miniglm.__main__ import main as miniglm_main
from miniglm.config import SFTDataConfig
from miniglm.data import store
from miniglm.data.sft import (
    ELLIPSIS,
    SFTDataError,
    build_rows,
    prepare_sft,
    render_example,
    row_stats,
)
from miniglm.data.sft_input import BadInput, read_examples
from miniglm.tokenizer import EOT, Tokenizer, train_tokenizer


def load_split(directory, split):
    """(ids, mask, meta) of one split, through the format's one reader."""
    meta = store.read_meta(directory, "sft")
    return (*store.open_rows(directory, split, meta), meta)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# Original text for the tiny tokenizer and the examples (not copied from anywhere).
QA = [
    ("孙悟空的师父是谁？", "孙悟空的师父是唐僧，他一路保护师父去西天取经。"),
    ("猪八戒有什么兵器？", "猪八戒用的是九齿钉耙，力气很大。"),
    ("林黛玉住在哪里？", "林黛玉住在大观园里的潇湘馆，院中种着许多竹子。"),
    ("诸葛亮为什么出名？", "诸葛亮足智多谋，草船借箭和空城计都是他的故事。"),
    ("宋江在梁山做什么？", "宋江是梁山泊的首领，众好汉都听他的号令。"),
    ("贾宝玉身上带着什么？", "贾宝玉出生时口中衔着一块通灵宝玉，一直带在身上。"),
]
CORPUS = [q + a for q, a in QA] * 8 + ["问：答：你好，请问这是什么？这是一个很小的测试语料。"] * 8


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    t = train_tokenizer(CORPUS, vocab_size=400, show_progress=False)
    t.save(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    return t


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def qa_file(tmp_path: Path, pairs=QA, name: str = "qa.jsonl") -> Path:
    return write_jsonl(tmp_path / name, [{"question": q, "answer": a} for q, a in pairs])


def trained_runs(tok: Tokenizer, ids_row: np.ndarray, mask_row: np.ndarray) -> list[str]:
    """Decode each contiguous run of masked target positions y[t] (mask[t] == 1) to text."""
    y = ids_row[1:]
    runs, cur = [], []
    for t, m in enumerate(mask_row):
        if m:
            cur.append(int(y[t]))
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def prepare(tmp_path, tok, inputs, **cfg_kw):
    cfg = SFTDataConfig(**{"block_size": 64, "val_fraction": 0.0, **cfg_kw})
    out = tmp_path / "sft"
    result = prepare_sft(inputs, tok, out, cfg, progress=False)
    ids, mask, meta = load_split(out, "train")
    return result, np.asarray(ids), np.asarray(mask), meta


# --------------------------------------------------------------------------- the mask


def test_mask_covers_exactly_answer_and_end_token(tmp_path, tok):
    result, ids, mask, meta = prepare(tmp_path, tok, [qa_file(tmp_path)])
    assert ids.shape == (len(QA), 65) and mask.shape == (len(QA), 64) and mask.dtype == np.uint8
    assert ids.dtype == np.uint16 and meta["dtype"] == "uint16"
    seen = set()
    for r in range(len(ids)):
        runs = trained_runs(tok, ids[r], mask[r])
        assert len(runs) == 1
        seen.add(runs[0])
        stats = row_stats(ids[r], mask[r], tok.pad_id)
        text = tok.decode(ids[r, : stats["content"]])
        q = text.removeprefix("问：").split("\n答：")[0]
        assert text == f"问：{q}\n答：{dict(QA)[q]}{EOT}"
        assert (ids[r, stats["content"]:] == tok.pad_id).all() and stats["padding"] > 0
        assert not mask[r, stats["content"] - 1:].any()  # padding never counts
    assert seen == {a + EOT for _, a in QA}
    assert meta["counts"]["answer_tokens"] == int(mask.sum())
    assert meta["counts"]["answer_tokens"] == sum(len(tok.encode(a)) + 1 for _, a in QA)


def test_multi_turn_masks_every_assistant_turn(tmp_path, tok):
    msgs = [{"role": "system", "content": "请简短回答。"}]
    for q, a in QA[:3]:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    _, ids, mask, _ = prepare(tmp_path, tok, [write_jsonl(tmp_path / "mt.jsonl", [{"messages": msgs}])],
                              block_size=256)
    assert trained_runs(tok, ids[0], mask[0]) == [a + EOT for _, a in QA[:3]]
    assert tok.decode(ids[0]).startswith("问：请简短回答。\n" + QA[0][0] + "\n答：")


def test_multi_turn_too_long_drops_oldest_turns(tok):
    turns = tuple(QA[:4])
    full = tok.render_conversation(turns)[0]
    last_two = tok.render_conversation(turns[2:])[0]
    r = render_example(tok, turns, block_size=len(last_two) - 1 + 2)
    assert len(full) > len(last_two) + 2 and r is not None
    assert r.truncated and r.turns == turns[2:] and r.ids == last_two


# --------------------------------------------------------------------------- the truncation rule


def test_long_question_keeps_beginning_and_end(tok):
    question = "这是开头。" + "很长的问题内容" * 40 + "最后的问题是什么？"
    answer = QA[0][1]
    r = render_example(tok, ((question, answer),), block_size=64)  # room for the whole answer
    assert r is not None and r.truncated and len(r.ids) <= 65
    (q, a), = r.turns
    assert q.startswith("这是开头") and q.endswith("是什么？") and ELLIPSIS in q and a == answer
    answer_ids = tok.encode(answer) + [tok.eot_id]
    assert r.ids[-len(answer_ids):] == answer_ids and sum(r.mask) == len(answer_ids)  # answer intact


def test_long_answer_tail_is_cut_without_end_token(tok):
    question, answer = QA[1][0], "钉耙" * 200
    r = render_example(tok, ((question, answer),), block_size=64)
    prompt = tok.render_prompt([], question)
    assert len(prompt) <= 32  # within the question budget (block_size // 2): the question stays whole
    assert r is not None and r.truncated and len(r.ids) == 65
    assert r.ids[: len(prompt)] == prompt and r.mask == [0] * len(prompt) + [1] * (65 - len(prompt))
    assert tok.eot_id not in r.ids


def test_example_without_room_for_an_answer_is_skipped_and_counted(tmp_path, tok):
    # The row fits the prompt of a one-character question plus exactly one answer token; a long
    # question cut to one character still needs more tokens ("…" is added), leaving no answer room.
    block_size = len(tok.render_prompt([], "好"))
    pairs = [("好", "好的，这个回答只剩一个字。"), ("好" + "没有空间" * 30, "这个回答放不下。")]
    assert len(tok.render_prompt([], "好" + ELLIPSIS)) > block_size
    result, ids, mask, _ = prepare(tmp_path, tok, [qa_file(tmp_path, pairs)], block_size=block_size,
                                   max_question_tokens=100)
    c = result.meta["counts"]
    assert c["skipped"] == 1 and c["examples"] == 1 and c["examples_read"] == 2 and c["truncated"] == 1
    assert mask.tolist() == [[0] * (block_size - 1) + [1]]  # the kept one keeps exactly one answer token
    assert tok.decode(ids[0]).startswith("问：好\n答：")


# --------------------------------------------------------------------------- formats


def test_every_input_format(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [
        {"question": " 问题一 ", "answer": "回答一"},
        {"instruction": "翻译", "input": "hello", "output": "你好"},
        {"instruction": "说一句话", "input": "", "output": "好的"},
        {"messages": [{"role": "user", "content": "甲"}, {"role": "assistant", "content": "乙"},
                      {"role": "user", "content": "丙"}, {"role": "assistant", "content": "丁"}]},
    ])
    assert [e.turns for e in read_examples(tmp_path / "a.jsonl")] == [
        (("问题一", "回答一"),), (("翻译\nhello", "你好"),), (("说一句话", "好的"),), (("甲", "乙"), ("丙", "丁"))]
    (tmp_path / "b.json").write_text(json.dumps([{"question": "q", "answer": "a"}]), encoding="utf-8")
    assert [e.turns for e in read_examples(tmp_path / "b.json")] == [(("q", "a"),)]
    (tmp_path / "c.txt").write_text("问：第一个问题\n答：第一行\n\n第二行\n\n问:第二个\n问题\n答:短\n", encoding="utf-8")
    examples = read_examples(tmp_path / "c.txt")
    assert [e.turns for e in examples] == [(("第一个问题", "第一行\n\n第二行"),), (("第二个\n问题", "短"),)]
    assert [e.where for e in examples] == [f"{tmp_path / 'c.txt'}:1", f"{tmp_path / 'c.txt'}:6"]


BAD_CASES = [
    ("bad_json", b'{"question": "q", "answer": "a"}\n{"question": "q2", "answer": \n', 2, "invalid JSON"),
    ("missing", b'{"question": "q", "answer": "a"}\n\n{"question": "q2"}\n', 3, "missing field 'answer'"),
    ("empty", b'{"question": "q", "answer": "  "}\n', 1, "empty field 'answer'"),
    ("non_string", b'{"question": "q", "answer": "a"}\n{"question": "q", "answer": 42}\n', 2,
     "must be a string, got int"),
    ("non_utf8", b'{"question": "q", "answer": "a"}\n{"question": "\xff\xfe", "answer": "a"}\n', 2, "not UTF-8"),
    ("unknown", b'{"prompt": "q", "completion": "a"}\n', 1, "unknown record format"),
    ("not_object", b'["q", "a"]\n', 1, "expected a JSON object"),
    ("bad_role", b'{"messages": [{"role": "assistant", "content": "a"}]}\n', 1, "expected role 'user'"),
    ("no_answer", b'{"messages": [{"role": "user", "content": "q"}]}\n', 1, "must end with an assistant"),
]


@pytest.mark.parametrize("name,data,lineno,reason", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_malformed_input_names_file_and_line(tmp_path, tok, capsys, name, data, lineno, reason):
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(data)
    with pytest.raises(SFTDataError) as e:
        read_examples(path)
    assert str(e.value).startswith(f"{path}:{lineno}: ") and reason in str(e.value)
    out = tmp_path / "out"
    rc = miniglm_main(["prepare-sft", str(path), "--tokenizer", str(tok.path), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"{path}:{lineno}: " in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written


def test_text_format_errors_and_empty_file(tmp_path):
    cases = {"pre.txt": ("前言\n问：q\n答：a\n", 1, "text before the first 问"),
             "noans.txt": ("问：q\n答：a\n问：只有问题\n", 3, "without a following 答"),
             "empty.txt": ("  \n\n", None, "empty file")}
    for name, (text, lineno, reason) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SFTDataError, match=reason) as e:
            read_examples(path)
        assert str(e.value).startswith(f"{path}:{lineno}: " if lineno else f"{path}: ")
    path = tmp_path / "latin1.txt"
    path.write_bytes("问：好\n答：第一行\n".encode() + b"\xe9t\xe9\n" + "问：二\n答：好的\n".encode())
    with pytest.raises(SFTDataError, match="not UTF-8") as e:
        read_examples(path)
    assert str(e.value).startswith(f"{path}:3: ")
    bad = BadInput()
    assert [x.turns for x in read_examples(path, skip_bad=True, bad=bad)] == [(("二", "好的"),)]
    assert bad.count == 1 and bad.messages[0].startswith(f"{path}:3: ")
    (tmp_path / "data.csv").write_text("q,a\n", encoding="utf-8")
    with pytest.raises(SFTDataError, match="unknown format"):
        read_examples(tmp_path / "data.csv")


def test_skip_bad_counts_and_continues(tmp_path, tok):
    path = tmp_path / "mixed.jsonl"
    good = [json.dumps({"question": q, "answer": a}, ensure_ascii=False).encode() for q, a in QA[:2]]
    path.write_bytes(b"\n".join([good[0], b"{broken", b'{"question": 1, "answer": "a"}', b"\xff", good[1]]) + b"\n")
    result, _, _, _ = prepare(tmp_path, tok, [path], skip_bad=True)
    c = result.meta["counts"]
    assert c["bad_lines"] == 3 and c["examples"] == 2 and result.meta["sources"][0]["bad_lines"] == 3
    assert [m.split(": ")[0] for m in result.bad_messages] == [f"{path}:{n}" for n in (2, 3, 4)]


# --------------------------------------------------------------------------- dedup, overlap, split, packing


def test_dedup_and_eval_overlap(tmp_path, tok):
    src = qa_file(tmp_path, QA + QA[:2])
    evalf = write_jsonl(tmp_path / "eval.jsonl", [{"question": QA[0][0], "answer": "x"},
                                                  {"question": " " + QA[3][0], "answer": "y"},
                                                  {"question": "不在训练集里", "answer": "z"}])
    cfg = SFTDataConfig(block_size=64, val_fraction=0.0)
    c = prepare_sft([src], tok, tmp_path / "d", cfg, eval_file=evalf, progress=False).meta["counts"]
    assert c["duplicates_removed"] == 2 and c["examples"] == len(QA) and c["eval_overlap"] == 2
    cfg = SFTDataConfig(block_size=64, val_fraction=0.0, dedup=False)
    c = prepare_sft([src], tok, tmp_path / "d", cfg, progress=False).meta["counts"]
    assert c["duplicates_removed"] == 0 and c["examples"] == len(QA) + 2 and c["eval_overlap"] is None


def test_split_is_seeded_deterministic_and_by_example(tmp_path, tok):
    pairs = [(f"第{i}个问题：{q}", a) for i in range(5) for q, a in QA]
    src = qa_file(tmp_path, pairs)

    def run(seed, name):
        cfg = SFTDataConfig(block_size=64, val_fraction=0.2, seed=seed)
        prepare_sft([src], tok, tmp_path / name, cfg, progress=False)
        return [np.asarray(load_split(tmp_path / name, s)[0]) for s in ("train", "val")]

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    train, val = a
    assert len(val) == 6 and len(train) == 24
    assert not {tuple(r) for r in train} & {tuple(r) for r in val}


def test_packing_keeps_each_answer_masked_once_and_padding_out(tmp_path, tok):
    plain = prepare(tmp_path, tok, [qa_file(tmp_path)], block_size=96)
    result, ids, mask, meta = prepare(tmp_path, tok, [qa_file(tmp_path)], block_size=96, pack=True)
    assert meta["pack"] and len(ids) < len(QA) and result.meta["counts"]["train_examples"] == len(QA)
    runs = [run for r in range(len(ids)) for run in trained_runs(tok, ids[r], mask[r])]
    assert sorted(runs) == sorted(a + EOT for _, a in QA)
    assert int(mask.sum()) == int(plain[2].sum())
    for r in range(len(ids)):
        pad = ids[r, 1:] == tok.pad_id
        assert not mask[r][pad].any()
        text = tok.decode(ids[r, : row_stats(ids[r], mask[r], tok.pad_id)["content"]])
        assert text.startswith("问：") and text.endswith(EOT)


def test_build_rows_aligns_mask_with_shifted_targets():
    from miniglm.data.sft import Rendered

    ex = Rendered(ids=[5, 6, 7, 8, 9], mask=[0, 0, 1, 1, 1], truncated=False, turns=(("q", "a"),))
    ids, mask = build_rows([ex], block_size=7, pad_id=1, dtype=np.uint16)
    assert ids.tolist() == [[5, 6, 7, 8, 9, 1, 1, 1]]
    assert mask.tolist() == [[0, 1, 1, 1, 0, 0, 0]]  # mask[t] belongs to y[t] = ids[t + 1]


# --------------------------------------------------------------------------- directory, CLI, inspect


def test_cli_prepare_writes_directory_and_inspect_marks_answers(tmp_path, tok, capsys):
    out = tmp_path / "prepared"
    rc = miniglm_main(["prepare-sft", str(qa_file(tmp_path)), "--tokenizer", str(tok.path.parent),
                       "--out", str(out), "--block-size=48", "--val-fraction", "0.2", "--no-progress"])
    assert rc == 0 and "prepared SFT data" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "meta.json", "tokenizer.json", "train_ids.npy",
                                                     "train_mask.npy", "val_ids.npy", "val_mask.npy"]
    meta = store.read_meta(out)
    assert meta["block_size"] == 48 and meta["tokenizer_sha256"] == tok.sha256
    assert Tokenizer.from_file(out / "tokenizer.json").sha256 == tok.sha256
    assert json.loads((out / "config.json").read_text())["block_size"] == 48
    assert meta["counts"]["train_rows"] + meta["counts"]["val_rows"] == len(QA)

    assert miniglm_main(["inspect-sft", str(out), "-n", "10", "--no-color"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("\n答：⟦") == meta["counts"]["train_rows"] and "\x1b[" not in shown
    assert shown.count(f"{EOT}⟧") == meta["counts"]["train_rows"]
    assert "trained" in shown and "padding" in shown
    assert miniglm_main(["inspect-sft", str(out), "--split", "val", "--rows", "99"]) == 2
    assert "out of range" in capsys.readouterr().err

    (tmp_path / "notsft").mkdir()
    (tmp_path / "notsft" / "keep.txt").write_text("x")
    rc = miniglm_main(["prepare-sft", str(qa_file(tmp_path)), "--tokenizer", str(tok.path),
                       "--out", str(tmp_path / "notsft"), "--no-progress"])
    assert rc == 2 and (tmp_path / "notsft" / "keep.txt").exists()


def test_inspect_marks_every_answer(tmp_path, tok, capsys):
    out = tmp_path / "p"
    prepare_sft([qa_file(tmp_path)], tok, out, SFTDataConfig(block_size=64, val_fraction=0.0), progress=False)
    assert miniglm_main(["inspect-sft", str(out), "-n", str(len(QA))]) == 0
    shown = capsys.readouterr().out  # not a tty: plain markers
    for _, a in QA:
        assert f"答：⟦{a}{EOT}⟧" in shown


def test_prepare_sft_help_describes_flags(capsys):
    with pytest.raises(SystemExit) as e:
        miniglm_main(["prepare-sft", "--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0
    for flag in ("--tokenizer", "--out", "--eval-file", "--block-size", "--skip-bad", "--pack", "--config"):
        assert flag in text


def test_config_file_and_preset_feed_prepare_sft(tmp_path, tok, capsys):
    src = qa_file(tmp_path)
    # The `sft` training preset: its top-level block_size applies, its training keys are ignored.
    args = [str(src), "--tokenizer", str(tok.path), "--no-progress"]
    assert miniglm_main(["prepare-sft", *args, "--out", str(tmp_path / "a"), "--config", "sft"]) == 0
    assert store.read_meta(tmp_path / "a")["block_size"] == 128
    toml = tmp_path / "data.toml"
    toml.write_text("block_size = 200\n[prepare_sft]\nblock_size = 96\npack = true\n", encoding="utf-8")
    assert miniglm_main(["prepare-sft", *args, "--out", str(tmp_path / "b"), "--config", str(toml)]) == 0
    meta = store.read_meta(tmp_path / "b")
    assert meta["block_size"] == 96 and meta["pack"] is True
    assert miniglm_main(["prepare-sft", *args, "--out", str(tmp_path / "c"), "--config", str(toml),
                         "--block-size", "80", "--pack=false"]) == 0
    meta = store.read_meta(tmp_path / "c")
    assert meta["block_size"] == 80 and meta["pack"] is False
    assert miniglm_main(["prepare-sft", *args, "--out", str(tmp_path / "d"), "--block-size", "4"]) == 2
    assert "block_size" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_format_row_color_and_plain(tok):
    from miniglm.data.sft import MARK_COLOR, Rendered, format_row

    ids, mask = tok.render_conversation([QA[0]])
    row_ids, row_mask = build_rows([Rendered(ids, mask, False, (QA[0],))], 64, tok.pad_id, np.uint16)
    plain = format_row(tok, row_ids[0], row_mask[0])
    assert plain == f"问：{QA[0][0]}\n答：⟦{QA[0][1]}{EOT}⟧"
    colored = format_row(tok, row_ids[0], row_mask[0], color=True)
    assert colored == f"问：{QA[0][0]}\n答：{MARK_COLOR[0]}{QA[0][1]}{EOT}{MARK_COLOR[1]}"
    assert row_stats(row_ids[0], row_mask[0], tok.pad_id) == {
        "tokens": 65, "content": len(ids), "trained": sum(mask), "padding": 65 - len(ids)}


@pytest.mark.skipif(not (SHARED / "sft" / "alpaca_zh_demo_qa.jsonl").is_file(),
                    reason="shared data (../shared/data/sft) not present")
def test_prepare_real_alpaca_file(tmp_path):
    path = SHARED / "sft" / "alpaca_zh_demo_qa.jsonl"
    texts = [json.loads(line)["answer"] for line in path.read_text(encoding="utf-8").splitlines()[:200]]
    tok = train_tokenizer(texts, vocab_size=1000, show_progress=False)
    result = prepare_sft([path], tok, tmp_path / "alpaca", SFTDataConfig(block_size=128), progress=False)
    c = result.meta["counts"]
    assert c["examples_read"] == 992 and c["bad_lines"] == 0
    assert c["examples"] + c["skipped"] == 992 - c["duplicates_removed"]
    assert c["train_rows"] + c["val_rows"] == c["examples"] and c["val_rows"] > 0
    ids, mask, _ = load_split(tmp_path / "alpaca", "train")
    assert int(np.asarray(mask).sum()) > 0 and ids.shape[1] == 129


# --------------------------------------------------------------------------- SFT training on prepared rows


def sft_source() -> Path | None:
    bundled = Path(__file__).resolve().parents[2] / "miniglm" / "assets" / "qa.jsonl"
    if bundled.is_file():
        return bundled
    shared = SHARED / "sft" / "alpaca_zh_demo_qa.jsonl"
    return shared if shared.is_file() else None


def write_pretrain_dir(path: Path, tok: Tokenizer, texts: list[str]) -> Path:
    """A prepared pretraining directory in the agreed format (documents joined by the end token)."""
    path.mkdir(parents=True)
    ids = [i for t in texts for i in tok.encode(t) + [tok.eot_id]]
    n_val = len(ids) // 10
    np.asarray(ids[:-n_val], dtype="<u2").tofile(path / "train.bin")
    np.asarray(ids[-n_val:], dtype="<u2").tofile(path / "val.bin")
    tok.hf.save(str(path / "tokenizer.json"))
    meta = {"format_version": 1, "kind": "pretrain", "dtype": "uint16", "vocab_size": tok.vocab_size,
            "eot_id": tok.eot_id, "pad_id": tok.pad_id, "tokenizer": "tokenizer.json",
            "tokenizer_sha256": tok.sha256, "train_tokens": len(ids) - n_val, "val_tokens": n_val}
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.skipif(sft_source() is None, reason="neither miniglm/assets/qa.jsonl nor ../shared/data/sft present")
def test_sft_training_lowers_answer_token_val_loss(tmp_path):
    torch = pytest.importorskip("torch")
    from miniglm import checkpoint
    from miniglm.config import TrainConfig, load_config
    from miniglm.data import loader
    from miniglm.device import Dist
    from miniglm.train.trainer import evaluate, train

    src = sft_source()
    examples = read_examples(src)[:300]
    qa_path = write_jsonl(tmp_path / "qa.jsonl", [{"question": e.turns[0][0], "answer": e.turns[0][1]}
                                                  for e in examples])
    texts = [q + "\n" + a for e in examples for q, a in e.turns]
    tok = train_tokenizer(texts, vocab_size=600, show_progress=False)
    pre_data = write_pretrain_dir(tmp_path / "pre_data", tok, texts)
    common = ["device=cpu", "dtype=float32", "progress=false"]
    train(load_config(TrainConfig, "tiny", [f"data={pre_data}", f"out={tmp_path / 'pre'}", "max_steps=30",
                                            "eval_interval=0", "checkpoint_interval=30", *common]))

    sft_dir = tmp_path / "sft_data"
    prepare_sft([qa_path], tok, sft_dir, SFTDataConfig(block_size=64, val_fraction=0.1), progress=False)
    pretrained = checkpoint.load_checkpoint(tmp_path / "pre")
    before, n_tokens = evaluate(pretrained.model, loader.sft_val_batches(sft_dir, store.read_meta(sft_dir, "sft"), 8), torch.device("cpu"),
                                torch.float32, Dist())
    result = train(load_config(TrainConfig, "sft", [
        f"data={sft_dir}", f"out={tmp_path / 'sft'}", f"init_from={tmp_path / 'pre'}", "block_size=64",
        "max_steps=40", "batch_size=8", "learning_rate=3e-3", "min_lr=3e-4", "warmup_steps=5",
        "eval_interval=20", "checkpoint_interval=40", *common]))

    lines = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "start" and lines[0]["mode"] == "sft" and lines[0]["init_from"]
    evals = [m for m in lines if m["type"] == "eval"]
    assert [m["step"] for m in evals] == [20, 40] and all(m["val_bpc"] is None for m in evals)
    val_mask = np.load(sft_dir / "val_mask.npy")
    assert evals[-1]["val_tokens"] == n_tokens == int(val_mask.sum())  # answer tokens only
    print(f"answer-token val loss: pretrained {before:.3f} -> SFT {[m['val_loss'] for m in evals]}")
    assert result["val_loss"] == evals[-1]["val_loss"] < before - 0.1


def test_prepare_sft_refuses_another_kind_of_directory_before_any_work(tmp_path, tok, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"mode": "pretrain"}', encoding="utf-8")
    import miniglm.data.sft as sft_module

    monkeypatch.setattr(sft_module, "read_examples", lambda *a, **k: pytest.fail("input read before the check"))
    rc = miniglm_main(["prepare-sft", str(qa_file(tmp_path)), "--tokenizer", str(tok.path), "--out", str(run),
                       "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not a prepared SFT directory" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
