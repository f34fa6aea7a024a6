"""Cohen's kappa and Krippendorff's alpha against published worked examples; which one ``agreement`` picks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from policies.evaluation.agreement import _kappa_table, agreement, cohen_kappa, krippendorff_alpha


def _expand(table: list[list[int]], labels: list[object]) -> tuple[list[object], list[object]]:
    """Two raters' label lists from a contingency table (rows: rater 1, columns: rater 2)."""
    first: list[object] = []
    second: list[object] = []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            first += [labels[i]] * count
            second += [labels[j]] * count
    return first, second


@pytest.mark.parametrize(("table", "expected"), [
    # Wikipedia, "Cohen's kappa", worked example: 50 grant proposals, p_o 0.7, p_e 0.5
    ([[20, 5], [10, 15]], 0.4),
    # Wikipedia's two tables with the same p_o 0.60 but different marginals; by hand: p_e 0.54 and 0.46
    ([[45, 15], [25, 15]], 0.1304),
    ([[25, 35], [5, 35]], 0.2593),
])
def test_unweighted_kappa_wikipedia_examples(table: list[list[int]], expected: float) -> None:
    assert cohen_kappa(*_expand(table, ["yes", "no"])) == pytest.approx(expected, abs=5e-5)


def test_kappa_sas_example() -> None:
    # SAS PROC FREQ AGREE printout, reproduced in statsmodels' test_inter_rater.py (table10):
    # simple kappa 0.4842, weighted kappa with Cicchetti-Allison (linear) weights 0.4701
    first, second = _expand([[0, 4, 1], [0, 8, 0], [0, 1, 5]], [1, 2, 3])
    assert cohen_kappa(first, second) == pytest.approx(0.4842, abs=5e-5)
    assert cohen_kappa(first, second, weights="linear") == pytest.approx(0.4701, abs=5e-5)


# R irr's `anxiety` data (Bortz et al.), raters 2 and 3; irr::kappa2 values as printed by R (statsmodels'
# test_inter_rater.py records them). Level 5 is used by neither rater, so it is no category: 1,2,3,4,6.
RATER2 = [3, 6, 4, 6, 2, 4, 2, 4, 3, 3, 2, 3, 3, 3, 2, 2, 1, 3, 3, 4]
RATER3 = [2, 1, 4, 4, 3, 2, 1, 6, 1, 1, 1, 2, 3, 3, 1, 1, 3, 3, 2, 2]


@pytest.mark.parametrize(("weights", "expected"), [
    (None, -0.006289308),  # kappa2(anxiety[,2:3])
    ("linear", 0.1459075),  # kappa2(anxiety[,2:3], "equal")
    ("quadratic", 0.2520325),  # kappa2(anxiety[,2:3], "squared")
])
def test_kappa_matches_rs_irr(weights: str | None, expected: float) -> None:
    assert cohen_kappa(RATER2, RATER3, weights=weights) == pytest.approx(expected, abs=1e-7)  # type: ignore[arg-type]


def test_weighted_kappa_formula_against_cohen_1968() -> None:
    # Cohen (1968), as the R psych package's cohen.kappa examples quote it: proportions of 200 ratings,
    # disagreement weights 1, 3, 6; "cohen reports .492 and .348", and kw = .353 for asymmetric weights.
    table = np.array([[0.44, 0.07, 0.09], [0.05, 0.20, 0.05], [0.01, 0.03, 0.06]])
    assert _kappa_table(table, 1 - np.eye(3)) == pytest.approx(0.492, abs=5e-4)
    assert _kappa_table(table, np.array([[0, 1, 3], [1, 0, 6], [3, 6, 0]], float)) == pytest.approx(0.348, abs=5e-4)
    assert _kappa_table(table, np.array([[0, 1, 4], [1, 0, 6], [2, 2, 0]], float)) == pytest.approx(0.353, abs=5e-4)


def test_kappa_labels_and_missing_pairs() -> None:
    assert cohen_kappa([1, 2, None, 3], [1, 2, 3, None]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([2, 2, 2], [2, 2, 2]))  # no variation: undefined, as in scikit-learn
    assert math.isnan(cohen_kappa([None], [1]))
    with pytest.raises(ValueError, match="not among the labels: 7"):
        cohen_kappa([1, 7], [1, 2], labels=[1, 2, 3])
    with pytest.raises(ValueError, match="align"):
        cohen_kappa([1], [1, 2])
    # positions count, not values: an unused middle label changes weighted kappa
    first, second = [1, 2, 4, 4, 1], [2, 2, 4, 1, 1]
    assert cohen_kappa(first, second, weights="linear") != \
        cohen_kappa(first, second, weights="linear", labels=[1, 2, 3, 4])


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example with missing data:
# 4 observers x 12 units; alpha nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797.
KRIPPENDORFF = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


@pytest.mark.parametrize(("level", "expected"), [
    ("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)])
def test_krippendorff_alpha_published_example(level: str, expected: float) -> None:
    assert krippendorff_alpha(KRIPPENDORFF, level) == pytest.approx(expected, abs=5e-4)  # type: ignore[arg-type]


def test_krippendorff_alpha_undefined_and_bad_input() -> None:
    assert math.isnan(krippendorff_alpha([[3, 3], [3, 3]]))  # one value only
    assert math.isnan(krippendorff_alpha([[1, None], [None, 2]]))  # no unit rated twice
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided here, not left to a 0/0 inside the library
        assert math.isnan(krippendorff_alpha([[3, 3, 1], [3, 3, None]]))  # the 1 pairs with nothing: no variation
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha([[1, 2], [1, 2]], "cardinal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="row lengths"):
        krippendorff_alpha([[1, 2], [1]])


def test_agreement_two_raters_same_items_is_weighted_kappa() -> None:
    ratings = {"ann": dict(enumerate(RATER2)), "bob": dict(enumerate(RATER3))}
    result = agreement(ratings)
    assert result["method"] == "cohen_kappa_weighted" and result["raters"] == 2 and result["n"] == 20
    # integer scores fill their range (1..6, with the unused 5): the scale's distances, not irr's positions
    assert result["value"] == pytest.approx(cohen_kappa(RATER2, RATER3, weights="quadratic",
                                                        labels=[1, 2, 3, 4, 5, 6]))
    assert result["value"] != pytest.approx(0.2520325, abs=1e-4)
    unweighted = agreement(ratings, ordinal=False)
    assert unweighted["method"] == "cohen_kappa" and unweighted["value"] == pytest.approx(-0.006289308)


def test_agreement_several_raters_or_missing_is_alpha() -> None:
    ratings = {f"r{k}": {u: v for u, v in enumerate(row) if v is not None} for k, row in enumerate(KRIPPENDORFF)}
    result = agreement(ratings)
    assert result == {"method": "krippendorff_alpha", "value": pytest.approx(0.815, abs=5e-4), "raters": 4,
                      "n": 11}
    assert agreement(ratings, ordinal=False)["value"] == pytest.approx(0.743, abs=5e-4)
    partial = agreement({"a": {1: 1, 2: 2, 3: 3}, "b": {1: 1, 2: 3}})  # two raters, not the same items
    assert partial["method"] == "krippendorff_alpha" and partial["n"] == 2


def test_agreement_without_enough_ratings_says_why() -> None:
    one = agreement({"a": {1: 4, 2: 5}, "b": {}})
    assert one["value"] is None and one["method"] is None and "two raters" in one["note"]
    apart = agreement({"a": {1: 4}, "b": {2: 5}})
    assert apart["value"] is None and apart["n"] == 0
    flat = agreement({"a": {1: 3, 2: 3}, "b": {1: 3, 2: 3}})
    assert flat["value"] is None and flat["method"] == "cohen_kappa_weighted" and "do not vary" in flat["note"]
