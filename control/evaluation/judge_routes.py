"""``POST /evaluation/runs/{runId}/llm-judge``: judge a finished run (developer).

Checked at once (one 422 listing each field at fault): the scale, the rubric (compiled as the judge will
use it: a bad inline template or an unknown built-in name), a pairwise judge on a run of two targets, a
rubric's reference or context mapped, and a judge model or endpoint that some route serves. The run must
have finished with outputs to judge: succeeded, or failed (e.g. an ``llm_judge`` run whose judge could not
be reached: its outputs are kept and can be judged again); 409 otherwise, and while a judging is still
queued or running. The judge is then recorded
on the run with ``judge_status`` queued; the worker (any replica) claims it as it claims active runs, judges
(``judging.judge_run``) and marks it succeeded or failed. A different judge than the run had replaces the
earlier judgments (what their calls cost stays in the run's judge cost); the same one resumes where it
stopped.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.params import Parameter
from sqlalchemy import insert, select, update

from adapters.adminapi import (
    Actor,
    Conflict,
    Envelope,
    FieldError,
    ModuleContext,
    NotFound,
    Role,
    SemanticError,
    ok,
    requires,
)
from adapters.store import utcnow
from control.evaluation.costs import drop_judgments
from control.evaluation.protocol import JudgeConfig, JudgeRequest, Run
from control.evaluation.services import EVALUATION
from control.evaluation.tables import events, items, runs
from control.evaluation.targets import TargetError, published_routes, resolve
from policies.evaluation.judge import RubricError, compile_rubric

__all__ = ["CONTROLLERS", "JudgeController", "request_judging"]

RunId = Annotated[str, Parameter(min_length=1, max_length=40, description="the run's id (run_…)")]
_RAISES: list[Any] = [Conflict, NotFound, SemanticError]
JUDGE_METRICS = ("judge_score", "judge_win_rate")


def _config_errors(cfg: JudgeConfig, row: Any) -> list[FieldError]:
    errors: list[FieldError] = []
    if cfg.scale_min >= cfg.scale_max:
        errors.append(FieldError(field="judge.scaleMax", message="must be above judge.scaleMin"))
    if cfg.mode == "pairwise" and len(row.targets) != 2:
        errors.append(FieldError(field="judge.mode", message=f"a pairwise judge needs a run of two targets; run "
                                                             f"{row.id} has {len(row.targets)}"))
    try:
        _, builtin = compile_rubric(cfg.rubric, cfg.mode)
    except RubricError as err:
        return [*errors, FieldError(field="judge.rubric", message=str(err))]
    mapping = row.mapping or {}
    for needed, column in (("needs_reference", "reference"), ("needs_context", "context")):
        if builtin is not None and getattr(builtin, needed) and not mapping.get(column):
            errors.append(FieldError(field="judge.rubric", message=f"rubric {builtin.name!r} needs a {column}, and "
                                                                   f"the run maps no {column} column"))
    return errors


async def request_judging(ctx: ModuleContext, actor: Actor, run_id: str, cfg: JudgeConfig) -> Run:
    service = ctx.services[EVALUATION]
    async with ctx.store.begin() as conn:
        row = await service.row(conn, run_id, lock=True)
        if row.status not in ("succeeded", "failed"):
            raise Conflict(f"Run {run_id!r} is {row.status}; only a finished run (succeeded, or failed, e.g. "
                           "when its judge could not be reached) can be judged", {"status": row.status})
        judgeable = (await conn.execute(select(items.c.idx).where(
            items.c.run_id == run_id, items.c.error.is_(None), items.c.output.is_not(None)).limit(1))).first()
        if judgeable is None:
            raise Conflict(f"Run {run_id!r} has no output to judge", {"status": row.status})
        if row.judge_status in ("queued", "running"):
            raise Conflict(f"Run {run_id!r} is already being judged ({row.judge_status}); wait for it to finish",
                           {"judgeStatus": row.judge_status})
        errors = _config_errors(cfg, row)
        try:
            await resolve(ctx, conn, cfg.model, "judge.model.id", service.live_settings().gateway_routes,
                          await published_routes(conn))
        except TargetError as err:
            errors.append(err.error)
        if errors:
            raise SemanticError(errors)
        before = await service.view(conn, run_id)
        new = msgspec.to_builtins(cfg)
        values: dict[str, Any] = {"judge": new, "judge_status": "queued", "updated_at": utcnow()}
        if row.judge != new:  # another judge: its verdicts are not this one's
            await drop_judgments(conn, run_id)  # what the replaced judge cost stays in the run's judge cost
            values.update(judge_summary=None, metrics_summary={
                t: {m: a for m, a in per.items() if m not in JUDGE_METRICS}
                for t, per in (row.metrics_summary or {}).items()})
        await conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
        await conn.execute(insert(events).values(run_id=run_id, at=utcnow(), event="judging_queued",
                                                 actor=actor.principal.name,
                                                 detail={"mode": cfg.mode, "judge": new["model"],
                                                         "replaces": row.judge is not None and row.judge != new}))
        after = await service.view(conn, run_id)
        await ctx.audit.record(conn, actor, action="evaluation.run.judge", resource_type="evaluation_run",
                               resource_id=run_id, before=before, after=after,
                               detail=f"{cfg.mode} judge {cfg.model.kind} {cfg.model.id}, rubric "
                                      f"{cfg.rubric if len(cfg.rubric) <= 40 else 'inline'}")
    service.wake()
    return after


class JudgeController(Controller):
    path = "/evaluation/runs/{runId:str}/llm-judge"
    tags = ["evaluation"]

    @post("/", status_code=202, opt=requires(Role.developer), raises=_RAISES,
          summary="Judge a finished run with an LLM judge (queued; the worker judges it)",
          description="202: the run with its judging queued (its timeline shows judging_queued, then "
                      "judging_started and judging_finished, or judging_failed). "
                      "Pointwise: one call per output; pairwise (a run of two targets): both orders per row, a "
                      "win only when they agree. 409: the run is not finished (succeeded or failed) with "
                      "outputs, or is being judged; 422: a bad rubric or scale, a pairwise judge on one target, "
                      "a judge no route serves.")
    async def judge(self, runId: RunId, data: JudgeRequest, ctx: ModuleContext, caller: Actor) -> Envelope[Run]:
        return ok(await request_judging(ctx, caller, runId, data.judge), "Judging queued")


CONTROLLERS = [JudgeController]
