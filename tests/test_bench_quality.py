"""bench/quality.py's pieces: the chapter split of the novels, the char vocabulary and the GPT-2 peer's
held-out scoring (every character but the first predicted once, checked against direct forwards)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NOVELS = REPO.parent / "shared" / "data" / "pretrain"
NAMES = ("hongloumeng", "sanguoyanyi", "shuihuzhuan", "xiyouji")
NUMERALS = ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二"]


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("quality")


def novel(chapters: int, toc: bool = False) -> str:
    """A preamble, optionally a table of contents, then `chapters` chapters with bodies; one body line
    starts like a heading ("第二回中，…") and chapter 3's heading is doubled."""
    parts = ["书名\n\n序言一段。\n\n"]
    if toc:
        parts.append("目录\n" + "".join(f"第{NUMERALS[i]}回　回目{i + 1}\n" for i in range(chapters)) + "\n")
    for i in range(chapters):
        heading = f"第{NUMERALS[i]}回　回目{i + 1}\n"
        if i == 2:
            parts.append(heading + "\n")
        parts.append(f"{heading}\n正文{i + 1}，话说某人。\n" + ("第二回中，已经说过此事。\n" if i == 3 else "") + "\n")
    return "".join(parts)


@pytest.mark.parametrize("toc", [False, True])
def test_split_holds_out_from_the_fifth_last_heading(bench, toc):
    text = novel(8, toc)
    train, held = bench.split_novel(text)
    assert train + held == text
    assert held.startswith("第四回　回目4\n") and held.count("回目") == 5  # chapters 4..8, no TOC line
    assert train.endswith("正文3，话说某人。\n\n")
    assert [n for _, n in bench.chapter_starts(text)] == list(range(1, 9))
    train2, held2 = bench.split_novel(text, held_chapters=2)
    assert held2.startswith("第七回") and train2 + held2 == text


def test_split_needs_more_headings_than_held_chapters(bench):
    with pytest.raises(ValueError, match="found 5 chapter headings"):
        bench.split_novel(novel(5))
    with pytest.raises(ValueError, match="found 0"):
        bench.split_novel("没有回目的一段文字。\n第二回中，提到了。\n")
    assert bench.split_novel(novel(6))[1].startswith("第二回　")
    with pytest.raises(ValueError, match="held_chapters"):
        bench.split_novel(novel(8), held_chapters=0)


def test_chapter_numbers(bench):
    cases = {"一": 1, "十": 10, "十二": 12, "二十": 20, "九十九": 99, "一百": 100, "一百零五": 105,
             "一百十四": 114, "一百二十": 120, "两百": 200, "12": 12, "１２": 12, "1百零2": 102}
    assert {k: bench.chapter_number(k) for k in cases} == cases


@pytest.mark.skipif(not all((NOVELS / f"{n}.txt").is_file() for n in NAMES), reason="the four novels are not here")
@pytest.mark.parametrize("name", NAMES)
def test_split_of_the_real_novels(bench, name):
    text = (NOVELS / f"{name}.txt").read_text(encoding="utf-8")
    starts = bench.chapter_starts(text)
    nums = [n for _, n in starts]
    assert nums == list(range(1, len(nums) + 1)) and len(nums) in (100, 120)
    train, held = bench.split_novel(text)
    assert train + held == text
    assert 0 < len(held) < 0.15 * len(text)
    assert bench.HEADING.match(held) and held.startswith(f"第{'九十六' if len(nums) == 100 else '一百十六'}回")


def test_char_vocab_maps_unseen_characters_to_unk(bench):
    v = bench.CharVocab("天下大势，分久必合\n")
    assert len(v) == 11 and v.unk == 10
    ids = v.encode("合久\n龙x")
    assert ids.tolist()[:3] == [v.index["合"], v.index["久"], v.index["\n"]] and ids.tolist()[3:] == [10, 10]
    assert v.unknown("合久\n龙x") == 2 and v.chars == sorted(v.chars)


def test_width_matching_and_parameter_formula(bench):
    model = bench.build_gpt2(vocab=50, n_positions=16, n_layer=2, n_head=4, n_embd=24)
    assert bench.num_params(model) == bench.gpt2_params(50, 16, 2, 24)
    d = bench.match_width(bench.gpt2_params(50, 16, 2, 24) + 5, 50, 16, 2, 4)
    assert d == 24


@pytest.mark.parametrize("n, block, batch", [(9, 8, 16), (21, 8, 2), (17, 8, 1), (2, 8, 4)])
def test_gpt2_scoring_predicts_every_char_but_the_first_once(bench, n, block, batch):
    torch.manual_seed(0)
    model = bench.build_gpt2(vocab=13, n_positions=block, n_layer=1, n_head=2, n_embd=16).eval()
    ids = torch.randint(0, 13, (n,))
    per = np.full(n - 1, np.nan)
    nats, scored, windows = bench.score_chars(model, ids, block, batch_size=batch, per_token=per)
    assert scored == n - 1 and windows == math.ceil((n - 1) / block)
    want = []  # one forward per window, by hand: -log p(ids[t + 1] | ids[k·block .. t])
    with torch.no_grad():
        for s in range(0, n - 1, block):
            w = ids[s:s + block + 1]
            logp = torch.log_softmax(model(input_ids=w[None, :-1]).logits[0].double(), -1)
            want += (-logp.gather(1, w[1:, None])[:, 0]).tolist()
    assert nats == pytest.approx(sum(want), rel=1e-5)
    assert per == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_gpt2_one_window_matches_the_models_own_loss(bench):
    torch.manual_seed(1)
    model = bench.build_gpt2(vocab=11, n_positions=8, n_layer=1, n_head=2, n_embd=8).eval()
    ids = torch.randint(0, 11, (9,))
    nats, scored, _ = bench.score_chars(model, ids, 8)
    with torch.no_grad():
        loss = model(input_ids=ids[None, :-1], labels=ids[None, :-1]).loss.item()  # 7 shifted targets
        last = -torch.log_softmax(model(input_ids=ids[None, :-1]).logits[0, -1], -1)[ids[-1]].item()
    assert scored == 8 and nats == pytest.approx(7 * loss + last, rel=1e-5)
    assert bench.bits_per_char(nats, 9) == pytest.approx(nats / (9 * math.log(2)))


def test_char_nats_shares_each_tokens_nats_over_its_characters(bench):
    text = "天a下"  # 3 + 1 + 3 bytes: a token ends inside 天, one spans its last byte and "a", one is 下
    token_bytes = [b"\xe5\xa4", b"\xa9a", "下".encode(), b""]
    got = bench.char_nats(text, [0, 1, 2], np.array([1.0, 2.0, 4.0]), token_bytes)
    assert got.tolist() == [2.0, 1.0, 4.0]  # 天 = 1 + 2/2, a = 2/2, 下 = 4
    with pytest.raises(ValueError, match="spell 4 bytes"):
        bench.char_nats(text, [0, 1], np.array([1.0, 2.0]), token_bytes)
    with pytest.raises(ValueError, match="spells no byte"):
        bench.char_nats(text, [3, 0, 1, 2], np.zeros(4), token_bytes)


def test_by_training_count_groups_characters_by_their_training_count(bench):
    train = Counter("a" * 1000 + "b" * 5 + "c" * 50)
    table = bench.by_training_count([("aab", np.array([1.0, 2.0, 3.0])), ("zc", np.array([0.5, 0.25]))], train)
    assert list(table) == ["0", "1-9", "10-99", "100-999", "1000+"]
    assert table["1000+"] == {"chars": 2, "total_nats": 3.0, "bpc": pytest.approx(3.0 / (2 * math.log(2)))}
    assert table["1-9"]["chars"] == 1 and table["1-9"]["total_nats"] == 3.0
    assert table["0"]["chars"] == 1 and table["0"]["total_nats"] == 0.5 and table["10-99"]["total_nats"] == 0.25
    assert table["100-999"] == {"chars": 0, "total_nats": 0.0, "bpc": None}


def test_by_context_groups_predictions_by_their_place_in_the_window(bench):
    table = bench.by_context([np.arange(40.0), np.array([1.0, 3.0])], block=20)
    # targets 0-19 and 20-39 of the first stream have 1-20 ids before them; so do the second's 0-1
    assert list(table) == ["1-8", "9-16", "17-20"]
    assert table["1-8"] == {"predicted": 18, "mean_nats": pytest.approx((sum(range(8)) + sum(range(20, 28)) + 4) / 18)}
    assert table["9-16"]["predicted"] == 16 and table["17-20"]["predicted"] == 8
    assert table["17-20"]["mean_nats"] == pytest.approx((16 + 17 + 18 + 19 + 36 + 37 + 38 + 39) / 8)
    assert list(bench.by_context([np.zeros(3)], block=128)) == ["1-8", "9-16", "17-32", "33-64", "65-128"]
    assert bench.by_context([np.zeros(3)], block=128)["65-128"] == {"predicted": 0, "mean_nats": None}


def test_miniglm_breakdown_adds_up_to_the_heldout_score(bench, tmp_path):
    from miniglm.config import ModelConfig
    from miniglm.evaluate.heldout import heldout_text
    from miniglm.model.model import MiniGLM
    from miniglm.tokenizer import train_tokenizer

    train, held = novel(8), ["第七回　回目\n林冲在草料场看守，风雪交加。\n", "第八回\n孙悟空一个筋斗云，便是十万八千里。\n"]
    tok = train_tokenizer([train], vocab_size=300, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    model = MiniGLM(ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=8)).eval()
    (tmp_path / "split" / "train").mkdir(parents=True)
    (tmp_path / "split" / "train" / "a.txt").write_text(train, encoding="utf-8")
    files = []
    for i, text in enumerate(held):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(text, encoding="utf-8")
    ids, spans = bench.held_stream(tok, files)
    per = np.full(len(ids) - 1, np.nan)
    res = heldout_text(model, tok, files, per_token=per)
    assert [t for _, _, t in spans] == [tok.encode(t) for t in held] and len(ids) == res.tokens_scored + 1
    table, context = bench.miniglm_breakdown(tok, spans, per, res.block_size, tmp_path)
    assert sum(r["predicted"] for r in context.values()) == res.tokens_scored
    assert sum(r["predicted"] * (r["mean_nats"] or 0) for r in context.values()) == pytest.approx(res.total_nats)
    assert sum(r["chars"] for r in table.values()) == res.chars == sum(map(len, held))
    assert sum(r["total_nats"] for r in table.values()) == pytest.approx(res.total_nats, rel=1e-5)
    assert table["end-of-text tokens"]["total_nats"] > 0 and table["0"]["chars"] == sum(
        c not in train for t in held for c in t)


def test_report_prints_the_breakdown_of_both_sides(bench, capsys):
    def side(nats, table, context):
        return {"params": 10, "steps": 5, "tokens_seen": 640, "chars_seen": 700.0, "seconds": 60.0, "bpc": 6.0,
                "total_nats": nats, "by_training_count": table, "by_context": context}

    mini = side(8.0, {"0": {"chars": 1, "total_nats": 2.0, "bpc": 2 / math.log(2)},
                      "1000+": {"chars": 3, "total_nats": 6.0, "bpc": 2 / math.log(2)},
                      "end-of-text tokens": {"chars": 0, "total_nats": 0.0, "bpc": None}},
                {"1-8": {"predicted": 4, "mean_nats": 2.0}})
    gpt2 = side(16.0, {"0": {"chars": 1, "total_nats": 4.0, "bpc": 4 / math.log(2)},
                       "1000+": {"chars": 3, "total_nats": 12.0, "bpc": 4 / math.log(2)}},
                {"1-8": {"predicted": 4, "mean_nats": 4.0}})
    bench.report({"miniglm": mini, "gpt2-char": gpt2})
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("1000+"))
    assert row.split() == ["1000+", "3", "2.885", "(", "75.0%)", "5.771", "(", "75.0%)"]
    eot = next(line for line in lines if line.startswith("end-of-text"))
    assert eot.split()[-1] == "-" and "0.0%" in eot
    assert next(line for line in lines if line.startswith("1-8")).split() == ["1-8", "2.000", "4.000"]
