"""One run on one worker, from its lease to its final status.

Generation reads the dataset version in file order (``DATASET_READER.rows``) and, per row and target,
skips what ``eval_items`` already holds (a restart or a takeover resumes there), then calls the gateway
with at most ``concurrency`` items in flight; an item stays in flight until its row is committed
(``ItemWriter``: group commit, ``ON CONFLICT DO NOTHING``), so a crash loses at most those, and the primary
key ``(run_id, target, idx)`` makes a second copy impossible even if two workers ever raced. An item whose
calls failed is stored with its error and counts as done and failed; the run goes on. The run row itself is
written by the ``_ticker`` only, every ``progress_s``: progress, the lease (renewed only while this worker
still owns it: losing it stops the job without another write) and, read back, whether someone asked to
cancel.

Finishing: the cost of each item's generation and perplexity calls from the gateway's own usage records
(``costs.read_costs``: by request id, waiting up to ``usage_wait_s`` for the usage writer), the scores and
aggregates (``scoring``), then the judge (``judging.judge_run``, its calls' costs read back the same way)
and review assignments (``review.assign``) when the run's type has them, and the final status:
``cancelled``, ``failed`` (nothing succeeded, or a step failed), else ``succeeded``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import AdminError
from adapters.adminapi.seams import DATASET_READER
from adapters.store import UsdAmount, utcnow
from control.evaluation.costs import GENERATION, JUDGE, PERPLEXITY, Calls, read_costs
from control.evaluation.gateway_client import Reply, Stopped
from control.evaluation.item_writer import ItemWriter
from control.evaluation.prompts import RowError, RowItem, chat_body, from_row, perplexity_body, read_perplexity
from control.evaluation.tables import events, items, runs
from control.evaluation.targets import TargetError

if TYPE_CHECKING:
    from control.evaluation.worker import Worker

__all__ = ["LeaseLost", "RunJob"]

log = logging.getLogger("llmops.evaluation")
_BATCH_ROWS = 256
_WRITE_CHUNK = 500


class LeaseLost(Exception):
    """Another worker owns the run now: stop without writing."""


class RunJob:
    def __init__(self, worker: Worker, run_id: str) -> None:
        self.worker = worker
        self.ctx = worker.ctx
        self.store = worker.ctx.store
        self.run_id = run_id
        self.writer = ItemWriter(worker.ctx.store)
        self.cancel_requested = False
        self.paused = False
        self.perplexity_note = ""
        self._crash: BaseException | None = None

    # -- run-row writes -------------------------------------------------------------------------------

    async def _event(self, event: str, detail: dict[str, Any] | None = None, *,
                     conn: AsyncConnection | None = None) -> None:
        values = {"run_id": self.run_id, "at": utcnow(), "event": event, "actor": f"worker:{self.worker.owner}",
                  "detail": detail or {}}
        if conn is not None:
            await conn.execute(insert(events).values(**values))
            return
        async with self.store.begin() as own:
            await own.execute(insert(events).values(**values))

    def _owned(self) -> Any:
        return and_(runs.c.id == self.run_id, runs.c.lease_owner == self.worker.owner)

    async def _tick(self) -> None:
        now = utcnow()
        async with self.store.begin() as conn:
            changed = await conn.execute(update(runs).where(self._owned()).values(
                done=self.writer.done, failed=self.writer.failed, updated_at=now,
                lease_until=now + timedelta(seconds=self.worker.settings.lease_s)))
            if changed.rowcount == 0:
                raise LeaseLost()
            status = (await conn.execute(select(runs.c.status).where(runs.c.id == self.run_id))).scalar_one()
        if status == "cancelling":
            self.cancel_requested = True

    async def _ticker(self, job: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(self.worker.settings.progress_s)
            try:
                await self._tick()
            except LeaseLost:
                log.warning("evaluation run %s: lease lost to another worker; stopping here", self.run_id)
                job.cancel(LeaseLost.__name__)
                return
            except Exception as err:  # the database is down: keep working, the lease may lapse
                log.warning("evaluation run %s: progress not written (%s)", self.run_id, err)

    # -- the run ------------------------------------------------------------------------------------

    async def run(self) -> None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == self.run_id))).one()
        job = asyncio.current_task()
        assert job is not None
        ticker = asyncio.create_task(self._ticker(job))
        self.worker.warm_up()
        try:
            if row.status in ("queued", "running", "cancelling"):
                await self._generate(row)
            elif row.judge_status in ("queued", "running"):
                await self._judge_only(row)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _start(self, row: Any) -> Any:
        now = utcnow()
        async with self.store.begin() as conn:
            if row.status == "queued":
                started = await conn.execute(update(runs).where(self._owned(), runs.c.status == "queued").values(
                    status="running", started_at=now, updated_at=now))
                if started.rowcount:
                    await self._event("started", {"total": int(row.total)}, conn=conn)
            counted = (await conn.execute(select(func.count(), func.count(items.c.error)).where(
                items.c.run_id == self.run_id))).one()
            self.writer.done, self.writer.failed = int(counted[0]), int(counted[1])
            if row.status != "queued":
                await self._event("resumed", {"done": self.writer.done, "failed": self.writer.failed}, conn=conn)
            return (await conn.execute(select(runs).where(runs.c.id == self.run_id))).one()

    async def _generate(self, row: Any) -> None:
        row = await self._start(row)
        self.cancel_requested = row.status in ("cancelling", "cancelled")
        error: str | None = None
        if not self.cancel_requested:
            try:
                await self._items(row)
            except AdminError as err:  # the dataset version went away or is no longer ready
                error = f"the dataset cannot be read: {err.message}"
        await self._finish(row, error)

    async def _items(self, row: Any) -> None:
        """Start every item not stored yet, ``concurrency`` at a time; return once those started are done."""
        slots = asyncio.Semaphore(int(row.concurrency))
        in_flight: set[asyncio.Task[None]] = set()
        batches = self.ctx.services[DATASET_READER].rows(row.dataset_id, row.dataset_version, batch_rows=_BATCH_ROWS)
        idx = 0
        try:
            async for batch in batches:
                first, idx = idx, idx + len(batch)
                if not await self._batch(row, first, batch, slots, in_flight):
                    break
        except asyncio.CancelledError:  # shutdown or a lost lease: drop what is in flight (it is asked again)
            for task in in_flight:
                task.cancel()
            raise
        finally:
            close = getattr(batches, "aclose", None)  # stopped early: let the reader close its file now
            if close is not None:
                await close()
            if in_flight:  # a cancel of the run lets those in flight finish and be stored
                await asyncio.gather(*in_flight, return_exceptions=True)
            await self.writer.flush()
        if self._crash is not None:
            raise self._crash

    async def _batch(self, row: Any, first: int, batch: list[dict[str, Any]], slots: asyncio.Semaphore,
                     in_flight: set[asyncio.Task[None]]) -> bool:
        """Start the batch's missing items; ``False`` once the run should start no more (limit, cancel)."""
        limit: int | None = row.row_limit
        perplexity = "perplexity" in row.metrics and bool(row.mapping.get("reference"))
        async with self.store.read() as conn:
            stored = {(int(t), int(i)) for t, i in await conn.execute(select(items.c.target, items.c.idx).where(
                items.c.run_id == self.run_id, items.c.idx >= first, items.c.idx < first + len(batch)))}
        for offset, data in enumerate(batch):
            i = first + offset
            if (limit is not None and i >= limit) or self.cancel_requested:
                return False
            for t, target in enumerate(row.targets):
                if (t, i) in stored:
                    continue
                await slots.acquire()
                if self.cancel_requested or self._crash is not None:
                    slots.release()
                    return False
                task = asyncio.create_task(self._item(row, t, target["route"], i, data, perplexity))
                in_flight.add(task)
                task.add_done_callback(self._item_done(in_flight, slots))
        return limit is None or first + len(batch) < limit

    def _item_done(self, in_flight: set[asyncio.Task[None]], slots: asyncio.Semaphore
                   ) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None and self._crash is None:
                self._crash = task.exception()  # e.g. the database went down: the job stops, the lease lapses
        return done

    async def _on_pause(self, why: str) -> None:
        if not self.paused:
            self.paused = True
            log.warning("evaluation run %s paused: %s", self.run_id, why)
            await self._event("paused", {"reason": why})

    async def _call(self, path: str, body: dict[str, Any], what: str) -> Reply:
        reply = await self.worker.client.call(path, body, run_id=self.run_id, what=what,
                                              stop=lambda: self.cancel_requested, on_pause=self._on_pause)
        if self.paused:
            self.paused = False
            await self._event("resumed_after_outage", {})
        return reply

    async def _item(self, row: Any, t: int, route: str, i: int, data: dict[str, Any], perplexity: bool) -> None:
        values: dict[str, Any] = {"run_id": self.run_id, "target": t, "idx": i, "scores": {}}
        try:
            item: RowItem = from_row(data, row.mapping)
        except RowError as err:
            values.update(input=None, error=f"row {i}: {err}")
            await self._store(values)
            return
        values.update(input=item.input, reference=item.reference, context=item.context)
        try:
            reply = await self._call("/v1/chat/completions", chat_body(route, item, row.params), f"{t}.{i}")
            values.update(request_id=reply.request_id, latency_s=reply.latency_s, error=reply.error)
            if reply.ok:
                values.update(_answer(reply.body))
                if perplexity and item.reference is not None:
                    value, values["perplexity_request_id"] = await self._perplexity(route, item, f"{t}.{i}.ppl")
                    values["scores"] = {"perplexity": value}
        except Stopped:
            return  # cancelled while the gateway was down: the item was never answered, nothing to keep
        await self._store(values)

    async def _perplexity(self, route: str, item: RowItem, what: str) -> tuple[float | None, str]:
        """The perplexity (``None``: unavailable) and the call's request id (its cost is read back by it)."""
        reply = await self._call("/v1/completions", perplexity_body(route, item), what)
        value = read_perplexity(reply.body, item) if reply.ok else None
        if value is None and not self.perplexity_note:
            self.perplexity_note = (f"the upstream returned no logprobs (HTTP {reply.status}: {reply.error})"
                                    if not reply.ok else "the upstream returned no logprobs")
        return value, reply.request_id

    async def _store(self, values: dict[str, Any]) -> None:
        await self.writer.add(values)

    # -- finishing ----------------------------------------------------------------------------------

    async def _finish(self, row: Any, error: str | None) -> None:
        await self._tick()  # the lease is still ours, progress exact, a late cancel seen
        await self._read_costs(GENERATION, PERPLEXITY)
        await self._score(row)
        status = "cancelled" if self.cancel_requested else "succeeded"
        done, failed = self.writer.done, self.writer.failed
        if error is None and status == "succeeded" and done and done == failed:
            first = await self._first_error()
            error = f"every item failed; the first: {first}"
        if error is None and status == "succeeded":
            error = await self._after_generation(row)
        if error is not None:
            status = "failed"
        now = utcnow()
        async with self.store.begin() as conn:
            cost = (await conn.execute(select(type_coerce(func.sum(items.c.cost_usd), UsdAmount)).where(
                items.c.run_id == self.run_id))).scalar()
            finished = await conn.execute(update(runs).where(self._owned()).values(
                status=status, error=error, done=done, failed=failed,
                cost_usd=cost, finished_at=now,
                updated_at=now, lease_owner=None, lease_until=None))
            if finished.rowcount == 0:
                raise LeaseLost()
            await self._event("finished", {"status": status, "done": done, "failed": failed,
                                           **({"error": error} if error else {})}, conn=conn)
        log.info("evaluation run %s %s: %d items, %d failed", self.run_id, status, done, failed)

    async def _first_error(self) -> str:
        async with self.store.read() as conn:
            return str((await conn.execute(select(items.c.error).where(
                items.c.run_id == self.run_id, items.c.error.is_not(None))
                .order_by(items.c.idx, items.c.target).limit(1))).scalar_one_or_none())

    async def _read_costs(self, *kinds: Calls) -> None:
        """The cost of the run's calls of ``kinds``, from the gateway's usage records (``costs.read_costs``)."""
        wait_s = self.worker.settings.usage_wait_s
        missing = await read_costs(self.store, self.run_id, kinds, wait_s=wait_s)
        if missing:
            log.warning("evaluation run %s: %d calls have no usage record after %g s; their cost is not in the "
                        "run's (the cost API counts them once written)", self.run_id, missing, wait_s)

    async def _score(self, row: Any) -> None:
        from control.evaluation.scoring import ItemView, score_target  # sacrebleu, rouge-score: seconds to import

        async with self.store.read() as conn:
            stored = (await conn.execute(select(items).where(items.c.run_id == self.run_id)
                                         .order_by(items.c.target, items.c.idx))).all()
        per_target: dict[int, list[ItemView]] = {t: [] for t in range(len(row.targets))}
        for r in stored:
            per_target[int(r.target)].append(ItemView(
                idx=int(r.idx), output=r.output if r.error is None else None, reference=r.reference,
                latency_s=r.latency_s, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                cost_usd=r.cost_usd, perplexity=(r.scores or {}).get("perplexity")))
        wanted = list(row.metrics)
        results = await asyncio.to_thread(lambda: {t: score_target(wanted, views, perplexity_note=self.perplexity_note)
                                                   for t, views in per_target.items()})
        updates = [{"t": t, "i": idx, "s": s} for t, (scores, _) in results.items() for idx, s in scores.items()]
        async with self.store.begin() as conn:
            for start in range(0, len(updates), _WRITE_CHUNK):
                await conn.execute(update(items).where(
                    items.c.run_id == self.run_id, items.c.target == bindparam("t"), items.c.idx == bindparam("i"))
                    .values(scores=bindparam("s")), updates[start:start + _WRITE_CHUNK])
            # Merged: the judge's and the reviewers' aggregates (written by their steps) stay.
            stored_summary = (await conn.execute(select(runs.c.metrics_summary).where(
                runs.c.id == self.run_id))).scalar_one() or {}
            summary = {str(t): {**stored_summary.get(str(t), {}), **{m: _builtins(a) for m, a in aggregates.items()}}
                       for t, (_, aggregates) in results.items()}
            await conn.execute(update(runs).where(self._owned()).values(metrics_summary=summary))

    async def _after_generation(self, row: Any) -> str | None:
        """The judge, then review assignments, for the run types that have them; the error that failed it."""
        if row.type in ("llm_judge", "combined") and row.judge:
            error = await self._judge(row)
            if error:
                return error
        if row.type in ("human", "combined") and row.review:
            assign = _optional("control.evaluation.review", "assign")
            if assign is None:
                return "human review is not available in this version"
            await assign(self.ctx, self.run_id)
        return None

    async def _judge(self, row: Any) -> str | None:
        judge_run = _optional("control.evaluation.judging", "judge_run")
        if judge_run is None:
            return "LLM judging is not available in this version"
        async with self.store.begin() as conn:
            await conn.execute(update(runs).where(self._owned()).values(judge_status="running"))
        error: str | None = None
        summary: dict[str, Any] | None = None
        try:
            summary = await judge_run(self.ctx, self.run_id, row.judge, self.worker.client,
                            stop=lambda: self.cancel_requested, concurrency=int(row.concurrency),
                            usage_wait_s=self.worker.settings.usage_wait_s)
        except TargetError as err:
            error = f"judging failed: {err.error.field}: {err.error.message}"
        except AdminError as err:
            error = f"judging failed: {err.message}"
        except (asyncio.CancelledError, LeaseLost):
            raise
        except Exception as err:
            log.exception("evaluation run %s: judging failed", self.run_id)
            error = f"judging failed: {type(err).__name__}"
        if summary is None:  # cancelled or failed: the calls made cost the same (judged: judge_run read them)
            await self._read_costs(JUDGE)
        await self._judged("failed" if error else "cancelled" if self.cancel_requested else "succeeded")
        return error

    async def _judged(self, status: str) -> None:
        async with self.store.begin() as conn:
            await conn.execute(update(runs).where(self._owned()).values(judge_status=status, updated_at=utcnow()))

    async def _judge_only(self, row: Any) -> None:
        """Judging asked for on a finished run (``POST runs/{id}/llm-judge``): the judge alone."""
        error = await self._judge(row)
        async with self.store.begin() as conn:
            await conn.execute(update(runs).where(self._owned()).values(lease_owner=None, lease_until=None))
            if error:
                await self._event("judging_failed", {"error": error}, conn=conn)


def _answer(body: Any) -> dict[str, Any]:
    """Output text and token counts from an OpenAI chat answer."""
    choices = body.get("choices") if isinstance(body, dict) else None
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(
        choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    usage = body.get("usage") if isinstance(body, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return {"output": content if isinstance(content, str) else "",
            "prompt_tokens": usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None,
            "completion_tokens": usage.get("completion_tokens")
            if isinstance(usage.get("completion_tokens"), int) else None}


def _builtins(aggregate: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(aggregate)


def _optional(module: str, name: str) -> Callable[..., Awaitable[Any]] | None:
    """A step another part of this module provides (judging, review), when it is installed."""
    import importlib

    try:
        found: Callable[..., Awaitable[Any]] = getattr(importlib.import_module(module), name)
        return found
    except (ImportError, AttributeError):
        return None
