"""Which metrics a run computes, and the checks a ``RunCreate`` must pass beyond its schema (422s).

A run's metric list is what the caller asked for, or its type's defaults; the four operational metrics
(latency, tokens, cost) are always added, since every item keeps them anyway. Reference metrics need a
``reference`` column; ``perplexity`` costs a second gateway call per item, so it is computed only when asked.
"""

from __future__ import annotations

from typing import Any

from adapters.adminapi import FieldError
from control.evaluation.protocol import RunCreate

__all__ = ["JUDGE_METRICS", "OPERATIONAL", "REFERENCE", "create_errors", "metrics_for"]

REFERENCE = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1")
OPERATIONAL = ("latency_s", "prompt_tokens", "completion_tokens", "cost_usd")
JUDGE_METRICS = ("judge_score", "judge_win_rate")
_NEEDS_REFERENCE = frozenset((*REFERENCE, "perplexity"))
_RESERVED_PARAMS = ("model", "messages", "prompt", "stream", "stream_options", "n", "echo", "logprobs")


def metrics_for(data: RunCreate) -> list[str]:
    """The run's metrics in a stable order: asked (or defaults), then the operational ones."""
    if data.metrics is not None:
        chosen: list[str] = list(dict.fromkeys(data.metrics))
    else:
        chosen = list(REFERENCE) if data.mapping.reference else []
        if data.type in ("llm_judge", "combined") and data.judge is not None:
            chosen.append("judge_win_rate" if data.judge.mode == "pairwise" else "judge_score")
        if data.type in ("human", "combined"):
            chosen.append("human_score")
    return chosen + [m for m in OPERATIONAL if m not in chosen]


def create_errors(data: RunCreate) -> list[FieldError]:
    """Cross-field rules of a run request (what the schema cannot say), each naming its field."""
    errors: list[FieldError] = []
    judged, reviewed = data.type in ("llm_judge", "combined"), data.type in ("human", "combined")
    if judged and data.judge is None:
        errors.append(FieldError(field="judge", message=f"a {data.type} run needs a judge"))
    if reviewed and data.review is None:
        errors.append(FieldError(field="review", message=f"a {data.type} run needs a review configuration"))
    if data.judge is not None:
        if data.judge.mode == "pairwise" and len(data.targets) != 2:
            errors.append(FieldError(field="targets", message="a pairwise judge needs exactly two targets"))
        if data.judge.scale_min >= data.judge.scale_max:
            errors.append(FieldError(field="judge.scaleMax", message="must be above judge.scaleMin"))
    if data.review is not None:
        if data.review.scale_min >= data.review.scale_max:
            errors.append(FieldError(field="review.scaleMax", message="must be above review.scaleMin"))
        if data.review.raters_per_item > len(set(data.review.reviewers)):
            errors.append(FieldError(field="review.ratersPerItem",
                                     message="cannot exceed the number of distinct reviewers"))
    if len({(t.kind, t.id) for t in data.targets}) != len(data.targets):
        errors.append(FieldError(field="targets", message="the two targets are the same"))
    m = data.mapping
    if (m.input is None) == (m.messages is None):
        errors.append(FieldError(field="mapping.input", message="map exactly one of input and messages"))
    for metric in data.metrics or ():
        if metric in _NEEDS_REFERENCE and m.reference is None:
            errors.append(FieldError(field="mapping.reference", message=f"metric {metric} needs a reference column"))
        elif metric in JUDGE_METRICS and not judged:
            errors.append(FieldError(field="metrics", message=f"{metric} needs a run of type llm_judge or combined"))
        elif metric == "human_score" and not reviewed:
            errors.append(FieldError(field="metrics", message="human_score needs a run of type human or combined"))
    for name in _RESERVED_PARAMS:
        if name in data.params:
            errors.append(FieldError(field=f"params.{name}", message="set by the evaluation itself"))
    return errors


def column_errors(data: RunCreate, columns: list[str]) -> list[FieldError]:
    """Each mapped column must exist in the dataset version."""
    errors = []
    for name in ("input", "messages", "reference", "context"):
        column: Any = getattr(data.mapping, name)
        if column is not None and column not in columns:
            errors.append(FieldError(field=f"mapping.{name}",
                                     message=f"the dataset has no column {column!r} (it has {', '.join(columns)})"))
    return errors
