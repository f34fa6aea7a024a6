"""Automated metrics over (output, reference) pairs, from the libraries the field reports them with.

* ``bleu``, ``chrf``: sacrebleu, corpus level, with sacrebleu's signature in ``MetricResult.note`` so a
  score can be reproduced; ``items`` are the sentence scores (BLEU with effective order, as
  ``sacrebleu.sentence_bleu``). One tokenisation pass gives the corpus score, the sentence scores and,
  through ``bootstrap.corpus_ci(hyps, refs, bleu)``, every bootstrap resample (sufficient statistics).
* ``rouge``: rouge-score's ``RougeScorer`` with ``text.words`` as tokenizer (its default keeps only
  ``[a-z0-9]``, so any non-Latin text scores 0), no stemming (Porter is English-only).
* ``exact_match``, ``token_f1``: SQuAD's normalisation made Unicode-safe (``text.normalize_answer``).
* ``perplexity``: from the token logprobs an OpenAI-style ``/v1/completions`` answer carries; ``None``
  (unavailable) when it carries none, never 0.

A reference may be one string or several (a list): BLEU and chrF use them as sacrebleu's multiple
references, the others take the best match, as SQuAD does. A ``None`` output or reference drops the
pair from corpus scores and gives ``None`` in ``items`` (a failed call is missing, not wrong).

BLEU's tokenizer (``tokenize=None`` chooses from the references, so every run on a dataset agrees):
``"13a"`` (WMT's default) for text with spaces between words, Latin, Cyrillic, Arabic and Devanagari
included; ``"zh"`` when a reference has Han characters (each one a token, as WMT scores Chinese);
``"char"`` when one has Japanese kana, Thai, Lao, Khmer or Myanmar, which have no spaces and no
tokenizer that works offline (sacrebleu's ``flores200``/``spm`` download a model; ``ja-mecab`` needs
MeCab). Under ``"13a"`` an unspaced sentence is one token, so any difference scored 0.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from sacrebleu.metrics import BLEU, CHRF

from policies.evaluation.text import answer_tokens, normalize_answer, words

__all__ = [
    "ROUGE_MAX_TOKENS",
    "ROUGE_TYPES",
    "CorpusMetric",
    "MetricResult",
    "Reference",
    "bleu",
    "bleu_items",
    "bleu_tokenizer",
    "chrf",
    "chrf_items",
    "exact_match",
    "perplexity",
    "perplexity_from_completion",
    "rouge",
    "token_f1",
]

Reference = str | Sequence[str]
"""One reference, or several for the same item."""
ROUGE_TYPES: Final = ("rouge1", "rouge2", "rougeL")
ROUGE_MAX_TOKENS: Final = 1024
"""Tokens of each side ROUGE reads: rouge-score's LCS is quadratic pure Python (1,024² cells ~0.5 s)."""

_CHAR_SCRIPTS: Final = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]")
_HAN: Final = re.compile("[\u2e80-\u2fdf\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


class MetricResult(msgspec.Struct, frozen=True, kw_only=True):
    """A metric over a set of pairs: ``value`` (None when unavailable, never 0 in its place), one score
    per input pair in ``items`` (None where the pair was dropped), and ``note`` (sacrebleu's signature,
    or why it is unavailable)."""

    value: float | None
    items: list[float | None]
    available: bool
    note: str = ""

    @property
    def n(self) -> int:
        """Pairs scored."""
        return sum(1 for v in self.items if v is not None)


# -- sacrebleu -----------------------------------------------------------------------------------

def _ref_list(ref: Reference | None) -> list[str] | None:
    if ref is None:
        return None
    if isinstance(ref, str):
        return [ref]
    refs = [r for r in ref if isinstance(r, str)]
    return refs or None


def _pairs(hyps: Sequence[str | None],
           refs: Sequence[Reference | None]) -> tuple[list[int], list[str], list[list[str]]]:
    """The indices, outputs and reference lists of the pairs that have both."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} outputs but {len(refs)} references: they pair up one to one")
    index: list[int] = []
    out: list[str] = []
    ref_lists: list[list[str]] = []
    for i, (hyp, ref) in enumerate(zip(hyps, refs, strict=True)):
        rl = _ref_list(ref)
        if hyp is not None and rl is not None:
            index.append(i)
            out.append(hyp)
            ref_lists.append(rl)
    return index, out, ref_lists


def bleu_tokenizer(refs: Sequence[Reference | None]) -> str:
    """The sacrebleu tokenizer ``bleu`` uses for these references (see the module docstring)."""
    han = False
    for ref in refs:
        for text in _ref_list(ref) or ():
            if _CHAR_SCRIPTS.search(text):
                return "char"
            han = han or _HAN.search(text) is not None
    return "zh" if han else "13a"


def _sacre(name: Literal["bleu", "chrf"], tokenize: str, sentence: bool) -> BLEU | CHRF:
    """A metric object (cheap; one per call, as sacrebleu's record the references' count on themselves).
    ``force``: model outputs ending in " ." are not the pre-tokenised text sacrebleu warns about."""
    if name == "bleu":
        return BLEU(tokenize=tokenize, effective_order=sentence, force=True)
    return CHRF()


def _streams(ref_lists: list[list[str]]) -> Any:
    """sacrebleu's layout: one stream per reference position, None where an item has fewer (sacrebleu
    accepts None there, though its annotation says ``Sequence[Sequence[str]]``)."""
    width = max(len(r) for r in ref_lists)
    return [[r[k] if k < len(r) else None for r in ref_lists] for k in range(width)]


class CorpusMetric:
    """BLEU or chrF through sacrebleu. Call it for a ``MetricResult``; ``bootstrap.corpus_ci`` uses
    ``item_stats``/``score_stats`` to resample without tokenising again."""

    def __init__(self, name: Literal["bleu", "chrf"]) -> None:
        self.name = name
        self._scorer = _sacre(name, "13a", False)  # score_stats only: stateless there

    def __repr__(self) -> str:
        return f"<CorpusMetric {self.name}>"

    def _metric(self, refs: Sequence[Reference | None], tokenize: str | None, sentence: bool) -> BLEU | CHRF:
        return _sacre(self.name, tokenize or (bleu_tokenizer(refs) if self.name == "bleu" else ""), sentence)

    def item_stats(self, hyps: Sequence[str], refs: Sequence[Reference], *,
                   tokenize: str | None = None) -> npt.NDArray[np.float64]:
        """Per-pair sufficient statistics, one row per pair that has both sides (others are left out)."""
        _, out, ref_lists = _pairs(hyps, refs)
        if not out:
            return np.zeros((0, 0))
        rows = self._metric(refs, tokenize, False)._extract_corpus_statistics(out, _streams(ref_lists))
        return np.asarray(rows, dtype=np.float64)

    def score_stats(self, total: npt.NDArray[np.float64] | Sequence[float]) -> float:
        """The corpus score of summed statistics (the tokenizer does not enter here)."""
        return float(self._scorer._compute_score_from_stats(list(total)).score)  # type: ignore[arg-type]

    def __call__(self, hyps: Sequence[str | None], refs: Sequence[Reference | None], *,
                 tokenize: str | None = None) -> MetricResult:
        index, out, ref_lists = _pairs(hyps, refs)
        items: list[float | None] = [None] * len(hyps)
        if not out:
            return MetricResult(value=None, items=items, available=False, note="no output with a reference to score")
        corpus = self._metric(refs, tokenize, False)
        stats = corpus._extract_corpus_statistics(out, _streams(ref_lists))
        signature = str(corpus.get_signature())  # known once the references were read (nrefs)
        sentence = self._metric(refs, tokenize, True)
        for i, row in zip(index, stats, strict=True):
            items[i] = float(sentence._compute_score_from_stats(row).score)
        total = np.asarray(stats, dtype=np.float64).sum(axis=0)
        return MetricResult(value=self.score_stats(total), items=items, available=True, note=signature)

    def items(self, hyps: Sequence[str | None], refs: Sequence[Reference | None], *,
              tokenize: str | None = None) -> list[float | None]:
        """Sentence scores, one per pair (None where a side is missing)."""
        return self(hyps, refs, tokenize=tokenize).items


bleu: Final = CorpusMetric("bleu")
"""``bleu(hyps, refs, tokenize=None) -> MetricResult``: corpus BLEU (0-100), sentence BLEU per item."""
chrf: Final = CorpusMetric("chrf")
"""``chrf(hyps, refs) -> MetricResult``: corpus chrF2 (0-100, sacrebleu's defaults), sentence chrF per item."""


def bleu_items(hyps: Sequence[str | None], refs: Sequence[Reference | None], *,
               tokenize: str | None = None) -> list[float | None]:
    """Sentence BLEU per pair, for a bootstrap over items."""
    return bleu.items(hyps, refs, tokenize=tokenize)


def chrf_items(hyps: Sequence[str | None], refs: Sequence[Reference | None]) -> list[float | None]:
    """Sentence chrF per pair, for a bootstrap over items."""
    return chrf.items(hyps, refs)


# -- ROUGE ---------------------------------------------------------------------------------------

class _WordTokenizer:
    """What ``RougeScorer`` calls (``tokenize``): Unicode words, bounded in number."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)[:ROUGE_MAX_TOKENS]


@functools.cache
def _rouge_scorer() -> Any:
    # Imported on first use: rouge_score imports nltk, about a second of start-up nobody else needs.
    from rouge_score.rouge_scorer import RougeScorer  # type: ignore[import-untyped]

    return RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=_WordTokenizer())


def rouge(hyp: str, ref: Reference) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0-1) of one pair; the best reference when several."""
    refs = _ref_list(ref) or [""]
    scorer = _rouge_scorer()
    scores: Mapping[str, Any] = scorer.score(refs[0], hyp) if len(refs) == 1 else scorer.score_multi(refs, hyp)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


# -- SQuAD ---------------------------------------------------------------------------------------

def exact_match(pred: str, ref: Reference) -> float:
    """1.0 when the normalised answer equals a normalised reference, else 0.0."""
    answer = normalize_answer(pred)
    return float(any(answer == normalize_answer(r) for r in _ref_list(ref) or [""]))


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)  # SQuAD: both empty is a match, one empty is not
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, ref: Reference) -> float:
    """SQuAD's token-overlap F1 on normalised answers (unspaced scripts per character); best reference."""
    tokens = answer_tokens(pred)
    return max(_f1(tokens, answer_tokens(r)) for r in _ref_list(ref) or [""])


# -- perplexity ----------------------------------------------------------------------------------

def perplexity(token_logprobs: Sequence[float | None]) -> float | None:
    """exp of the mean negative log-probability over the tokens that have one; None when none has
    (unavailable, not 0). A NaN counts as missing; a -inf (probability 0) makes it infinite."""
    values = [float(v) for v in token_logprobs
              if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)]
    if not values:
        return None
    mean_nll = -sum(values) / len(values)
    return math.inf if mean_nll > 709 else math.exp(mean_nll)  # exp overflows past ~709.78


def perplexity_from_completion(choice: Mapping[str, Any], prompt_tokens: int | None, *,
                               echoed_tokens: int | None = None) -> float | None:
    """Perplexity from one ``/v1/completions`` choice asked with ``logprobs`` (and ``echo`` to score
    given text): ``logprobs.token_logprobs``, whose first echoed token has no logprob (null).

    ``prompt_tokens``: leading tokens to skip, to score only the reference after the input (None or 0:
    all). ``echoed_tokens``: the tokens of the echoed prompt (the request's ``usage.prompt_tokens``), so
    tokens the model generated after it (``max_tokens`` 1) are not scored. A chat-style choice
    (``logprobs.content[].logprob``) is read too. None when the choice has no logprobs."""
    logprobs = choice.get("logprobs") if isinstance(choice, Mapping) else None
    if not isinstance(logprobs, Mapping):
        return None
    values = logprobs.get("token_logprobs")
    if not isinstance(values, list):
        content = logprobs.get("content")
        if not isinstance(content, list):
            return None
        values = [c.get("logprob") if isinstance(c, Mapping) else None for c in content]
    end = echoed_tokens if echoed_tokens is not None else len(values)
    return perplexity(values[max(prompt_tokens or 0, 0):max(end, 0)])
