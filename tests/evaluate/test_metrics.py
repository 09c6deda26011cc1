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
    flags = m.quality_flags("请介绍一下长城的历史", "宝玉听了便向黛玉笑道" * 3, "length", collapse_share=0.5)
    assert set(flags) == set(m.FLAG_NAMES)
    assert flags == {"garbled": False, "repetition": True, "empty": False, "truncated": True, "off_topic": True,
                     "collapsed": True}
    clean = m.quality_flags("中国的首都是哪里？", "北京。", "eot", seen=frozenset("北京。"), collapse_share=0.0)
    assert not any(clean.values())


# --------------------------------------------------------------------------- collapse (over all answers)

SENTENCE = "宝玉听了便向黛玉笑道妹妹今日可好些了么我们一同去园子里走走罢"  # 30 chars, 27 distinct 4-grams
OTHERS = ["长城是中国古代的军事防御工程", "孙悟空一个筋斗云便是十万八千里", "林冲在草料场看守风雪交加",
          "天下大势分久必合合久必分", "北京是中华人民共和国的首都", "水是由氢和氧两种元素组成的",
          "地球绕着太阳转一圈大约一年", "李白是唐代著名的浪漫主义诗人", "熊猫主要吃竹子生活在四川",
          "一年有春夏秋冬四个季节"]


def _flags(questions, answers):
    return [m.is_collapsed(x) for x in m.collapse_shares(questions, answers)]


def test_identical_answers_to_different_questions_are_collapsed():
    qs = [f"问题{i}是什么？" for i in range(4)]
    assert m.collapse_shares(qs, [SENTENCE] * 4) == [1.0] * 4
    assert _flags(qs, [SENTENCE] * 4) == [True] * 4
    assert _flags(qs, OTHERS[:4]) == [False] * 4  # varied answers


def test_the_same_question_answered_the_same_way_is_not_collapse():
    assert _flags(["长城有多长？"] * 5, [SENTENCE] * 5) == [False] * 5
    # whitespace around a question does not make it a different question
    assert _flags(["长城有多长？", " 长城有多长？\n"], [SENTENCE] * 2) == [False, False]
    # two copies of question A, one of B, all with the same answer: A's peers are only B
    assert m.collapse_shares(["A问题", "A问题", "B问题"], [SENTENCE] * 3) == [1.0, 1.0, 1.0]


def test_near_duplicates_above_and_below_the_jaccard_threshold():
    grams = frozenset(m.char_ngrams(SENTENCE, 4))
    assert len(grams) == 27
    one_end = SENTENCE[:-1] + "吧"  # last 4-gram changed: 26 shared of 28 -> 0.93
    middle = SENTENCE[:15] + "吗" + SENTENCE[16:]  # 4 grams changed: 23 of 31 -> 0.74
    assert m.jaccard(grams, frozenset(m.char_ngrams(one_end, 4))) == pytest.approx(26 / 28)
    assert m.jaccard(grams, frozenset(m.char_ngrams(middle, 4))) == pytest.approx(23 / 31)
    assert 23 / 31 < m.COLLAPSE_JACCARD <= 26 / 28
    assert _flags(["问一", "问二"], [SENTENCE, one_end]) == [True, True]
    assert _flags(["问一", "问二"], [SENTENCE, middle]) == [False, False]
    # whitespace is dropped before the 4-grams are taken
    assert _flags(["问一", "问二"], [SENTENCE, " ".join(SENTENCE)]) == [True, True]


def test_the_ten_percent_rule():
    # 12 answers, 11 peers each: one duplicate pair is 1/11 < 10% (a coincidence) ...
    qs = [f"问题{i}" for i in range(12)]
    pair = [SENTENCE, SENTENCE] + OTHERS
    shares = m.collapse_shares(qs, pair)
    assert shares[:2] == [pytest.approx(1 / 11)] * 2 and shares[2:] == [0.0] * 10
    assert not any(m.is_collapsed(x) for x in shares)
    # ... three copies are 2/11 >= 10% for each of them
    triple = [SENTENCE] * 3 + OTHERS[:9]
    assert _flags(qs, triple) == [True] * 3 + [False] * 9
    # with few answers one match is already a large share
    assert _flags(["甲", "乙", "丙"], [SENTENCE, SENTENCE, OTHERS[0]]) == [True, True, False]
    assert _flags(["甲"], [SENTENCE]) == [False]  # no peers
    assert m.collapse_shares([], []) == []
    with pytest.raises(ValueError):
        m.collapse_shares(["甲"], [])


def test_empty_and_short_answers_are_never_collapsed_but_count_as_peers():
    qs = [f"问题{i}" for i in range(4)]
    assert _flags(qs, ["", "", "  ", "。"]) == [False] * 4  # the empty flag's business
    assert _flags(qs, ["北京", "北京", "是的。", "是的。"]) == [False] * 4  # < 4 characters
    # two identical long answers among 10 peers each: 1/10 of them, exactly the threshold
    shares = m.collapse_shares([f"问{i}" for i in range(11)], [SENTENCE, SENTENCE] + [""] * 9)
    assert shares[:2] == [0.1, 0.1] and all(m.is_collapsed(x) for x in shares[:2])
    assert not any(m.is_collapsed(x) for x in shares[2:])


def test_settings_state_the_definitions():
    s = m.settings()
    assert s["rouge_l"]["beta"] == 1.2 and s["bleu"]["tokenize"] == "zh"
    assert s["quality_thresholds"]["repeat_ratio"] == 0.5
    assert s["collapse"] == {"char_ngram": 4, "jaccard_min": 0.8, "share_of_other_questions_answers_min": 0.1,
                             "unique_answer_share": "answers not flagged collapsed / all answers"}
