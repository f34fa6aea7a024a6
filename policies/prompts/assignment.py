"""Sticky A/B assignment: which variant of an experiment a request gets. Pure: no I/O; the caller passes the clock.

A unit (a user, session, episode, API key or header value: ``unit_of``) is hashed with the
experiment's id into two independent uniforms (``unit_point``): ``u1`` decides whether the unit is
in the experiment (``u1 < allocation``) and ``u2`` which variant (cumulative weights). The hash is
blake2b, never Python's salted ``hash()``, so every replica and every restart agrees without a store
read. Because ``u1`` is fixed per unit, a ramp that raises the allocation only adds units: one that
is in stays in, in the same variant (``u2`` is independent of ``u1``). A unit keeps its variant
while the weights are unchanged; adaptive allocation, which changes them, moves some units on purpose.

What the runtime state means (``Assigner.assign``), first match wins:

* ``rolled_back``: the control variant for everyone, tagged (rollback is the emergency brake, so it
  overrides even a declared winner);
* ``winner``: the winner for everyone, tagged, in any state;
* ``running``: the allocation's share of units is split over the variants, tagged; the rest get
  ``None`` (the route as usual);
* ``paused`` or ``stopped``: the control variant, untagged (not counted for the experiment);
* ``draft``: ``None``.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple, Protocol

from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, VariantDoc

__all__ = ["Assigner", "Assignment", "ExperimentLike", "unit_of", "unit_point"]

_PERSON: Final = b"llmops-ab-v1"  # blake2b personalisation: these hashes serve nothing else
_TO_UNIT: Final = 2.0 ** -53


def unit_point(experiment_id: str, unit: str) -> tuple[float, float]:
    """Two independent uniforms in [0, 1) for (experiment, unit), the same in every process.

    Each comes from 53 bits of a 128-bit blake2b digest (53: all a float's mantissa holds exactly)."""
    data = f"{experiment_id}\x00{unit}".encode(errors="surrogatepass")
    digest = hashlib.blake2b(data, digest_size=16, person=_PERSON).digest()
    return ((int.from_bytes(digest[:8], "big") >> 11) * _TO_UNIT, (int.from_bytes(digest[8:], "big") >> 11) * _TO_UNIT)


class Assignment(NamedTuple):
    """The variant a request gets. ``tagged``: the request counts for the experiment (the gateway sets
    experiment and variant on its usage record and response headers)."""

    variant: VariantDoc
    tagged: bool


class ExperimentLike(Protocol):
    """What ``Assigner`` reads: ``adapters.snapshots.ExperimentSpec`` (policies/ may not import adapters)."""

    @property
    def document(self) -> ExperimentDoc: ...

    @property
    def runtime(self) -> ExperimentRuntime: ...


class Assigner:
    """Assignment for one experiment at one runtime state: build it once per snapshot (it precomputes
    the cumulative weights), call ``assign`` per request."""

    __slots__ = ("_cumulative", "_fixed", "_id", "_ramp", "_running", "_tagged", "_target", "_total", "document")

    def __init__(self, spec: ExperimentLike) -> None:
        doc, runtime = spec.document, spec.runtime
        self.document = doc
        self._id = doc.id
        by_name = {v.name: v for v in doc.variants}
        control = by_name.get(doc.control_variant, doc.variants[0])
        self._running = False
        self._fixed: Assignment | None = None  # what everyone gets when not running (None: the route as usual)
        if runtime.rolled_back:
            self._fixed = Assignment(control, True)
        elif runtime.winner is not None:
            # a winner no longer among the variants (a later revision dropped it): control, still counted
            self._fixed = Assignment(by_name.get(runtime.winner, control), True)
        elif runtime.state in ("paused", "stopped"):
            self._fixed = Assignment(control, False)
        else:
            self._running = runtime.state == "running"
        weights = [_weight(runtime, v) for v in doc.variants]
        if sum(weights) <= 0:  # every arm stopped (or weighted 0): all of the experiment's traffic to control
            weights = [1.0 if v is control else 0.0 for v in doc.variants]
        self._tagged = tuple(Assignment(v, True) for v, w in zip(doc.variants, weights, strict=True) if w > 0)
        self._cumulative: list[float] = []
        total = 0.0
        for w in weights:
            if w > 0:
                total += w
                self._cumulative.append(total)
        self._total = total
        self._target = doc.allocation
        self._ramp: tuple[float | None, float, float] | None = None  # (started at, start allocation, duration_s)
        if doc.ramp is not None:
            start = min(doc.ramp.start_allocation, doc.allocation)  # a ramp only ever grows
            self._ramp = (runtime.started_at, start, doc.ramp.duration_s)

    def allocation(self, now: float) -> float:
        """The share of units in the experiment at ``now`` (epoch seconds): the ramp's, or the document's."""
        if self._ramp is None:
            return self._target
        began, start, duration_s = self._ramp
        if began is None:  # running without a start time: hold the ramp at its start
            return start
        return start + (self._target - start) * min(max((now - began) / duration_s, 0.0), 1.0)

    def assign(self, unit: str | None, now: float, rand: Callable[[], float] = random.random) -> Assignment | None:
        """The request's assignment, or None (not in the experiment: the route as usual). ``unit`` None:
        drawn from ``rand`` (random assignment, not sticky)."""
        if not self._running:
            return self._fixed
        if unit is None:
            u1, u2 = rand(), rand()
        else:
            u1, u2 = unit_point(self._id, unit)
        if u1 >= (self._target if self._ramp is None else self.allocation(now)):
            return None
        i = bisect.bisect_right(self._cumulative, u2 * self._total)
        return self._tagged[min(i, len(self._tagged) - 1)]  # min: float rounding at the top end


def _weight(runtime: ExperimentRuntime, variant: VariantDoc) -> float:
    """The variant's effective weight: the adaptive weights when set (a variant they omit gets 0), else
    the document's; a stopped variant, or a weight that is negative or not finite, gets 0."""
    if variant.name in runtime.stopped_variants:
        return 0.0
    w = runtime.weights.get(variant.name, 0.0) if runtime.weights else variant.weight
    return w if math.isfinite(w) and w > 0 else 0.0


def unit_of(doc: ExperimentDoc, body: Mapping[str, Any], headers: Mapping[str, str],
            key_id: str | None) -> str | None:
    """The request's unit per ``doc.unit``, or None (a missing, empty or non-string value): ``user``
    (the body's ``user``), ``session`` / ``episode`` (``llmops.session_id`` / ``llmops.episode_id``
    in the body, else the ``x-llmops-session-id`` / ``x-llmops-episode-id`` header), ``key`` (the API
    key's id) or ``header:<name>`` (``headers`` is read with lower-cased names)."""
    kind = doc.unit
    value: Any
    if kind == "user":
        value = body.get("user")
    elif kind == "session" or kind == "episode":
        extra = body.get("llmops")
        value = extra.get(f"{kind}_id") if isinstance(extra, Mapping) else None
        if not (isinstance(value, str) and value):
            value = headers.get(f"x-llmops-{kind}-id")
    elif kind == "key":
        value = key_id
    else:
        value = headers.get(kind.partition(":")[2].lower())
    return value if isinstance(value, str) and value else None
