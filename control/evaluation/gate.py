"""The promotion gate: per model or endpoint thresholds and a non-inferiority check, judged on evaluation runs.

``GateService`` stores ``GateConfig`` per subject (``eval_gates``; every change audited) and is the
``PROMOTION_GATE`` the serving module asks before a promotion. Its verdict on a promotion:

1. Only promotions to PROD are gated; STG passes ("not gated").
2. The endpoint's own gate applies, else its model's; with neither it passes ("no gate configured").
3. The candidate's evidence is the latest succeeded run (on ``datasetId`` when set) with a target that is the
   endpoint, its route or its model; none fails. Every threshold is checked on that target's aggregate: a
   metric the run lacks, or has as unavailable, fails its threshold.
4. With ``baseline``, the baseline's latest succeeded run on the same dataset version is paired with it on
   ``nonInferiorityMetric`` (``compare.paired_difference``): the lower CI bound of the sign-adjusted
   difference (candidate minus baseline; flipped where lower is better) must be above ``-margin``.

The reason lists the numbers, the evidence names the runs. ``check`` never raises: a failure to judge (the
store down, a malformed row) is a failed verdict saying so, which an admin may override.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import msgspec
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, FieldError, ModuleContext, NotFound, SemanticError
from adapters.adminapi.seams import ENDPOINTS, MODEL_CATALOG, GateVerdict, PromotionRequest
from adapters.store import utcnow
from control.evaluation.compare import _adjusted, describe, load_arm, paired_difference
from control.evaluation.protocol import Aggregate, Gate, GateConfig, GateThreshold, Target
from control.evaluation.tables import gates, runs

__all__ = ["GateService", "SubjectKind", "target_matcher"]

log = logging.getLogger("llmops.evaluation")
SubjectKind = Literal["model", "endpoint"]
Matcher = Callable[[dict[str, Any]], bool]


def target_matcher(*, endpoint_ids: set[str] = frozenset(), routes: set[str] = frozenset(),  # type: ignore[assignment]
                   model_ids: set[str] = frozenset()) -> Matcher:  # type: ignore[assignment]
    """Whether a run's target (``{kind, id, route}``) is one of the given endpoints, routes or models."""
    def matches(t: dict[str, Any]) -> bool:
        return ((t.get("kind") == "endpoint" and t.get("id") in endpoint_ids) or t.get("route") in routes
                or (t.get("kind") == "model" and t.get("id") in model_ids))
    return matches


def _config_errors(kind: SubjectKind, cfg: GateConfig) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, t in enumerate(cfg.thresholds):
        if t.min is None and t.max is None:
            errors.append(FieldError(field=f"thresholds[{i}]", message="give min, max or both"))
        elif t.min is not None and t.max is not None and t.min > t.max:
            errors.append(FieldError(field=f"thresholds[{i}]", message="min is above max"))
        if t.metric in seen:
            errors.append(FieldError(field=f"thresholds[{i}].metric", message=f"{t.metric} is given twice"))
        seen.add(t.metric)
    parts = {"baseline": cfg.baseline, "nonInferiorityMetric": cfg.non_inferiority_metric,
             "nonInferiorityMargin": cfg.non_inferiority_margin}
    if any(v is not None for v in parts.values()):
        errors += [FieldError(field=name, message="a non-inferiority check needs baseline, nonInferiorityMetric "
                              "and nonInferiorityMargin together") for name, v in parts.items() if v is None]
    if cfg.auto_evaluate is not None and kind != "model":
        errors.append(FieldError(field="autoEvaluate", message="only a model's gate starts evaluations "
                                 "(when a training job registers the model)"))
    return errors


class GateService:
    """Gate configs (REST) and the ``PROMOTION_GATE`` verdicts; stateless over the module's store."""

    def __init__(self, ctx: ModuleContext) -> None:
        self.ctx = ctx

    # -- configs ---------------------------------------------------------------------------------

    async def _subject_exists(self, conn: AsyncConnection, kind: SubjectKind, subject_id: str) -> None:
        if kind == "model" and MODEL_CATALOG in self.ctx.services:
            await self.ctx.services[MODEL_CATALOG].get(conn, subject_id)  # NotFound: unknown or deleted
        elif (kind == "endpoint" and ENDPOINTS in self.ctx.services
              and not await self.ctx.services[ENDPOINTS].find(conn, endpoint_id=subject_id)):
            raise NotFound(f"No endpoint {subject_id!r}")

    @staticmethod
    def _gate(row: Any) -> Gate:
        return Gate(subject_kind=row.subject_kind, subject_id=row.subject_id, config=row.config,
                    updated_at=row.updated_at, updated_by=row.updated_by)

    async def _row(self, conn: AsyncConnection, kind: str, subject_id: str) -> Any:
        return (await conn.execute(select(gates).where(gates.c.subject_kind == kind,
                                                       gates.c.subject_id == subject_id))).one_or_none()

    async def put(self, actor: Actor, kind: SubjectKind, subject_id: str, cfg: GateConfig) -> Gate:
        """Create or replace the subject's gate; 404 unknown subject, 422 a config that cannot be judged."""
        errors = _config_errors(kind, cfg)
        if errors:
            raise SemanticError(errors)
        config = msgspec.to_builtins(cfg)
        now, who = utcnow(), actor.principal.name
        async with self.ctx.store.begin() as conn:
            await self._subject_exists(conn, kind, subject_id)
            before = await self._row(conn, kind, subject_id)
            if before is None:
                await conn.execute(insert(gates).values(subject_kind=kind, subject_id=subject_id, config=config,
                                                        created_at=now, updated_at=now, updated_by=who))
            else:
                await conn.execute(update(gates).where(gates.c.subject_kind == kind, gates.c.subject_id == subject_id)
                                   .values(config=config, updated_at=now, updated_by=who))
            after = await self._row(conn, kind, subject_id)
            await self.ctx.audit.record(conn, actor, action="evaluation.gate.put", resource_type="gate",
                                        resource_id=f"{kind}/{subject_id}",
                                        before=before.config if before is not None else None, after=config)
        return self._gate(after)

    async def get(self, kind: SubjectKind, subject_id: str) -> Gate:
        async with self.ctx.store.read() as conn:
            row = await self._row(conn, kind, subject_id)
        if row is None:
            raise NotFound(f"No gate on {kind} {subject_id!r}")
        return self._gate(row)

    async def delete(self, actor: Actor, kind: SubjectKind, subject_id: str) -> None:
        async with self.ctx.store.begin() as conn:
            row = await self._row(conn, kind, subject_id)
            if row is None:
                raise NotFound(f"No gate on {kind} {subject_id!r}")
            await conn.execute(delete(gates).where(gates.c.subject_kind == kind, gates.c.subject_id == subject_id))
            await self.ctx.audit.record(conn, actor, action="evaluation.gate.delete", resource_type="gate",
                                        resource_id=f"{kind}/{subject_id}", before=row.config)

    # -- verdicts --------------------------------------------------------------------------------

    async def check(self, request: PromotionRequest) -> GateVerdict:
        """The ``PromotionGate`` contract: a verdict, never an exception."""
        if request.to_environment != "PROD":
            return GateVerdict(passed=True, reason=f"not gated: only promotions to PROD are "
                                                   f"({request.from_environment} -> {request.to_environment})")
        try:
            async with self.ctx.store.read() as conn:
                return await self._judge(conn, request)
        except Exception as err:  # the contract: a verdict, never an exception; the log has the trace
            log.exception("promotion gate failed to judge endpoint %s", request.endpoint_id)
            return GateVerdict(passed=False, reason=f"the gate could not judge this promotion "
                                                    f"({type(err).__name__}); retry, or override with a reason")

    async def _judge(self, conn: AsyncConnection, request: PromotionRequest) -> GateVerdict:
        row = await self._row(conn, "endpoint", request.endpoint_id)
        if row is None:
            row = await self._row(conn, "model", request.model_id)
        if row is None:
            return GateVerdict(passed=True, reason="no gate configured for the endpoint or its model")
        cfg = msgspec.convert(row.config, GateConfig)
        evidence: dict[str, Any] = {"gate": f"{row.subject_kind}/{row.subject_id}"}
        if not cfg.thresholds and cfg.baseline is None:
            return GateVerdict(passed=True, reason="the gate sets no criteria", evidence=evidence)
        candidate = target_matcher(endpoint_ids={request.endpoint_id}, routes={request.route},
                                   model_ids={request.model_id})
        found = await _latest_run(conn, candidate, dataset_id=cfg.dataset_id)
        where = f" on dataset {cfg.dataset_id}" if cfg.dataset_id else ""
        if found is None:
            return GateVerdict(passed=False, evidence=evidence, reason=(
                f"no succeeded evaluation run{where} on endpoint {request.endpoint_name} (route {request.route}, "
                f"model {request.model_id})"))
        run_id, target = found
        arm = await load_arm(conn, run_id, run_id, target)
        evidence.update(candidateRun=run_id, candidateTarget=target,
                        dataset={"datasetId": arm.dataset_id, "version": arm.dataset_version})
        lines = [_threshold(t, arm.aggregates.get(t.metric)) for t in cfg.thresholds]
        passed = all(ok for ok, _ in lines)
        reasons = [f"run {run_id}: " + "; ".join(text for _, text in lines)] if lines else []
        if cfg.baseline is not None:
            ok, text, base = await self._non_inferior(conn, cfg, arm, candidate)
            passed = passed and ok
            reasons.append(text)
            if base is not None:
                evidence["baselineRun"], evidence["baselineTarget"] = base
        return GateVerdict(passed=passed, reason=" | ".join(reasons), evidence=evidence)

    async def _baseline_matcher(self, conn: AsyncConnection, baseline: Target) -> Matcher:
        if baseline.kind == "route":
            return target_matcher(routes={baseline.id})
        if baseline.kind == "model":
            return target_matcher(model_ids={baseline.id})
        found = await self.ctx.services[ENDPOINTS].find(conn, endpoint_id=baseline.id) \
            if ENDPOINTS in self.ctx.services else []
        return target_matcher(endpoint_ids={baseline.id}, routes={e.route for e in found})

    async def _non_inferior(self, conn: AsyncConnection, cfg: GateConfig, arm: Any,
                            candidate: Matcher) -> tuple[bool, str, tuple[str, int] | None]:
        assert cfg.baseline is not None and cfg.non_inferiority_metric is not None
        metric, margin = cfg.non_inferiority_metric, cfg.non_inferiority_margin or 0.0
        baseline = await self._baseline_matcher(conn, cfg.baseline)
        found = await _latest_run(conn, baseline, dataset_id=arm.dataset_id, dataset_version=arm.dataset_version,
                                  exclude=(arm.run_id, arm.target))
        name = f"baseline {cfg.baseline.kind} {cfg.baseline.id}"
        if found is None:
            return False, (f"no succeeded run on {name} on dataset {arm.dataset_id} v{arm.dataset_version} "
                           f"to compare {metric} with"), None
        base = await load_arm(conn, found[0], found[0], found[1])
        diff = paired_difference(base.scores.get(metric, {}), arm.scores.get(metric, {}))
        if diff is None or diff.ci_low is None:
            return False, (f"{metric} could not be compared with {name} (run {found[0]}): "
                           f"{'no shared items' if diff is None else 'too few shared items for a CI'}"), found
        low, _ = _adjusted(metric, diff)
        ok = low is not None and low > -margin
        verdict = "non-inferior" if ok else "inferior or not shown non-inferior"
        return ok, (f"{verdict} to {name} (run {found[0]}) within margin {margin:g}: "
                    f"{describe(metric, diff)}"), found


def _threshold(t: GateThreshold, agg: Aggregate | None) -> tuple[bool, str]:
    if agg is None:
        return False, f"{t.metric} missing from the run (fails)"
    if not agg.available or agg.value is None:
        return False, f"{t.metric} unavailable{': ' + agg.note if agg.note else ''} (fails)"
    bad_min = t.min is not None and agg.value < t.min
    bad_max = t.max is not None and agg.value > t.max
    bounds = " and ".join(f"{label} {v:g}" for label, v in (("min", t.min), ("max", t.max)) if v is not None)
    return not (bad_min or bad_max), f"{t.metric} {agg.value:.4g} {'fails' if bad_min or bad_max else 'meets'} {bounds}"


async def _latest_run(conn: AsyncConnection, matches: Matcher, *, dataset_id: str | None,
                      dataset_version: int | None = None, exclude: tuple[str, int] | None = None
                      ) -> tuple[str, int] | None:
    """The newest succeeded run (by finish time) with a matching target: ``(run id, target index)``."""
    query = select(runs.c.id, runs.c.targets).where(runs.c.status == "succeeded")
    if dataset_id is not None:
        query = query.where(runs.c.dataset_id == dataset_id)
    if dataset_version is not None:
        query = query.where(runs.c.dataset_version == dataset_version)
    result = await conn.stream(query.order_by(runs.c.finished_at.desc(), runs.c.id.desc()))
    async for run_id, targets in result:
        for index, target in enumerate(targets or []):
            if matches(target) and (run_id, index) != exclude:
                await result.close()
                return str(run_id), index
    return None
