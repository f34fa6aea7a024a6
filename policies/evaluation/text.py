"""Unicode-aware text handling shared by the metrics: word tokens (ROUGE) and SQuAD answer normalisation.

Why not ``\\w+``: Python's ``\\w`` leaves out combining marks (categories Mn, Mc, Me), so ``"हिन्दी"``
(Devanagari vowel signs and virama are marks) splits into ``["ह", "न", "द"]``; Arabic harakat and Thai
vowel signs break words the same way. A word here is a run of ``\\w`` *or* mark characters.

Scripts written without spaces between words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) give
one token per character (a base character with the marks that follow it), the usual choice for Chinese
ROUGE and character-level F1: otherwise a whole Chinese sentence is one "word" and any difference
scores 0.
"""

from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from typing import Final

__all__ = ["UNSPACED_CHARS", "answer_tokens", "normalize_answer", "split_unspaced", "words"]

UNSPACED_CHARS: Final = (
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3005\u3007\u3021-\u3029\u3038-\u303b"  # ideographic iteration mark, numerals
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003134f"  # CJK extensions B-G, compatibility supplement
)
"""Character ranges (a regex class body) of scripts written without spaces between words."""

_ARTICLES: Final = re.compile(r"\b(?:a|an|the)\b")
_ASCII_PUNCT: Final = frozenset(string.punctuation)  # SQuAD strips these, symbols like $ + < = > ^ ` | ~ too


@functools.cache
def _marks_class() -> str:
    """A regex class body of every combining mark (M*), built once on first use (~50 ms): marks live in
    planes 0 and 1 and in plane 14's variation selectors, so only those are scanned."""
    ranges: list[tuple[int, int]] = []
    for lo, hi in ((0, 0x20000), (0xE0000, min(0xE1000, sys.maxunicode + 1))):
        for cp in range(lo, hi):
            if unicodedata.category(chr(cp))[0] == "M":
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1] = (ranges[-1][0], cp)
                else:
                    ranges.append((cp, cp))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    marks = _marks_class()
    unspaced = re.compile(f"[{UNSPACED_CHARS}][{marks}]*")  # one character and the marks on it
    word = re.compile(f"[\\w{marks}]+")
    return unspaced, word


def split_unspaced(text: str) -> str:
    """``text`` with spaces around each character of a script written without spaces."""
    unspaced, _ = _patterns()
    return unspaced.sub(r" \g<0> ", text)


def words(text: str) -> list[str]:
    """Lower-cased word tokens for ROUGE: NFKC (full-width Latin is Latin), lower case, runs of word or
    mark characters; unspaced scripts one character per token. Punctuation and symbols separate words."""
    _, word = _patterns()
    return word.findall(split_unspaced(unicodedata.normalize("NFKC", text).lower()))


def _strip_punctuation(text: str) -> str:
    # Removed, not replaced by a space, as SQuAD's evaluation script does ("don't" -> "dont").
    return "".join(ch for ch in text if ch not in _ASCII_PUNCT and unicodedata.category(ch)[0] != "P")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation, Unicode-safe: NFKC, lower case, drop punctuation (every Unicode P*
    category, plus SQuAD's ASCII symbols), drop the English articles a/an/the, collapse whitespace."""
    text = _strip_punctuation(unicodedata.normalize("NFKC", text).lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    """Tokens for token F1: the normalised answer split on whitespace, unspaced scripts per character."""
    return split_unspaced(normalize_answer(text)).split()
