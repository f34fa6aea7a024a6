"""An experiment's runtime transitions, as pure functions of (runtime, action, now).

    draft ──start──► running ──pause──► paused ──start──► running
                        │                  │
                        └──────stop────────┴──► stopped ──start──► running (a restart)

``start`` sets ``started_at`` (the ramp's anchor), clears ``rolled_back`` and the ``winner`` (a winner
stays until the experiment is restarted); a start from draft or stopped also clears the adaptive
``weights`` and ``stopped_variants`` (a fresh run), a start from paused keeps them. ``pause`` and ``stop``
keep the winner. ``rollback`` sends all traffic to the control variant (``rolled_back``) while the
experiment is running or paused; a second rollback changes nothing. Anything else is a 409.

The YAML is declarative instead (``declare_state``): a changed declaration's ``state`` is set as written,
with the same side effects when it means a start.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from adapters.adminapi import Conflict
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, ExperimentState

__all__ = ["ACTIONS", "EVENT_KINDS", "Action", "apply_action", "declare_state", "fresh_runtime", "redeclared"]

Action = Literal["start", "pause", "stop", "rollback"]
ACTIONS: tuple[Action, ...] = ("start", "pause", "stop", "rollback")
EVENT_KINDS: dict[Action, str] = {"start": "started", "pause": "paused", "stop": "stopped", "rollback": "rolled_back"}
_FROM: dict[Action, frozenset[str]] = {
    "start": frozenset({"draft", "paused", "stopped"}),
    "pause": frozenset({"running"}),
    "stop": frozenset({"running", "paused"}),
    "rollback": frozenset({"running", "paused"}),
}


def _started(runtime: ExperimentRuntime, now: float) -> ExperimentRuntime:
    fresh = runtime.state != "paused"
    return msgspec.structs.replace(
        runtime, state="running", started_at=now, rolled_back=False, winner=None,
        weights={} if fresh else runtime.weights, stopped_variants=[] if fresh else runtime.stopped_variants)


def apply_action(runtime: ExperimentRuntime, action: Action, now: float) -> ExperimentRuntime | None:
    """The runtime after ``action``; ``None`` when it changes nothing. Raises ``Conflict`` (409) when
    the action does not apply to the current state."""
    if runtime.state not in _FROM[action]:
        allowed = ", ".join(sorted(_FROM[action]))
        raise Conflict(f"Cannot {action} an experiment that is {runtime.state} (only when {allowed})",
                       {"state": runtime.state})
    if action == "start":
        return _started(runtime, now)
    if action == "rollback":
        return None if runtime.rolled_back else msgspec.structs.replace(runtime, rolled_back=True)
    return msgspec.structs.replace(runtime, state="paused" if action == "pause" else "stopped")


def fresh_runtime(state: ExperimentState, revision: int, now: float) -> ExperimentRuntime:
    """The runtime of a new experiment whose declaration says ``state``."""
    return declare_state(ExperimentRuntime(revision=revision), state, now)


def declare_state(runtime: ExperimentRuntime, state: ExperimentState, now: float) -> ExperimentRuntime:
    """The YAML's ``state`` applied to ``runtime`` as written (a start when it says running and was not)."""
    if state == runtime.state:
        return runtime
    if state == "running":
        return _started(runtime, now)
    return msgspec.structs.replace(runtime, state=state)


def redeclared(runtime: ExperimentRuntime, doc: ExperimentDoc, revision: int) -> ExperimentRuntime:
    """The runtime carried over to a new declaration: adaptive weights, stopped variants and a winner
    survive only for variants the new declaration still has."""
    names = {v.name for v in doc.variants}
    return msgspec.structs.replace(
        runtime, revision=revision,
        weights={k: w for k, w in runtime.weights.items() if k in names},
        stopped_variants=[v for v in runtime.stopped_variants if v in names],
        winner=runtime.winner if runtime.winner in names else None)
