"""Unicode tokenisation for ROUGE and SQuAD normalisation: scripts whose words carry combining marks stay whole,
unspaced scripts go one character per token."""

from __future__ import annotations

import re

import pytest

from policies.evaluation.text import answer_tokens, normalize_answer, words


def test_plain_word_regex_would_break_devanagari() -> None:
    # Why words() is not \w+: vowel signs and the virama are marks, which \w leaves out.
    assert re.findall(r"\w+", "हिन्दी भाषा") == ["ह", "न", "द", "भ", "ष"]
    assert words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello, World! It's 2024.", ["hello", "world", "it", "s", "2024"]),
    ("Кошка сидит на коврике.", ["кошка", "сидит", "на", "коврике"]),
    ("مَرْحَبًا بالعالم!", ["مَرْحَبًا", "بالعالم"]),  # harakat are marks: kept inside the word
    ("北京是中国的首都。", ["北", "京", "是", "中", "国", "的", "首", "都"]),
    ("日本語のテキスト", ["日", "本", "語", "の", "テ", "キ", "ス", "ト"]),
    ("\uff21\uff22\uff23 abc", ["abc", "abc"]),  # NFKC: full-width Latin is Latin
    ("GPT-4 vs 北京", ["gpt", "4", "vs", "北", "京"]),
])
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_thai_marks_stay_on_their_base() -> None:
    # U+0E31 (mai han-akat) is a mark: it stays with the consonant before it.
    assert words("กัน") == ["กั", "น"]


@pytest.mark.parametrize(("text", "expected"), [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  a   quick\tfox ", "quick fox"),
    ("«Москва»", "москва"),
    ("北京。", "北京"),
    ("القاهرة؟", "القاهرة"),  # Arabic question mark (Po)
    ("दिल्ली।", "दिल्ली"),  # Devanagari danda (Po)
    ("don't", "dont"),  # removed, not replaced by a space, as SQuAD does
    ("$100 + tax", "100 tax"),  # SQuAD's ASCII symbols go too
    ("cafe\u0301", "café"),  # NFKC composes
])
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_answer_tokens_split_unspaced_scripts() -> None:
    assert answer_tokens("北京\uff0c中国") == ["北", "京", "中", "国"]  # a full-width comma
    assert answer_tokens("The capital is Paris.") == ["capital", "is", "paris"]
