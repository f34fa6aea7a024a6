"""Metric values against sacrebleu's documented examples and hand-computed values, non-Latin text included."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from policies.evaluation.metrics import (
    bleu,
    bleu_items,
    bleu_tokenizer,
    chrf,
    chrf_items,
    exact_match,
    perplexity,
    perplexity_from_completion,
    rouge,
    token_f1,
)

# sacrebleu's README example (also its test suite's test_corpus_bleu): BLEU 48.53, chrF2 59.73, two references.
HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS_1 = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
REFS_2 = ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]


def test_bleu_matches_sacrebleus_documented_example() -> None:
    result = bleu(HYPS, [[a, b] for a, b in zip(REFS_1, REFS_2, strict=True)])
    assert result.value == pytest.approx(48.530827, abs=1e-6)
    assert result.available and result.n == 3
    assert result.note == f"nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"


def test_chrf_matches_sacrebleus_documented_example() -> None:
    result = chrf(HYPS, [[a, b] for a, b in zip(REFS_1, REFS_2, strict=True)])
    assert result.value == pytest.approx(59.7275, abs=1e-4)
    assert result.note.startswith("nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no")


@pytest.mark.parametrize(("hyps", "refs", "expected"), [
    # sacrebleu's test_chrf.py cases that do not depend on beta (precision equals recall)
    (["a b c"], ["abc"], 100.0),
    (["a", "b"], ["a", "c"], 50.0),
    (["aa"], ["ab"], 25.0),
    ([""], ["reference"], 0.0),
])
def test_chrf_matches_sacrebleus_test_cases(hyps: list[str], refs: list[str], expected: float) -> None:
    assert chrf(hyps, refs).value == pytest.approx(expected, abs=1e-4)


def test_items_are_sacrebleus_sentence_scores() -> None:
    assert bleu_items(HYPS, REFS_1) == pytest.approx([sacrebleu.sentence_bleu(h, [r]).score
                                                      for h, r in zip(HYPS, REFS_1, strict=True)])
    assert chrf_items(HYPS, REFS_1) == pytest.approx([sacrebleu.sentence_chrf(h, [r]).score
                                                      for h, r in zip(HYPS, REFS_1, strict=True)])
    assert bleu(HYPS, REFS_1).value == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS_1]).score)


def test_missing_pairs_are_left_out_not_scored_zero() -> None:
    result = bleu(["The dog bit the man.", None, "x"], ["The dog bit the man.", "y", None])
    assert result.items[1] is None and result.items[2] is None
    assert result.value == pytest.approx(100.0) and result.n == 1
    empty = bleu([None], [None])
    assert empty.value is None and not empty.available and empty.items == [None]


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="pair up"):
        bleu(["a", "b"], ["a"])


@pytest.mark.parametrize(("refs", "tokenizer"), [
    (["The cat sat."], "13a"),
    (["Кошка сидит.", "القطة تجلس", "बिल्ली बैठी है"], "13a"),
    (["北京是中国的首都"], "zh"),
    (["日本語のテキスト"], "char"),
    (["ภาษาไทย"], "char"),
])
def test_bleu_tokenizer_follows_the_references(refs: list[str], tokenizer: str) -> None:
    assert bleu_tokenizer(refs) == tokenizer


def test_bleu_does_not_score_unspaced_text_zero() -> None:
    hyp, ref = ["北京是中国的首都"], ["北京是中国首都"]
    assert bleu(hyp, ref, tokenize="13a").value == 0.0  # one "word" each: any difference is 0
    result = bleu(hyp, ref)
    assert "tok:zh" in result.note
    assert result.value == pytest.approx(sacrebleu.corpus_bleu(hyp, [ref], tokenize="zh").score)
    assert result.value is not None and result.value > 50
    japanese = bleu(["日本語のテキストです"], ["日本語のテキスト"])
    assert "tok:char" in japanese.note and japanese.value is not None and japanese.value > 50


@pytest.mark.parametrize(("hyp", "ref", "expected"), [
    # hand-computed: (ROUGE-1, ROUGE-2, ROUGE-L) F-measures
    ("the cat sat on the mat", "the cat is on the mat", (5 / 6, 3 / 5, 5 / 6)),
    ("北京是中国的首都", "北京是中国首都", (14 / 15, 10 / 13, 14 / 15)),  # 8 and 7 characters, 7 shared
    ("القطة تجلس على الحصيرة", "القطة تجلس على السجادة", (3 / 4, 2 / 3, 3 / 4)),
    ("Кошка сидит на коврике", "кошка сидит на ковре", (3 / 4, 2 / 3, 3 / 4)),
    ("बिल्ली चटाई पर बैठी है", "बिल्ली चटाई पर बैठी थी", (4 / 5, 3 / 4, 4 / 5)),
    ("identical text", "identical text", (1.0, 1.0, 1.0)),
])
def test_rouge_hand_computed(hyp: str, ref: str, expected: tuple[float, float, float]) -> None:
    scores = rouge(hyp, ref)
    assert (scores["rouge1"], scores["rouge2"], scores["rougeL"]) == pytest.approx(expected)


def test_rouge_scores_non_latin_text_where_the_default_tokenizer_gives_zero() -> None:
    from rouge_score.rouge_scorer import RougeScorer  # type: ignore[import-untyped]

    default = RougeScorer(["rouge1"]).score("Кошка сидит на ковре", "Кошка сидит на коврике")["rouge1"].fmeasure
    assert default == 0.0  # the reason for our tokenizer
    assert rouge("Кошка сидит на коврике", "Кошка сидит на ковре")["rouge1"] > 0


def test_rouge_takes_the_best_reference() -> None:
    assert rouge("the cat sat", ["a dog ran", "the cat sat"])["rouge1"] == pytest.approx(1.0)


@pytest.mark.parametrize(("pred", "ref", "expected"), [
    ("The Eiffel Tower!", "eiffel tower", 1.0),
    ("Eiffel", "Eiffel Tower", 0.0),
    ("«Москва»", "москва", 1.0),
    ("北京。", "北京", 1.0),
    ("القاهرة؟", "القاهرة", 1.0),
    ("दिल्ली।", "दिल्ली", 1.0),
    ("\uff30\uff21\uff32\uff29\uff33", "paris", 1.0),  # full-width PARIS
    ("Paris", ["London", "paris"], 1.0),
])
def test_exact_match(pred: str, ref: str | list[str], expected: float) -> None:
    assert exact_match(pred, ref) == expected


@pytest.mark.parametrize(("pred", "ref", "expected"), [
    ("the cat sat", "a cat sat down", 0.8),  # "cat sat" vs "cat sat down": P 1, R 2/3
    ("北京是中国的首都", "北京是首都", 10 / 13),  # characters: P 5/8, R 1
    ("«Москва» — столица", "Москва, столица России", 0.8),  # P 1, R 2/3
    ("", "", 1.0),
    ("", "something", 0.0),
    ("blue", "red", 0.0),
    ("red", ["blue", "red car"], 2 / 3),
])
def test_token_f1(pred: str, ref: str | list[str], expected: float) -> None:
    assert token_f1(pred, ref) == pytest.approx(expected)


def test_perplexity_of_known_logprobs() -> None:
    assert perplexity([None, -1.0, -2.0, -3.0]) == pytest.approx(math.exp(2.0))
    assert perplexity([0.0, 0.0]) == pytest.approx(1.0)
    assert perplexity([math.log(0.25)] * 4) == pytest.approx(4.0)  # uniform over 4 tokens
    assert perplexity([float("nan"), -1.0]) == pytest.approx(math.e)  # NaN is missing, not a value
    assert perplexity([-math.inf, -1.0]) == math.inf  # probability 0


@pytest.mark.parametrize("logprobs", [[], [None], [None, None]])
def test_perplexity_without_logprobs_is_unavailable_not_zero(logprobs: list[float | None]) -> None:
    assert perplexity(logprobs) is None


def _choice(token_logprobs: list[float | None] | None) -> dict[str, object]:
    lp = None if token_logprobs is None else {
        "tokens": [f"t{i}" for i in range(len(token_logprobs))], "token_logprobs": token_logprobs,
        "top_logprobs": None, "text_offset": list(range(len(token_logprobs)))}
    return {"index": 0, "text": "prompt and reference", "logprobs": lp, "finish_reason": "length"}


def test_perplexity_from_completion_echo() -> None:
    choice = _choice([None, -0.5, -1.5, -1.0, -2.0, -7.0])  # echoed: the first token has no logprob
    assert perplexity_from_completion(choice, None) == pytest.approx(math.exp(12.0 / 5))
    # the prompt's first 3 tokens skipped: only the reference continuation is scored
    assert perplexity_from_completion(choice, 3) == pytest.approx(math.exp(10.0 / 3))
    # the echoed prompt had 5 tokens: the 6th was generated (max_tokens 1) and is not scored
    assert perplexity_from_completion(choice, 3, echoed_tokens=5) == pytest.approx(math.exp(1.5))


def test_perplexity_from_completion_unavailable() -> None:
    assert perplexity_from_completion(_choice(None), 0) is None
    assert perplexity_from_completion({"text": "x"}, 0) is None
    assert perplexity_from_completion(_choice([None, -1.0]), 2) is None  # nothing left after the prompt


def test_perplexity_from_chat_logprobs() -> None:
    choice = {"message": {"role": "assistant", "content": "ab"},
              "logprobs": {"content": [{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": -3.0}]}}
    assert perplexity_from_completion(choice, None) == pytest.approx(math.exp(2.0))
