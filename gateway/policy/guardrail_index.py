"""Which guardrails apply to which team, compiled once per policies snapshot, off the request path.

``GuardrailIndex`` compiles, for one ``PoliciesSnapshot``, the guardrails of every team its
scopes name and of everyone else (the unscoped policies only): a lookup is one dict read.
Compiling is not free (a large term list's regex, and the first ``regex`` rule loads
pyarrow for RE2, about a second), so ``LiveIndex`` keeps serving the index it has while the
next one is compiled in a worker thread, and swaps it in when ready: a policy change takes
effect once compiled, a few milliseconds after the gateway receives it. Only the very first
index of a plug-in instance is built on the spot, so no request is ever served without the
rules of some snapshot. A snapshot without guardrails needs no compiling and applies at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from adapters.snapshots import ControlSnapshots, PoliciesSnapshot
from policies.documents import PolicyDocument
from policies.guardrails import Guardrails, compile_guardrails

__all__ = ["GuardrailIndex", "LiveIndex"]

log = logging.getLogger("llmops.guardrails")

_UNSET: Any = object()


class GuardrailIndex:
    """One snapshot's guardrails by team. A team whose rules cannot be enforced (a regex RE2
    refuses) maps to the error, raised on each of its requests: the plug-in's ``failure`` decides."""

    def __init__(self, snapshot: PoliciesSnapshot, cap: int) -> None:
        docs = [(p.name, p.document, frozenset(p.document.scope.teams))
                for p in snapshot.policies if p.document.guardrails]
        compiled: dict[tuple[int, ...], Guardrails | Exception | None] = {}

        def for_team(team: str | None) -> Guardrails | Exception | None:
            applying = tuple(i for i, (_, _, teams) in enumerate(docs) if not teams or team in teams)
            if applying not in compiled:  # teams sharing the same policies share one compile
                compiled[applying] = _compile([(docs[i][0], docs[i][1]) for i in applying], cap, team)
            return compiled[applying]

        self.empty = not docs
        self._default = for_team(None)
        self._by_team = {team: for_team(team) for _, _, teams in docs for team in teams}

    def lookup(self, team: str | None) -> Guardrails | None:
        found = self._default if team is None else self._by_team.get(team, self._default)
        if isinstance(found, Exception):
            raise found
        return found


def _compile(applying: list[tuple[str, PolicyDocument]], cap: int, team: str | None) -> Guardrails | Exception | None:
    try:
        return compile_guardrails(applying, cap=cap)
    except ValueError as err:  # RE2 cannot run a pattern the governance module accepted
        log.error("guardrails for team %s cannot be enforced: %s", team or "(none)", err)
        return RuntimeError(f"guardrails cannot be enforced: {err}")


class _Broken:
    """What is installed when compiling failed unexpectedly: every lookup raises."""

    empty = False

    def __init__(self, err: BaseException) -> None:
        self._err = err

    def lookup(self, team: str | None) -> Guardrails | None:
        raise RuntimeError(f"guardrails could not be compiled: {self._err!r}")


def _build(snapshot: PoliciesSnapshot | None, cap: int) -> GuardrailIndex | _Broken | None:
    if snapshot is None:
        return None
    try:
        index = GuardrailIndex(snapshot, cap)
    except Exception as err:  # a bug, not a bad policy: logged, and every request fails as configured
        log.exception("compiling guardrails of policies generation %s failed", snapshot.generation)
        return _Broken(err)
    return None if index.empty else index


def _has_guardrails(snapshot: PoliciesSnapshot) -> bool:
    return any(p.document.guardrails for p in snapshot.policies)


class LiveIndex:
    """``index`` (None: no guardrails) compiled from ``seen``, the snapshot requests last brought.

    ``refresh(snapshot)`` is called on the request path when a request carries a snapshot other
    than ``seen``; it returns at once, and the index follows when compiled."""

    __slots__ = ("_building", "_cap", "index", "seen")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self.seen: PoliciesSnapshot | None = _UNSET
        self.index: GuardrailIndex | _Broken | None = None
        self._building: PoliciesSnapshot | None = _UNSET

    def refresh(self, snapshot: PoliciesSnapshot | None) -> None:
        if snapshot is self._building:
            return  # being compiled; the current index serves meanwhile
        if snapshot is None or self.seen is _UNSET or not _has_guardrails(snapshot):
            self._install(snapshot, _build(snapshot, self._cap))  # nothing to compile, or the very first index
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop (a plain unit test): build here
            self._install(snapshot, _build(snapshot, self._cap))
            return
        self._building = snapshot
        future = loop.run_in_executor(None, _build, snapshot, self._cap)
        future.add_done_callback(lambda f: self._built(snapshot, f))

    def _built(self, snapshot: PoliciesSnapshot, future: asyncio.Future[Any]) -> None:
        if self._building is snapshot:
            self._building = _UNSET
        if future.cancelled():
            return
        exc = future.exception()
        self._install(snapshot, _Broken(exc) if exc is not None else future.result())

    def _install(self, snapshot: PoliciesSnapshot | None, index: GuardrailIndex | _Broken | None) -> None:
        current = self.seen
        if (current is not _UNSET and current is not None and snapshot is not None
                and snapshot.generation < current.generation):
            return  # an older build finishing after a newer one
        self.seen, self.index = snapshot, index

    async def warm(self, control: Callable[[], ControlSnapshots], attempts: int = 200) -> None:
        """Compile the current snapshot's index before the first request needs it (from lifespan:
        the generation being started is not current yet, so ``control()`` may fail at first)."""
        for _ in range(attempts):
            try:
                snapshot = control().policies
                break
            except Exception:
                await asyncio.sleep(0.01)
        else:
            return
        if self.seen is _UNSET and snapshot is not None:
            index = await asyncio.to_thread(_build, snapshot, self._cap)
            if self.seen is _UNSET:
                self._install(snapshot, index)
