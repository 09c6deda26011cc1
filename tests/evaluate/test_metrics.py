"""Text metrics: Rouge-L (hand-computed and against independent implementations), BLEU/chrF,
distinct-n, and every quality flag with positive and negative examples."""

from __future__ import annotations

import random

import pytest

from miniglm.evaluate import metrics as m

# --------------------------------------------------------------------------- Rouge-L by hand


def test_rouge_identical_is_one():
    s = m.rouge_l("我爱北京天安门", "我爱北京天安门")
    assert (s.precision, s.recall, s.f) == (1.0, 1.0, 1.0)


def test_rouge_disjoint_is_zero():
    assert m.rouge_l("春眠不觉晓", "abc") == m.RougeL(0.0, 0.0, 0.0)


def test_rouge_one_character_strings():
    assert m.rouge_l("好", "好").f == 1.0
    assert m.rouge_l("好", "坏").f == 0.0
    s = m.rouge_l("好", "很好")  # LCS 1: P = 1/1, R = 1/2
    assert s.precision == 1.0 and s.recall == 0.5


def test_rouge_empty_strings():
    assert m.rouge_l("", "北京").f == 0.0
    assert m.rouge_l("北京", "").f == 0.0


def test_lcs_at_string_starts():
    # The common subsequence begins at index 0 of both strings: an off-by-one in the DP table's
    # first row/column would lose it.
    assert m.lcs_length("我们走", "我你他") == 1
    assert m.lcs_length("ab", "a") == 1 and m.lcs_length("a", "ab") == 1
    assert m.lcs_length("abc", "abd") == 2
    assert m.lcs_length("xabc", "abc") == 3 and m.lcs_length("abc", "xabc") == 3
    s = m.rouge_l("我们走", "我你他")
    assert s.precision == pytest.approx(1 / 3) and s.recall == pytest.approx(1 / 3) and s.f == pytest.approx(1 / 3)


def test_rouge_partial_overlap_hand_computed():
    # candidate 今天天气很好 (6 chars) is a subsequence of the 10-char reference: LCS 6.
    s = m.rouge_l("今天天气很好", "今天的天气真的很好啊")
    assert s.precision == 1.0
    assert s.recall == pytest.approx(0.6)
    # F_beta = (1 + 1.44) * 1 * 0.6 / (0.6 + 1.44 * 1) = 1.464 / 2.04
    assert s.f == pytest.approx(1.464 / 2.04)
    assert m.ROUGE_BETA == 1.2

    # 北京是首都 vs 中国的首都是北京: LCS 2 (北京 or 首都; 是 is on the wrong side of 首都).
    s = m.rouge_l("北京是首都", "中国的首都是北京")
    assert (s.precision, s.recall) == (pytest.approx(0.4), pytest.approx(0.25))
    assert s.f == pytest.approx(2.44 * 0.4 * 0.25 / (0.25 + 1.44 * 0.4))
    assert m.rouge_l("北京是首都", "中国的首都是北京", beta=1.0).f == pytest.approx(2 * 0.1 / 0.65)


def test_rouge_ignores_whitespace():
    assert m.rouge_l("北 京\n", "北京").f == 1.0


def test_rouge_best_of_references():
    s = m.rouge_l_best("北京", ["上海", "北京市", "中国北京"])
    assert s == m.rouge_l("北京", "北京市")  # R 2/3 beats 2/4
    with pytest.raises(ValueError):
        m.rouge_l_best("北京", [])


def _random_pairs(n: int = 60, seed: int = 0):
    rng = random.Random(seed)
    alphabet = "的一是不了人我在有他这中大来上北京天气很好"
    for _ in range(n):
        yield ("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25))),
               "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25))))


def test_rouge_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

    class Chars:
        def tokenize(self, text):
            return m.rouge_chars(text)

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Chars())
    for cand, ref in _random_pairs():
        theirs = scorer.score(ref, cand)["rougeL"]  # (target, prediction)
        ours = m.rouge_l(cand, ref, beta=1.0)  # rouge-score uses the plain F1
        assert ours.precision == pytest.approx(theirs.precision)
        assert ours.recall == pytest.approx(theirs.recall)
        assert ours.f == pytest.approx(theirs.fmeasure)


def test_rouge_matches_pycocoevalcap_beta_1_2():
    rouge = pytest.importorskip("pycocoevalcap.rouge.rouge")
    scorer = rouge.Rouge()
    assert scorer.beta == m.ROUGE_BETA
    for cand, ref in _random_pairs(seed=1):
        theirs = scorer.calc_score([" ".join(cand)], [" ".join(ref)])
        assert m.rouge_l(cand, ref).f == pytest.approx(theirs)


# --------------------------------------------------------------------------- corpus metrics


def test_bleu_chrf_perfect_and_partial():
    pytest.importorskip("sacrebleu")
    perfect = m.bleu_chrf(["今天天气很好，我们去公园。"], [["今天天气很好，我们去公园。"]])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    partial = m.bleu_chrf(["今天天气很好", "北京"], [["今天天气不错", "今天天气很好呀"], ["北京市"]])
    assert 0 < partial["bleu"] < 100 and 0 < partial["chrf"] < 100
    none = m.bleu_chrf(["甲乙丙丁"], [["子丑寅卯"]])
    assert none["bleu"] == 0.0


def test_distinct_n():
    assert m.distinct_n(["aab"], 1) == pytest.approx(2 / 3)
    assert m.distinct_n(["aab"], 2) == 1.0
    assert m.distinct_n(["我我", "我我"], 2) == 0.5  # over all answers together
    assert m.distinct_n(["a"], 2) == 0.0


# --------------------------------------------------------------------------- quality flags


def test_garbled():
    assert m.is_garbled("你好\ufffd世界")
    assert m.is_garbled("你好\x07")
    assert m.is_garbled("私用\ue000")
    assert not m.is_garbled("你好\n\t世界！")
    seen = frozenset("你好世界")
    assert m.is_garbled("你好吗", seen) and m.unseen_characters("你好吗吗", seen) == ["吗"]
    assert not m.is_garbled("你好 世界", seen)


def test_garbled_from_the_raw_decode_of_the_generated_ids():
    # the text layer dropped invalid bytes, the raw decode still shows them
    assert m.is_garbled("你好", raw="你\ufffd好", finish_reason="eot")
    assert m.is_garbled("", raw="\ufffd\ufffd", finish_reason="eot")
    # a character cut in half by the length limit is truncation, not garbage
    assert not m.is_garbled("你好", raw="你好\ufffd", finish_reason="length")
    assert m.is_garbled("你好", raw="你\ufffd好\ufffd", finish_reason="length")
    assert not m.is_garbled("你好", raw="你好", finish_reason="eot")


def test_seen_characters_from_token_pieces():
    assert m.seen_characters(["你好", "\ufffd", " a", "\n"]) == frozenset("你好a")


def test_repetition():
    assert m.is_repetitive("我不知道。" * 4)
    assert m.repeated_ngram_ratio("我不知道。" * 4) > 0.5
    assert m.is_repetitive("啊啊啊啊啊")  # a run of 5
    assert not m.is_repetitive("啊啊啊啊")
    assert not m.is_repetitive("今天天气很好，我们去公园散步吧。")
    assert not m.is_repetitive("")
    assert m.longest_run("ab   c") == 1  # spaces are not a run


def test_empty():
    for text in ("", "   \n", "。。！", "……", "——？"):
        assert m.is_empty(text), text
    for text in ("好", "42", " a "):
        assert not m.is_empty(text), text


def test_truncated():
    assert m.is_truncated("我们今天去", "length")
    assert not m.is_truncated("我们今天去。", "length")
    assert not m.is_truncated("他说：“好。”  ", "length")
    assert not m.is_truncated("我们今天去", "eot")
    assert not m.is_truncated("我们今天去", None)


def test_off_topic_and_relevance():
    q = "请介绍一下长城的历史"
    on = "长城是中国古代的军事防御工程，修建历史可以追溯到春秋战国时期。"
    off = "宝玉听了，便向黛玉笑道：妹妹今日可好些了么？"
    # content chars of q: 介绍长城历史 (请/一/下/的 are function characters)
    assert m.content_chars(q) == set("介绍长城历史")
    assert m.relevance(q, on) == pytest.approx(4 / 6)  # 长城历史 of the question's 6
    assert not m.is_off_topic(q, on)
    assert m.relevance(q, off) == 0.0 and m.is_off_topic(q, off)
    assert not m.is_off_topic("中国的首都是哪里？", "北京。")  # too short to judge


def test_quality_flags_keys_and_values():
    flags = m.quality_flags("请介绍一下长城的历史", "宝玉听了便向黛玉笑道" * 3, "length")
    assert set(flags) == set(m.FLAG_NAMES)
    assert flags == {"garbled": False, "repetition": True, "empty": False, "truncated": True, "off_topic": True}
    clean = m.quality_flags("中国的首都是哪里？", "北京。", "eot", seen=frozenset("北京。"))
    assert not any(clean.values())


def test_settings_state_the_definitions():
    s = m.settings()
    assert s["rouge_l"]["beta"] == 1.2 and s["bleu"]["tokenize"] == "zh"
    assert s["quality_thresholds"]["repeat_ratio"] == 0.5
