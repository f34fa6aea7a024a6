"""Inter-rater agreement: how far two (or more) raters' scores agree beyond chance.

* ``cohen_kappa``: two raters who rated the same items, written out (no scikit-learn):
  ``kappa = 1 - sum(w * observed) / sum(w * expected)`` over the k x k table of the two raters' labels,
  with disagreement weights ``w``: 0 on the diagonal and 1 elsewhere (Cohen 1960), ``|i-j|/(k-1)``
  (linear) or ``((i-j)/(k-1))**2`` (quadratic, Cohen 1968 / Fleiss and Cohen 1973), ``i, j`` the labels'
  positions in ``labels`` (default: every label either rater used, sorted, as R's ``irr::kappa2`` and
  scikit-learn do). Checked in tests against Cohen's, Wikipedia's, SAS's and ``irr``'s published values.
* ``krippendorff_alpha``: any number of raters, missing ratings allowed, through the ``krippendorff``
  package (checked against Krippendorff's own example: nominal alpha 0.743).
* ``agreement``: picks one for a set of ratings, the way ``ReviewSummary.agreement`` reports it.

Undefined values are NaN, as in scikit-learn (e.g. both raters gave one and the same label to every
item: no variation, so chance agreement is already perfect); ``agreement`` reports them as ``None`` with
a note.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Final, Literal

import krippendorff
import numpy as np
import numpy.typing as npt

__all__ = ["Level", "Weights", "agreement", "cohen_kappa", "krippendorff_alpha"]

Weights = Literal["linear", "quadratic"] | None
Level = Literal["nominal", "ordinal", "interval", "ratio"]
_LEVELS: Final = frozenset({"nominal", "ordinal", "interval", "ratio"})


def _kappa_table(table: npt.NDArray[np.float64], disagreement: npt.NDArray[np.float64]) -> float:
    """Weighted kappa of a k x k contingency table (counts or proportions) under disagreement weights."""
    observed = table / table.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    chance = float((disagreement * expected).sum())
    if chance == 0:
        return math.nan
    return 1.0 - float((disagreement * observed).sum()) / chance


def _disagreement(k: int, weights: Weights) -> npt.NDArray[np.float64]:
    i, j = np.indices((k, k))
    if weights is None:
        return (i != j).astype(np.float64)
    distance = np.abs(i - j) / max(k - 1, 1)
    if weights == "linear":
        return distance
    if weights == "quadratic":
        return distance**2
    raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")


def cohen_kappa(r1: Sequence[Hashable | None], r2: Sequence[Hashable | None], *, weights: Weights = None,
                labels: Sequence[Hashable] | None = None) -> float:
    """Cohen's kappa of two raters' labels for the same items (position i: item i). Pairs with a None
    on either side are left out. ``labels``: every label, in scale order (weights count positions)."""
    if len(r1) != len(r2):
        raise ValueError(f"the raters' ratings must align: {len(r1)} against {len(r2)}")
    pairs = [(a, b) for a, b in zip(r1, r2, strict=True) if a is not None and b is not None]
    if not pairs:
        return math.nan
    if labels is None:
        labels = sorted({a for a, _ in pairs} | {b for _, b in pairs})  # type: ignore[type-var]
    position = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(x) for pair in pairs for x in pair if x not in position})
    if unknown:
        raise ValueError(f"ratings not among the labels: {', '.join(unknown)}")
    k = len(position)
    table = np.zeros((k, k))
    for a, b in pairs:
        table[position[a], position[b]] += 1
    return _kappa_table(table, _disagreement(k, weights))


def krippendorff_alpha(matrix: Sequence[Sequence[float | None]], level: Level = "ordinal", *,
                       value_domain: Sequence[float] | None = None) -> float:
    """Krippendorff's alpha of a raters x items matrix, None where a rater did not rate an item.
    NaN when undefined (fewer than two values in the data, or no item with two ratings)."""
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {sorted(_LEVELS)}, not {level!r}")
    widths = {len(row) for row in matrix}
    if len(widths) > 1:
        raise ValueError(f"every rater's row needs one entry per item; row lengths differ: {sorted(widths)}")
    data = np.array([[math.nan if v is None else float(v) for v in row] for row in matrix], dtype=np.float64)
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2] if data.size else data  # units rated twice or more
    if pairable.size == 0 or not np.any((~np.isnan(pairable)).sum(axis=0) >= 2):
        return math.nan
    if len(set(pairable[~np.isnan(pairable)].tolist())) < 2:
        return math.nan  # the ratings that pair up are all the same: no disagreement to expect, alpha is 0/0
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level,
                                    value_domain=None if value_domain is None else list(value_domain)))


def _scale_labels(values: set[float]) -> list[float]:
    """Integer scores fill their range, so a gap (no 3 on a 1-5 scale) keeps its distance in the weights."""
    if all(float(v).is_integer() for v in values):
        return [float(v) for v in range(int(min(values)), int(max(values)) + 1)]
    return sorted(values)


def agreement(ratings: Mapping[str, Mapping[Any, float]], ordinal: bool = True) -> dict[str, Any]:
    """Agreement of raters' scores, ``{rater: {item: score}}``, as ``{"method", "value", "raters", "n"}``
    (plus ``"note"`` when the value is None). ``n``: items rated by at least two raters.

    Exactly two raters who rated the same items: Cohen's kappa (quadratic weights when ``ordinal``,
    unweighted otherwise). Otherwise (three or more raters, or ratings missing): Krippendorff's alpha
    (ordinal, or nominal)."""
    raters = sorted(r for r, given in ratings.items() if given)
    counts: dict[Any, int] = {}
    for r in raters:
        for item in ratings[r]:
            counts[item] = counts.get(item, 0) + 1
    shared = [item for item, c in counts.items() if c >= 2]
    result: dict[str, Any] = {"method": None, "value": None, "raters": len(raters), "n": len(shared)}
    if len(raters) < 2 or not shared:
        return {**result, "note": "agreement needs two raters who rated at least one item in common"}
    if len(raters) == 2 and set(ratings[raters[0]]) == set(ratings[raters[1]]):
        items = list(ratings[raters[0]])
        first = [float(ratings[raters[0]][i]) for i in items]
        second = [float(ratings[raters[1]][i]) for i in items]
        result["method"] = "cohen_kappa_weighted" if ordinal else "cohen_kappa"
        value = cohen_kappa(first, second, weights="quadratic" if ordinal else None,
                            labels=_scale_labels(set(first) | set(second)))
    else:
        items = sorted(counts, key=str)
        matrix = [[_float(ratings[r].get(i)) for i in items] for r in raters]
        result["method"] = "krippendorff_alpha"
        value = krippendorff_alpha(matrix, "ordinal" if ordinal else "nominal")
    if math.isnan(value):
        return {**result, "note": "undefined: the ratings do not vary, so chance agreement is already perfect"}
    return {**result, "value": value}


def _float(v: float | None) -> float | None:
    return None if v is None else float(v)
