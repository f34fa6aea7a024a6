"""The experiment supervisor: guardrail auto-stop, adaptive weights and the declared winner.

A background task of the prompts module. Every ``interval_s``, for each running experiment:

* **guardrails** (when it has any, and a variant besides control still runs): the results' analysis
  (``results.evaluate``: the run's records since its start, at most ``sample_cap`` per-request rows per
  variant; not again before ``DUTY`` times the check's own duration); each variant in breach is stopped
  (event ``guardrail_stop``, detail: metric, value, threshold, kind, requests), so the gateway gives it
  no new traffic from the next snapshot;
* **adaptive** experiments, at their own ``adaptive.interval_s``: the allocator's weights are written
  (event ``weights``) when one moved by ``min_weight_change`` or more, and once the evidence meets the
  experiment's confidence the winner is declared (event ``winner``): it takes all the traffic and is
  never replaced; only a restart clears it.

Every write goes through ``update_runtime`` (one transaction: the runtime, the event, the audit entry
``prompts.experiment.<kind>`` and the experiments snapshot), as a compare-and-set: the change is a
function of the runtime read under the row lock, and it writes nothing unless the runtime is still the
one the decision was made on (same run, still running, the variant not stopped yet, no winner yet,
the weights unchanged). **Several replicas** may therefore all run the supervisor with no leader: they
make the same decisions (the analysis is seeded by the data, so equal data gives equal numbers) and the
first write wins; the others find nothing left to change and write no event. The adaptive cadence is
cluster-wide too: the allocator does not run while the last ``weights`` event is younger than
``adaptive.interval_s``. The cost is that each replica reads the records (bounded by the cap); set
``analysis.supervisor: false`` on replicas that should not.

A database outage is logged (once, then once when it is back) and retried at the next tick; nothing
escapes the task but its cancellation. Shutdown stops it between two steps, or cancels it after a grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from sqlalchemy import select

from adapters.adminapi.errors import AdminError
from adapters.store import Store, StoreError
from control.prompts.results import DEFAULT_DRAWS, Evaluation, effective_weights, evaluate, run_start, stable_seed
from control.prompts.tables import experiment_events
from policies.prompts.adaptive import allocate
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime
from policies.prompts.stats import Breach

__all__ = ["ACTOR", "DUTY", "RuntimeRegistry", "Supervisor", "TickReport"]

log = logging.getLogger("llmops.prompts.supervisor")

ACTOR = "supervisor"
DUTY = 20
"""A check of one experiment is not repeated before ``DUTY`` times its own duration has passed, so a
very large experiment (a long scan of its records) costs at most about 1/DUTY of a core."""
Change = Callable[[ExperimentRuntime], "ExperimentRuntime | None"]


class RuntimeRegistry(Protocol):
    """The experiments service's seam the supervisor uses (``control.prompts.service.PromptsService``)."""

    async def running(self) -> list[tuple[ExperimentDoc, ExperimentRuntime]]: ...

    async def update_runtime(self, experiment_id: str, change: Change, *, actor: str, kind: str, message: str,
                             detail: dict[str, Any]) -> ExperimentRuntime | None: ...


@dataclass
class TickReport:
    """What one tick did (for tests and the log)."""

    experiments: int = 0
    checked: int = 0
    stopped: list[tuple[str, str]] = field(default_factory=list)  # (experiment, variant)
    reweighted: list[str] = field(default_factory=list)
    winners: list[tuple[str, str]] = field(default_factory=list)
    failed: int = 0


def _same_run(rt: ExperimentRuntime, started_at: float | None) -> bool:
    return rt.state == "running" and rt.started_at == started_at


def _stop(variant: str, started_at: float | None) -> Change:
    def change(rt: ExperimentRuntime) -> ExperimentRuntime | None:
        if not _same_run(rt, started_at) or variant in rt.stopped_variants or rt.winner == variant:
            return None
        return msgspec.structs.replace(rt, stopped_variants=[*rt.stopped_variants, variant])
    return change


def _declare(winner: str, weights: dict[str, float], started_at: float | None) -> Change:
    def change(rt: ExperimentRuntime) -> ExperimentRuntime | None:
        if not _same_run(rt, started_at) or rt.winner is not None or winner in rt.stopped_variants:
            return None
        return msgspec.structs.replace(rt, winner=winner, weights=weights)
    return change


def _reweigh(before: ExperimentRuntime, weights: dict[str, float]) -> Change:
    def change(rt: ExperimentRuntime) -> ExperimentRuntime | None:
        if (not _same_run(rt, before.started_at) or rt.winner is not None or rt.weights != before.weights
                or rt.stopped_variants != before.stopped_variants):
            return None
        return msgspec.structs.replace(rt, weights=weights)
    return change


def _shares(doc: ExperimentDoc, rt: ExperimentRuntime) -> dict[str, float]:
    """The split the allocator's weights are compared with: the one the gateway makes now."""
    return effective_weights(doc, rt)


def _moved(old: Mapping[str, float], new: Mapping[str, float], by: float) -> bool:
    return any(abs(new.get(n, 0.0) - old.get(n, 0.0)) >= by for n in {*old, *new})


def _first_breaches(breaches: list[Breach], skip: set[str]) -> list[Breach]:
    """One breach per variant (the first guardrail it broke), none for variants already out."""
    seen: dict[str, Breach] = {}
    for b in breaches:
        if b.variant not in skip:
            seen.setdefault(b.variant, b)
    return list(seen.values())


class Supervisor:
    def __init__(self, store: Store, registry: RuntimeRegistry, *, interval_s: float = 10.0,
                 sample_cap: int = 20_000, draws: int = DEFAULT_DRAWS, min_weight_change: float = 0.02,
                 shutdown_grace_s: float = 5.0, read_timeout_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store, self._registry = store, registry
        self.interval_s, self._cap, self._draws = interval_s, sample_cap, draws
        self._min_change, self._grace_s, self._clock = min_weight_change, shutdown_grace_s, clock
        self._timeout_s = read_timeout_s
        self._quiet_until: dict[str, float] = {}  # experiment -> no check before (clock)
        self._adaptive_at: dict[tuple[str, float | None], float] = {}  # (experiment, run) -> when it last ran
        self._stopping = asyncio.Event()
        self._down = False

    # -- one pass ----------------------------------------------------------------------------------

    async def tick(self) -> TickReport:
        """Supervise every running experiment once. Never raises (but cancellation): a failure is logged
        and the next tick tries again."""
        report = TickReport()
        try:
            running = await self._registry.running()
        except StoreError as err:
            self._outage(err)
            report.failed += 1
            return report
        except Exception:
            log.exception("experiment supervisor: listing running experiments failed; retrying next tick")
            report.failed += 1
            return report
        report.experiments = len(running)
        for doc, runtime in running:
            if self._stopping.is_set():
                break
            try:
                await self._supervise(doc, runtime, report)
            except StoreError as err:
                self._outage(err)
                report.failed += 1
            except AdminError as err:  # deleted or changed meanwhile: the next tick sees the new state
                log.info("experiment %s not supervised this tick: %s", doc.id, err.message)
            except Exception:
                log.exception("experiment %s: supervisor step failed; retrying next tick", doc.id)
                report.failed += 1
        if not report.failed and self._down:
            self._down = False
            log.info("experiment supervisor: database reachable again")
        return report

    def _outage(self, err: StoreError) -> None:
        if not self._down:
            log.warning("experiment supervisor: database unavailable, retrying every %.0f s: %s", self.interval_s, err)
        self._down = True

    async def _supervise(self, doc: ExperimentDoc, rt: ExperimentRuntime, report: TickReport) -> None:
        active = [v.name for v in doc.variants if v.name not in rt.stopped_variants]
        guard = bool(doc.guardrails) and rt.winner is None and any(n != doc.control_variant for n in active)
        adaptive = doc.adaptive is not None and rt.winner is None and await self._adaptive_due(doc, rt)
        if not (guard or adaptive) or self._clock() < self._quiet_until.get(doc.id, 0.0):
            return
        report.checked += 1
        began = time.perf_counter()
        try:
            ev = await evaluate(self._store, doc, rt, since=run_start(rt), cap=self._cap, draws=self._draws,
                                adapt=adaptive, timeout_s=self._timeout_s)
        finally:  # a check that took long waits DUTY times as long before the next: bounded work
            self._quiet_until[doc.id] = self._clock() + DUTY * (time.perf_counter() - began)
        for breach in _first_breaches(ev.analysis.breaches, {*rt.stopped_variants, doc.control_variant}):
            updated = await self._registry.update_runtime(
                doc.id, _stop(breach.variant, rt.started_at), actor=ACTOR, kind="guardrail_stop",
                message=f"variant {breach.variant} stopped by a guardrail: {breach.metric} {breach.value:.6g} > "
                        f"{breach.threshold:.6g} ({breach.kind.replace('_', ' ')})",
                detail={"variant": breach.variant, "metric": breach.metric, "value": breach.value,
                        "threshold": breach.threshold, "kind": breach.kind,
                        "requests": ev.loaded.data[breach.variant].requests})
            if updated is not None:
                rt = updated
                report.stopped.append((doc.id, breach.variant))
                log.warning("experiment %s: variant %s stopped (%s %.6g > %.6g)", doc.id, breach.variant,
                            breach.metric, breach.value, breach.threshold)
        if adaptive:
            await self._adapt(doc, rt, ev, report)

    async def _adaptive_due(self, doc: ExperimentDoc, rt: ExperimentRuntime) -> bool:
        """Due when this replica has not run it for ``adaptive.interval_s`` and no replica wrote weights
        for as long (the last ``weights`` event of this run)."""
        assert doc.adaptive is not None
        last = self._adaptive_at.get((doc.id, rt.started_at))
        if last is not None and self._clock() - last < doc.adaptive.interval_s:
            return False
        async with self._store.read() as conn:
            at = (await conn.execute(
                select(experiment_events.c.at).where(experiment_events.c.experiment_id == doc.id,
                                                     experiment_events.c.kind == "weights")
                .order_by(experiment_events.c.id.desc()).limit(1))).scalar_one_or_none()
        if at is None:
            return True
        recent = self._clock() - at.timestamp() < doc.adaptive.interval_s
        return not (recent and (rt.started_at is None or at.timestamp() >= rt.started_at))

    async def _adapt(self, doc: ExperimentDoc, rt: ExperimentRuntime, ev: Evaluation, report: TickReport) -> None:
        decision = ev.decision
        if decision is None or rt.stopped_variants != ev.runtime.stopped_variants:  # a variant stopped just now
            decision = await asyncio.to_thread(allocate, doc, ev.loaded.data, rt,
                                               seed=stable_seed(doc.id, ev.loaded.data), draws=self._draws)
        self._adaptive_at[(doc.id, rt.started_at)] = self._clock()
        weights = {n: round(w, 4) for n, w in decision.weights.items()}
        if decision.winner is not None and rt.winner is None:
            updated = await self._registry.update_runtime(
                doc.id, _declare(decision.winner, weights, rt.started_at), actor=ACTOR, kind="winner",
                message=f"winner declared: {decision.winner} ({decision.reason})",
                detail={"winner": decision.winner, "metric": doc.metric, "probBest": decision.prob_best,
                        "confidence": doc.confidence})
            if updated is not None:
                report.winners.append((doc.id, decision.winner))
                log.warning("experiment %s: winner %s declared (%s)", doc.id, decision.winner, decision.reason)
            return
        if not _moved(_shares(doc, rt), weights, self._min_change):
            return
        updated = await self._registry.update_runtime(
            doc.id, _reweigh(rt, weights), actor=ACTOR, kind="weights",
            message=f"adaptive weights: {', '.join(f'{n} {w:.3f}' for n, w in weights.items())}",
            detail={"weights": weights, "previous": _shares(doc, rt), "probBest": decision.prob_best,
                    "reason": decision.reason})
        if updated is not None:
            report.reweighted.append(doc.id)

    # -- the background task -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Tick now and every ``interval_s`` while the block runs; stop cleanly when it ends."""
        self._stopping.clear()
        task = asyncio.create_task(self._loop(), name="llmops-prompts-supervisor")
        try:
            yield
        finally:
            self._stopping.set()
            try:
                await asyncio.wait_for(task, self._grace_s)  # cancels it past the grace
            except TimeoutError:
                log.warning("experiment supervisor cancelled mid-tick at shutdown (its transaction rolled back)")

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
