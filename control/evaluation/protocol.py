"""Wire types of the evaluation module (camelCase JSON; unknown fields rejected on input).

Paths under ``/llm-ops/v1/evaluation/``, every answer in the envelope:

======  ==========================================  =====================  =======================================
method  path                                        body                   answer ``data``
======  ==========================================  =====================  =======================================
POST    runs                                        ``RunCreate``          ``Run`` (201; queued, then the worker)
GET     runs?modelId&datasetId&type&status&from&to  ―                      ``Page`` of ``RunSummary``
GET     runs/compare?runIds=a,b[,…]                 ―                      ``Comparison``
GET     runs/{runId}                                ―                      ``Run`` (metrics, samples, timeline)
GET     runs/{runId}/items?page&pageSize            ―                      ``Page`` of ``Item``
GET     runs/{runId}/export?format=csv|json         ―                      the items, streamed (not enveloped)
POST    runs/{runId}/cancel                         ―                      ``Run``
POST    runs/{runId}/llm-judge                      ``JudgeRequest``       ``Run`` (judging queued)
GET     runs/{runId}/human-review/tasks?reviewer    ―                      ``Page`` of ``ReviewTask``
POST    runs/{runId}/human-review                   ``ReviewSubmit``       ``ReviewSummary``
PUT     gates/{subjectKind}/{subjectId}             ``GateConfig``         ``Gate`` (subjectKind: model|endpoint)
GET     gates/{subjectKind}/{subjectId}             ―                      ``Gate``
DELETE  gates/{subjectKind}/{subjectId}             ―                      ``{"deleted": true}``
======  ==========================================  =====================  =======================================

Roles: reads ``viewer``; runs, judging and gates ``developer``; human review: the assigned reviewer (any role
from ``viewer``), or an ``operator``.

Metric names (``MetricName``): ``bleu``, ``chrf`` (sacrebleu; the signature is reported), ``rouge1``,
``rouge2``, ``rougeL`` (rouge-score with a Unicode tokenizer), ``exact_match``, ``token_f1`` (SQuAD
normalisation), ``perplexity`` (from logprobs; ``available: false`` when the upstream gives none),
``latency_s``, ``prompt_tokens``, ``completion_tokens``, ``cost_usd``, ``judge_score`` (pointwise),
``judge_win_rate`` (pairwise), ``human_score``. Every aggregate carries a bootstrap 95% CI. ``cost_usd`` is
the target's generation call only: it compares what two models cost to answer, which the perplexity call and
the judge's calls (the evaluation's own costs) would distort; a run's ``costs`` has every part.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "Aggregate",
    "ColumnMapping",
    "Comparison",
    "DatasetSel",
    "Gate",
    "GateConfig",
    "GateThreshold",
    "Item",
    "JudgeConfig",
    "JudgeRequest",
    "MetricComparison",
    "MetricName",
    "Recommendation",
    "ReviewConfig",
    "ReviewSubmit",
    "ReviewSummary",
    "ReviewTask",
    "Run",
    "RunCosts",
    "RunCreate",
    "RunStatus",
    "RunSummary",
    "RunType",
    "Target",
]

RunType = Literal["automated", "human", "llm_judge", "combined"]
# waiting: an automatic run whose model no route serves yet (its target's route is null); queued once one does
RunStatus = Literal["waiting", "queued", "running", "cancelling", "cancelled", "succeeded", "failed"]
MetricName = Literal["bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity",
                     "latency_s", "prompt_tokens", "completion_tokens", "cost_usd", "judge_score",
                     "judge_win_rate", "human_score"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ResourceId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Column = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=20_000)]


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    pass


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class Target(_In, frozen=True, kw_only=True):
    """What answers: a gateway route, a serving endpoint (its route), or a catalog model (the route serving it)."""

    kind: Literal["route", "endpoint", "model"]
    id: ResourceId


class DatasetSel(_In, frozen=True, kw_only=True):
    dataset_id: ResourceId
    version: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None  # None: the latest ready version


class ColumnMapping(_In, frozen=True, kw_only=True):
    """``input`` (a prompt string) or ``messages`` (a chat list), not both; ``reference`` for reference metrics."""

    input: Column | None = None
    messages: Column | None = None
    reference: Column | None = None
    context: Column | None = None


class JudgeConfig(_In, frozen=True, kw_only=True):
    """The judge is a gateway route or a catalog model; ``rubric`` a built-in name or an inline Jinja2 template
    (sandboxed) over ``input``, ``reference``, ``context``, ``output`` (pointwise) or ``output_a``/``output_b``."""

    model: Target
    mode: Literal["pointwise", "pairwise"] = "pointwise"
    rubric: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)] = "helpfulness"
    scale_min: int = 1
    scale_max: Annotated[int, msgspec.Meta(le=100)] = 5


class ReviewConfig(_In, frozen=True, kw_only=True):
    reviewers: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]],
                         msgspec.Meta(min_length=1, max_length=50)]  # key ids or user names
    raters_per_item: Annotated[int, msgspec.Meta(ge=1, le=10)] = 2
    rubric: Annotated[str, msgspec.Meta(max_length=20_000)] = ""
    scale_min: int = 1
    scale_max: Annotated[int, msgspec.Meta(le=100)] = 5


class RunCreate(_In, frozen=True, kw_only=True):
    name: Name
    type: RunType = "automated"
    targets: Annotated[list[Target], msgspec.Meta(min_length=1, max_length=2)]  # two: a pairwise run
    dataset: DatasetSel
    mapping: ColumnMapping
    metrics: Annotated[list[MetricName], msgspec.Meta(max_length=20)] | None = None  # None: the type's defaults
    params: dict[str, Any] = {}  # generation parameters passed through (temperature, max_tokens, …)
    judge: JudgeConfig | None = None  # llm_judge / combined
    review: ReviewConfig | None = None  # human / combined
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    limit: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None  # the first N rows only


class JudgeRequest(_In, frozen=True, kw_only=True):
    judge: JudgeConfig


class ReviewSubmit(_In, frozen=True, kw_only=True):
    item: Annotated[int, msgspec.Meta(ge=0)]  # the item's index (its dataset row)
    score: float
    comment: Annotated[str, msgspec.Meta(max_length=5000)] = ""
    target: Annotated[int, msgspec.Meta(ge=0, le=1)] = 0  # which target's output, in a pairwise run


class Aggregate(_Out, frozen=True, kw_only=True):
    value: float | None  # None: unavailable (e.g. perplexity without logprobs), never 0 in its place
    ci_low: float | None
    ci_high: float | None
    n: int
    available: bool = True
    note: str = ""  # e.g. sacrebleu's signature, or why unavailable


class RunSummary(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    type: RunType
    status: RunStatus
    targets: list[dict[str, str | None]]  # {kind, id, route}; route null while the run is waiting
    dataset: dict[str, Any]  # {datasetId, version, name}
    model_ids: list[str]
    progress: dict[str, int]  # done, failed, total
    created_at: datetime
    created_by: str
    finished_at: datetime | None


class RunCosts(_Out, frozen=True, kw_only=True):
    """What the run's gateway calls cost, by kind (``costs``); ``None``: no priced call of that kind."""

    generation_usd: Decimal | None  # the items' answers: the ``cost_usd`` metric, and ``Run.cost_usd``
    perplexity_usd: Decimal | None  # the second call per item that ``perplexity`` makes
    judge_usd: Decimal | None  # every judge call, those of a judge since replaced included
    total_usd: Decimal | None  # the sum of the parts that are not None


class Run(RunSummary, frozen=True, kw_only=True):
    metrics: dict[str, dict[str, Aggregate]]  # target index ("0"/"1") -> metric -> aggregate
    judge: dict[str, Any] | None  # mode, judge route, parsed/unparseable counts, flip rate (pairwise), win rates
    human: dict[str, Any] | None  # ReviewSummary as a dict
    samples: list[dict[str, Any]]  # the first items: input, reference, outputs, scores
    timeline: list[dict[str, Any]]  # {at, event, detail}
    error: str | None
    cost_usd: Decimal | None  # generation only (kept as documented); ``costs`` has every part and the total
    costs: RunCosts


class Item(_Out, frozen=True, kw_only=True):
    index: int
    input: Any
    reference: str | None
    outputs: list[dict[str, Any]]  # per target: text, latency_s, prompt/completion tokens, cost_usd, error, request_id
    scores: dict[str, dict[str, float | None]]  # target index -> metric -> value
    judgments: list[dict[str, Any]] = []  # per judge call: kind, target, order, parsed, score|winner, rationale, raw
    reviews: list[dict[str, Any]] = []  # per rating: target, reviewer, score, comment, at


class ReviewTask(_Out, frozen=True, kw_only=True):
    run_id: str
    item: int
    target: int
    input: Any
    output: str
    reference: str | None
    rubric: str
    scale_min: int
    scale_max: int
    done: bool


class ReviewSummary(_Out, frozen=True, kw_only=True):
    ratings: int
    items_rated: int
    mean_score: Aggregate
    agreement: dict[str, Any]  # {"method": "cohen_kappa_weighted"|"krippendorff_alpha", "value", "raters", "n"}
    judge_agreement: dict[str, Any] | None  # the judge vs the humans, same measures, when both exist


class MetricComparison(_Out, frozen=True, kw_only=True):
    metric: str
    values: dict[str, Aggregate]  # run id -> aggregate
    difference: Aggregate | None  # paired (shared items): second run minus first, paired-bootstrap CI
    shared_items: int
    higher_is_better: bool
    differences: dict[str, Aggregate | None] = {}  # with more than two runs: each later one minus the first


class Recommendation(_Out, frozen=True, kw_only=True):
    promote: bool
    reasons: list[str]


class Comparison(_Out, frozen=True, kw_only=True):
    run_ids: list[str]
    metrics: list[MetricComparison]
    recommendation: Recommendation


class GateThreshold(_In, frozen=True, kw_only=True):
    metric: MetricName
    min: float | None = None
    max: float | None = None


class GateConfig(_In, frozen=True, kw_only=True):
    """Promotion to PROD needs the latest finished run on the candidate to meet ``thresholds`` (on ``datasetId``
    when set) and, with ``baseline`` and ``nonInferiorityMargin`` set, a paired comparison of that run against
    the latest finished run on ``baseline`` (the production route or endpoint) on the same dataset version whose
    CI lower bound on ``nonInferiorityMetric`` (candidate minus baseline, sign-adjusted) is above ``-margin``."""

    thresholds: Annotated[list[GateThreshold], msgspec.Meta(max_length=20)] = []
    dataset_id: ResourceId | None = None
    baseline: Target | None = None
    non_inferiority_metric: MetricName | None = None
    non_inferiority_margin: Annotated[float, msgspec.Meta(ge=0)] | None = None
    auto_evaluate: RunCreate | None = None  # run this when a training job registers the model (EVALUATIONS)


class Gate(_Out, frozen=True, kw_only=True):
    subject_kind: Literal["model", "endpoint"]
    subject_id: str
    config: dict[str, Any]
    updated_at: datetime
    updated_by: str
