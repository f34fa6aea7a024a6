"""The LLM judge: every judge call through the gateway's ``/v1/chat/completions``, stored one row per call.

* **Pointwise**: one call per output (row, target): a score in the rubric's scale with a rationale.
* **Pairwise** (two targets): per row, both orders, A = target 0 then A = target 1; ``combine_orders`` counts a
  win only when the two agree, so position bias shows up as the flip rate instead of as wins.
* **Strict parsing** (``policies.evaluation.judge``): the judge is asked for JSON with ``response_format``
  ``json_object``; a route that refuses that parameter (HTTP 400) is asked again without it, and from then on
  for the rest of the run, its answer read by the documented pattern. An answer in neither form is stored
  as unparseable (``parsed`` false, the raw text kept), never guessed.
* **Resumable**: a call whose answer is stored is never made again; a call that failed for good (the gateway
  kept refusing) is stored with its error and tried again the next time the run is judged.
* **Bounded**: at most the run's ``concurrency`` calls in flight; answers are written in batches.

``judge_run`` reads each call's cost back from the gateway's usage records (``costs.read_costs``), then ends by
writing ``eval_runs.judge_summary`` (``judge_summary.summarize``), the per-output
``judge_score`` / ``judge_win_rate`` item scores and aggregates, and, when the run has human ratings, the
judge's agreement with them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from sqlalchemy import and_, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ModuleContext
from adapters.store import utcnow
from control.evaluation.costs import JUDGE, drop_judgments, read_costs
from control.evaluation.gateway_client import GatewayClient, Stopped
from control.evaluation.judge_summary import write_summary
from control.evaluation.protocol import JudgeConfig
from control.evaluation.tables import events, items, judgments, runs
from control.evaluation.targets import published_routes, resolve
from policies.evaluation.judge import RubricError, parse_pairwise, parse_pointwise, render_pairwise, render_pointwise

__all__ = ["Answer", "Ask", "JudgeCaller", "judge_route", "judge_run"]

log = logging.getLogger("llmops.evaluation")
_PAGE = 256  # outputs read per query
_FLUSH = 32  # judgments written per transaction
_JSON_MODE = {"type": "json_object"}


@dataclass(frozen=True)
class Answer:
    """One judge call's outcome: the text, or the error that ended it (then ``text`` is ``None``)."""

    text: str | None
    error: str | None = None
    request_id: str | None = None
    latency_s: float | None = None


Ask = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any] | None, str | None]]]


@dataclass
class JudgeCaller:
    """Asks the judge route through ``ask(body) -> (HTTP status, JSON body or None, request id)``: the worker's
    gateway client bound to the run (its service key, run tag, outage waits and retries; status 0 when no
    answer came). With JSON mode while the route accepts it: a 400 to it switches to the pattern for good.
    ``retries``: more attempts here on 0/408/429/5xx (0 when ``ask`` already retries)."""

    ask: Ask
    route: str
    retries: int = 0
    backoff_s: float = 0.5
    json_mode: bool = True
    calls: int = field(default=0, init=False)

    async def __call__(self, messages: list[dict[str, Any]]) -> Answer:
        error, request_id, latency_s = "no attempt", None, None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            json_mode = self.json_mode
            body: dict[str, Any] = {"model": self.route, "messages": messages, "temperature": 0}
            if json_mode:
                body["response_format"] = _JSON_MODE
            started = time.perf_counter()
            self.calls += 1
            status, answer, request_id = await self.ask(body)
            latency_s = time.perf_counter() - started
            if status == 400 and json_mode:  # calls in flight meanwhile come back the same way: ask them again too
                if self.json_mode:
                    log.info("judge route %s refused response_format; asking without it from now on", self.route)
                    self.json_mode = False
                return await self(messages)
            if status == 200 and answer is not None:
                return Answer(text=_content(answer), request_id=request_id, latency_s=latency_s)
            error = _error(status, answer)
            if status not in (0, 408, 429) and status < 500:
                break  # refused for good: asking again would not change the answer
        return Answer(text=None, error=error, request_id=request_id, latency_s=latency_s)


def _error(status: int, answer: dict[str, Any] | None) -> str:
    err = (answer or {}).get("error")
    message = err.get("message") if isinstance(err, dict) else None
    return f"HTTP {status}: {str(message)[:300]}" if message else f"HTTP {status}" if status else "no answer"


def _content(answer: dict[str, Any]) -> str:
    choices = answer.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else ""


@dataclass(frozen=True)
class _Job:
    idx: int
    kind: Literal["pointwise", "pairwise"]
    target: int
    order: int
    messages: list[dict[str, str]] | str  # a str: why the item cannot be judged


def _render(render: Callable[..., list[dict[str, str]]], **values: Any) -> list[dict[str, str]] | str:
    """The judge's messages, or why this item cannot be judged (e.g. a rubric needing a reference it lacks)."""
    try:
        return render(**values)
    except RubricError as err:
        return str(err)


def _pointwise_jobs(cfg: JudgeConfig, rows: list[Any], done: set[tuple[int, str, int, int]]) -> list[_Job]:
    return [_Job(r.idx, "pointwise", r.target, 0, _render(
        render_pointwise, rubric=cfg.rubric, input=r.input, output=r.output, reference=r.reference,
        context=r.context, scale_min=cfg.scale_min, scale_max=cfg.scale_max)) for r in rows
        if (r.idx, "pointwise", r.target, 0) not in done]


def _pairwise_jobs(cfg: JudgeConfig, rows: list[Any], done: set[tuple[int, str, int, int]]) -> list[_Job]:
    by_idx: dict[int, dict[int, Any]] = {}
    for r in rows:
        by_idx.setdefault(r.idx, {})[r.target] = r
    jobs = []
    for idx, pair in by_idx.items():
        if len(pair) < 2:
            continue  # one side failed: nothing to compare on this row
        first, second = pair[0], pair[1]
        for order, (a, b) in enumerate(((first, second), (second, first))):
            if (idx, "pairwise", 0, order) not in done:
                jobs.append(_Job(idx, "pairwise", 0, order, _render(
                    render_pairwise, rubric=cfg.rubric, input=first.input, output_a=a.output, output_b=b.output,
                    reference=first.reference, context=first.context)))
    return jobs


def _row(run_id: str, route: str, cfg: JudgeConfig, job: _Job, answer: Answer) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": run_id, "idx": job.idx, "kind": job.kind, "target": job.target,
                           "order": job.order, "judge_route": route, "raw": answer.text, "parsed": False,
                           "score": None, "winner": None, "rationale": None, "error": answer.error,
                           "request_id": answer.request_id, "latency_s": answer.latency_s, "created_at": utcnow()}
    if answer.text is not None:
        if job.kind == "pointwise":
            p = parse_pointwise(answer.text, cfg.scale_min, cfg.scale_max)
            row.update(parsed=p.parsed, score=p.score, rationale=p.rationale, error=p.error)
        else:
            q = parse_pairwise(answer.text)
            row.update(parsed=q.parsed, winner=q.winner, rationale=q.rationale, error=q.error)
    return row


class _Writer:
    """Buffers judgment rows and writes them ``_FLUSH`` at a time, one transaction each."""

    def __init__(self, ctx: ModuleContext) -> None:
        self.ctx = ctx
        self.rows: list[dict[str, Any]] = []
        self.lock = asyncio.Lock()

    async def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= _FLUSH:
            await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            batch, self.rows = self.rows, []
            if batch:
                async with self.ctx.store.begin() as conn:
                    await conn.execute(insert(judgments), batch)


async def _outputs(conn: AsyncConnection, run_id: str, after: int) -> list[Any]:
    """The next page of judgeable outputs (no error), whole rows only: every target of the last row read."""
    ok = and_(items.c.run_id == run_id, items.c.idx > after, items.c.error.is_(None), items.c.output.is_not(None))
    last = (await conn.execute(select(items.c.idx).where(ok).order_by(items.c.idx).offset(_PAGE).limit(1))
            ).scalar_one_or_none()
    query = select(items.c.idx, items.c.target, items.c.input, items.c.reference, items.c.context,
                   items.c.output).where(ok)
    if last is not None:
        query = query.where(items.c.idx < last)
    return list((await conn.execute(query.order_by(items.c.idx, items.c.target))).all())


async def _stopping(ctx: ModuleContext, run_id: str) -> bool:
    async with ctx.store.read() as conn:
        status = (await conn.execute(select(runs.c.status).where(runs.c.id == run_id))).scalar_one_or_none()
    return status in (None, "cancelling", "cancelled")


async def judge_route(ctx: ModuleContext, cfg: JudgeConfig) -> str:
    """The route the judge is asked through: a route as named, an endpoint's or a model's serving route
    (``targets.resolve``; ``TargetError`` naming ``judge.model.id`` when nothing serves it)."""
    if cfg.model.kind == "route":
        return cfg.model.id
    async with ctx.store.read() as conn:
        return (await resolve(ctx, conn, cfg.model, "judge.model.id", None, await published_routes(conn))).route


def _ask_through(client: GatewayClient, run_id: str, stop: Callable[[], bool]) -> Ask:
    async def ask(body: dict[str, Any]) -> tuple[int, dict[str, Any] | None, str | None]:
        reply = await client.call("/v1/chat/completions", body, run_id=run_id, what="judge", stop=stop)
        return reply.status, reply.body if isinstance(reply.body, dict) else None, reply.request_id
    return ask


async def judge_run(ctx: ModuleContext, run_id: str, judge_cfg: JudgeConfig | dict[str, Any],
                    caller: JudgeCaller | GatewayClient, *, concurrency: int | None = None,
                    stop: Callable[[], bool] = lambda: False, usage_wait_s: float = 0.0) -> dict[str, Any] | None:
    """Judge every output of the run not judged yet, read what the calls cost back from the gateway's usage
    records (waiting up to ``usage_wait_s`` for them), then write the summary and return it; ``None`` when the
    run was cancelled meanwhile (``stop()``, the run's status, or ``ask`` raising ``Stopped``): what was judged
    stays, and a later call resumes. ``caller``: a ``JudgeCaller``, or the worker's ``GatewayClient`` (the judge's
    route is then resolved here; ``TargetError`` when nothing serves it). Store errors escape (the worker
    records the judging as failed)."""
    cfg = judge_cfg if isinstance(judge_cfg, JudgeConfig) else msgspec.convert(judge_cfg, JudgeConfig)
    if not isinstance(caller, JudgeCaller):
        caller = JudgeCaller(ask=_ask_through(caller, run_id, stop), route=await judge_route(ctx, cfg))
    async with ctx.store.begin() as conn:
        run = (await conn.execute(select(runs.c.concurrency).where(runs.c.id == run_id))).one()
        # Calls that failed for good are tried again; answered ones (parsed or not) never.
        await drop_judgments(conn, run_id, judgments.c.raw.is_(None))  # what they cost stays the run's
        done = {(int(i), k, int(t), int(o)) for i, k, t, o in await conn.execute(select(
            judgments.c.idx, judgments.c.kind, judgments.c.target, judgments.c.order)
            .where(judgments.c.run_id == run_id))}
        await conn.execute(insert(events).values(run_id=run_id, at=utcnow(), event="judging_started", actor="system",
                                                 detail={"mode": cfg.mode, "route": caller.route,
                                                         "alreadyJudged": len(done)}))
    stopped = False
    try:
        await _judge_all(ctx, run_id, cfg, caller, done, concurrency or int(run.concurrency), stop)
    except* Stopped:
        stopped = True  # cancelled while the gateway was down
    if stopped or stop() or await _stopping(ctx, run_id):
        return None
    missing = await read_costs(ctx.store, run_id, (JUDGE,), wait_s=usage_wait_s)  # judging_finished: costs in
    if missing:
        log.warning("evaluation run %s: %d judge calls have no usage record after %g s; their cost is not in the "
                    "run's (the cost API counts them once written)", run_id, missing, usage_wait_s)
    return await write_summary(ctx, run_id, cfg, caller.route, json_mode=caller.json_mode)


async def _judge_all(ctx: ModuleContext, run_id: str, cfg: JudgeConfig, caller: JudgeCaller,
                     done: set[tuple[int, str, int, int]], concurrency: int, stop: Callable[[], bool]) -> None:
    limit = asyncio.Semaphore(concurrency)
    writer = _Writer(ctx)
    make = _pointwise_jobs if cfg.mode == "pointwise" else _pairwise_jobs

    async def one(job: _Job) -> None:
        try:
            answer = Answer(text=None, error=job.messages) if isinstance(job.messages, str) \
                else await caller(job.messages)
            await writer.add(_row(run_id, caller.route, cfg, job, answer))
        finally:
            limit.release()

    after = -1
    try:
        async with asyncio.TaskGroup() as tasks:
            while not stop() and not await _stopping(ctx, run_id):
                async with ctx.store.read() as conn:
                    page = await _outputs(conn, run_id, after)
                if not page:
                    break
                after = page[-1].idx
                for job in make(cfg, page, done):
                    await limit.acquire()
                    tasks.create_task(one(job))
    finally:
        await writer.flush()  # what was answered is kept, whatever ended the loop
