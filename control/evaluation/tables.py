"""Evaluation tables and migrations (module ``evaluation``).

``eval_runs``
    One row per run: what it evaluates (``targets``: ``[{kind, id, route}]``, resolved at creation, except a
    ``waiting`` run's model, whose route stays ``null`` until the worker finds one; ``model_ids`` the catalog
    models behind them), on which dataset version and ``mapping``, with which ``metrics``,
    ``params``, ``judge`` and ``review`` settings (``RunCreate``'s pieces as JSON), how wide (``concurrency``)
    and how far (``row_limit``). ``status`` follows ``RunStatus``; ``done``/``failed``/``total`` count items
    over all targets, written in batches by the worker. The worker that runs it holds a lease
    (``lease_owner``, ``lease_until``, renewed while it works): a run whose lease expired (its replica died) is
    taken over by the next worker that looks. ``metrics_summary`` is ``{target index: {metric: Aggregate}}``;
    ``judge_summary`` and ``human_summary`` are the judging and review modules' results. ``judge_status``
    (``None``, or queued, running, succeeded, failed) lets judging be asked for on a finished run: the worker
    claims runs with a queued or running judge as it claims active runs. ``trigger`` says what started the run
    when no person did (e.g. ``training:job_…``).
``eval_run_models``
    ``(run_id, model_id)``, one per catalog model a run's targets resolve to: the ``modelId`` list filter.
``eval_items``
    One row per dataset row and target: ``PRIMARY KEY (run_id, target, idx)``, so an item can never be stored
    twice, whatever restarts or takeovers happen (the worker inserts and ignores a conflict). Output, latency,
    tokens, cost, the gateway's request id, the error of an item that failed for good, and ``scores``
    (``{metric: value | None}``; ``None`` is unavailable, e.g. perplexity without logprobs).
``eval_judgments``
    One row per judge call: ``kind`` pointwise (``target`` the judged target, ``order`` 0) or pairwise
    (``target`` 0, ``order`` 0 for A = target 0, 1 for the swapped order). ``raw`` is the judge's answer as
    received; ``parsed`` whether it met the documented format (``score``/``winner`` are ``NULL`` when not).
``eval_assignments``
    Which reviewer rates which item's output; ``eval_reviews``: their ratings, one per
    ``(run_id, idx, target, reviewer)`` (a second submission replaces the first).
``eval_gates``
    A promotion gate per subject (``model`` or ``endpoint`` id): ``GateConfig`` as JSON.
``eval_events``
    A run's timeline, append-only: created, started, resumed (by which worker), paused (gateway outage),
    cancelling, finished, judging and review steps, with a short JSON detail.

Costs (migration 2): every call a run makes is priced by the gateway, and the worker copies each call's cost
from its usage record (by request id) next to the call: ``eval_items.cost_usd`` (generation, the per-item
``cost_usd`` metric), ``eval_items.perplexity_request_id``/``perplexity_cost_usd`` (the perplexity call, NULL
when none was made, and on rows written before migration 2), ``eval_judgments.cost_usd`` (each judge call).
``eval_runs.replaced_judge_cost_usd`` keeps the cost of judge calls whose rows were deleted (a judge replaced
by another, a failed call asked again), so the run's judge cost still counts them.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store import AutoId, Json, Migration, UsdAmount, UtcDateTime, create_tables

__all__ = [
    "EVALUATION_MIGRATIONS",
    "assignments",
    "events",
    "gates",
    "items",
    "judgments",
    "reviews",
    "run_models",
    "runs",
]

_RUN_FK = "eval_runs.id"


def _tables(meta: MetaData, *, version: int = 2) -> tuple[Table, ...]:
    """The tables as migration ``version`` leaves them (each migration builds from its own, frozen)."""
    run = Table(
        "eval_runs", meta,
        Column("id", String(40), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("type", String(12), nullable=False),  # automated | human | llm_judge | combined
        Column("status", String(12), nullable=False),  # RunStatus
        Column("targets", Json, nullable=False),  # [{kind, id, route}]
        Column("model_ids", Json, nullable=False),  # [model id]
        Column("dataset_id", String(100), nullable=False),
        Column("dataset_version", Integer, nullable=False),
        Column("dataset_name", String(200), nullable=False),
        Column("mapping", Json, nullable=False),  # ColumnMapping
        Column("metrics", Json, nullable=False),  # [MetricName]
        Column("params", Json, nullable=False),
        Column("judge", Json),  # JudgeConfig
        Column("review", Json),  # ReviewConfig
        Column("concurrency", Integer, nullable=False),
        Column("row_limit", Integer),
        Column("done", Integer, nullable=False),
        Column("failed", Integer, nullable=False),
        Column("total", Integer, nullable=False),
        Column("metrics_summary", Json),
        Column("judge_summary", Json),
        Column("human_summary", Json),
        Column("judge_status", String(12)),
        Column("error", Text),
        Column("cost_usd", UsdAmount),
        Column("trigger", String(200)),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("started_at", UtcDateTime),
        Column("finished_at", UtcDateTime),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("lease_owner", String(100)),
        Column("lease_until", UtcDateTime),
    )
    if version >= 2:
        run.append_column(Column("replaced_judge_cost_usd", UsdAmount))
    Index("ix_eval_runs_created", run.c.created_at, run.c.id)
    Index("ix_eval_runs_dataset", run.c.dataset_id, run.c.created_at)
    Index("ix_eval_runs_type", run.c.type, run.c.created_at)
    Index("ix_eval_runs_status", run.c.status, run.c.lease_until)
    Index("ix_eval_runs_judge_status", run.c.judge_status)
    models = Table(
        "eval_run_models", meta,
        Column("run_id", String(40), ForeignKey(_RUN_FK), primary_key=True),
        Column("model_id", String(100), primary_key=True),
    )
    Index("ix_eval_run_models_model", models.c.model_id, models.c.run_id)
    item = Table(
        "eval_items", meta,
        Column("run_id", String(40), ForeignKey(_RUN_FK), primary_key=True),
        Column("target", Integer, primary_key=True),
        Column("idx", Integer, primary_key=True),
        Column("input", Json),  # the prompt string or the messages list sent
        Column("reference", Text),
        Column("context", Text),
        Column("output", Text),
        Column("latency_s", Float),
        Column("prompt_tokens", Integer),
        Column("completion_tokens", Integer),
        Column("cost_usd", UsdAmount),
        Column("request_id", String(100)),
        Column("error", Text),
        Column("scores", Json, nullable=False),  # {metric: value | None}
        Column("created_at", UtcDateTime, nullable=False),
    )
    if version >= 2:
        item.append_column(Column("perplexity_request_id", String(100)))
        item.append_column(Column("perplexity_cost_usd", UsdAmount))
    judgment = Table(
        "eval_judgments", meta,
        Column("run_id", String(40), ForeignKey(_RUN_FK), primary_key=True),
        Column("idx", Integer, primary_key=True),
        Column("kind", String(10), primary_key=True),  # pointwise | pairwise
        Column("target", Integer, primary_key=True),
        Column("order", Integer, primary_key=True),
        Column("judge_route", String(200), nullable=False),
        Column("raw", Text),
        Column("parsed", Boolean, nullable=False),
        Column("score", Float),
        Column("winner", String(8)),  # A | B | tie
        Column("rationale", Text),
        Column("error", Text),
        Column("request_id", String(100)),
        Column("latency_s", Float),
        Column("cost_usd", UsdAmount),
        Column("created_at", UtcDateTime, nullable=False),
    )
    assignment = Table(
        "eval_assignments", meta,
        Column("run_id", String(40), ForeignKey(_RUN_FK), primary_key=True),
        Column("idx", Integer, primary_key=True),
        Column("target", Integer, primary_key=True),
        Column("reviewer", String(100), primary_key=True),
        Column("assigned_at", UtcDateTime, nullable=False),
    )
    Index("ix_eval_assignments_reviewer", assignment.c.run_id, assignment.c.reviewer)
    review = Table(
        "eval_reviews", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("run_id", String(40), ForeignKey(_RUN_FK), nullable=False),
        Column("idx", Integer, nullable=False),
        Column("target", Integer, nullable=False),
        Column("reviewer", String(100), nullable=False),
        Column("score", Float, nullable=False),
        Column("comment", Text, nullable=False),
        Column("at", UtcDateTime, nullable=False),
        UniqueConstraint("run_id", "idx", "target", "reviewer", name="uq_eval_reviews_rating"),
    )
    gate = Table(
        "eval_gates", meta,
        Column("subject_kind", String(10), primary_key=True),  # model | endpoint
        Column("subject_id", String(100), primary_key=True),
        Column("config", Json, nullable=False),  # GateConfig
        Column("created_at", UtcDateTime, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("updated_by", String(100), nullable=False),
    )
    event = Table(
        "eval_events", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("run_id", String(40), ForeignKey(_RUN_FK), nullable=False),
        Column("at", UtcDateTime, nullable=False),
        Column("event", String(40), nullable=False),
        Column("actor", String(100), nullable=False),  # a key's name, "worker:<owner>" or "system"
        Column("detail", Json, nullable=False),
    )
    Index("ix_eval_events_run", event.c.run_id, event.c.id)
    return run, models, item, judgment, assignment, review, gate, event


async def _costs_v2(conn: AsyncConnection) -> None:
    # Nullable, no default: both databases add these without rewriting the tables; old rows read NULL.
    for table, column, kind in (("eval_items", "perplexity_request_id", "VARCHAR(100)"),
                                ("eval_items", "perplexity_cost_usd", "BIGINT"),  # UsdAmount: nano-dollars
                                ("eval_runs", "replaced_judge_cost_usd", "BIGINT")):
        await conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))


EVALUATION_MIGRATIONS = (
    Migration(1, "evaluation runs, items, judgments, reviews, assignments, gates and run events",
              create_tables(*_tables(MetaData(), version=1))),
    Migration(2, "evaluation costs: the perplexity call's request id and cost per item; replaced judge calls' cost",
              _costs_v2),
)

runs, run_models, items, judgments, assignments, reviews, gates, events = _tables(MetaData())
