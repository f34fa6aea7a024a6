"""State fed from the control plane: the snapshots control modules publish, followed live.

``ControlState`` reads the published snapshots (``adapters.store.read_published``)
once at start-up, then again whenever the change feed names a snapshot topic
(PostgreSQL LISTEN/NOTIFY across processes; in-process publish on SQLite), and at
least every ``refresh_interval_s`` (``server.control_refresh_s``, 5 s by default; a cheap
read that also proves the database is reachable, and catches a notification lost while
the feed reconnected). All of
this runs in one background task: the request path only reads the resulting
``ControlSnapshots`` off the current generation.

While the database is down the last snapshots stay in force; ``status()`` reports
how stale they are (seconds since the last successful read) and their generations,
for ``/readyz``, which stays ready regardless.

Which source wins (``apply_routes``): the YAML is the operator's, so a YAML provider
or route wins over a store one of the same name; then a serving endpoint's (the
``endpoints`` snapshot) over the catalog's (``routes``). The loser is ignored (and
logged), not merged field by field. A store route that names a provider known to
neither source, or a provider whose key reference cannot be resolved, is left out
of the generation rather than failing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from adapters.snapshots import (
    SNAPSHOT_TOPICS,
    ControlSnapshots,
    EndpointsSnapshot,
    RoutesSnapshot,
)
from adapters.store import Store, StoreError, read_published
from gateway.config import ConfigError, GatewayCfg, ProviderCfg, RouteCfg, TargetCfg, check_config

__all__ = ["ControlSnapshots", "ControlState", "apply_routes"]

log = logging.getLogger("llmops.gateway.control")

_OUTAGE = (StoreError, SQLAlchemyError, OSError, TimeoutError)


def _provider(spec: Any, env: Mapping[str, str]) -> ProviderCfg | str:
    """The YAML-shaped provider for a store ``ProviderSpec``, or why it is left out."""
    api_key = None
    if spec.api_key_ref is not None:
        scheme, _, name = spec.api_key_ref.partition(":")
        if scheme != "env" or not name:
            return f"api_key_ref {spec.api_key_ref!r}: only env:NAME is resolved by the gateway"
        if name not in env:
            return f"api_key_ref {spec.api_key_ref!r}: environment variable not set"
        api_key = env[name]
    return ProviderCfg(name=spec.name, kind=spec.kind, base_urls=list(spec.base_urls), api_key=api_key)


def _targets(specs: Any) -> list[TargetCfg]:
    return [TargetCfg(provider=t.provider, model=t.model, weight=t.weight) for t in specs]


def apply_routes(
    cfg: GatewayCfg, routes: RoutesSnapshot | None, env: Mapping[str, str] | None = None, *,
    endpoints: EndpointsSnapshot | None = None,
) -> tuple[GatewayCfg, dict[str, str]]:
    """The YAML config plus the store's providers and routes, and ``{what: why}`` for those left out.

    ``endpoints`` (serving) are merged before ``routes`` (catalog), so for one name the YAML wins,
    then a serving endpoint, then the catalog."""
    sources = [(s, label) for s, label in ((endpoints, "a serving endpoint"), (routes, "the catalog"))
               if s is not None and (s.providers or s.routes)]
    if not sources:
        return cfg, {}
    env = os.environ if env is None else env
    dropped: dict[str, str] = {}
    providers = {p.name: p for p in cfg.providers}
    owners = {p.name: "the YAML" for p in cfg.providers}
    route_owners = {r.name: "the YAML" for r in cfg.routes}
    extra: list[RouteCfg] = []
    for snapshot, label in sources:
        for spec in snapshot.providers:
            if spec.name in providers:
                dropped[f"provider {spec.name}"] = f"{owners[spec.name]} defines a provider of this name (it wins)"
                continue
            built = _provider(spec, env)
            if isinstance(built, str):
                dropped[f"provider {spec.name}"] = built
                continue
            try:
                check_config(GatewayCfg(providers=[built]))
            except ConfigError as err:
                dropped[f"provider {spec.name}"] = str(err)
                continue
            providers[spec.name], owners[spec.name] = built, label
        for route_spec in snapshot.routes:
            if route_spec.name in route_owners:
                dropped[f"route {route_spec.name}"] = (f"{route_owners[route_spec.name]} defines a route of this "
                                                       "name (it wins)")
                continue
            # An endpoint's zero-weight slot takes no traffic: left out, not a reason to drop the route.
            targets = [t for t in route_spec.targets if t.weight > 0] if snapshot is endpoints \
                else route_spec.targets
            route = RouteCfg(name=route_spec.name, targets=_targets(targets),
                             fallbacks=_targets(route_spec.fallbacks), retries=route_spec.retries,
                             template=route_spec.template, template_variables=dict(route_spec.template_variables),
                             queue_timeout_s=route_spec.queue_timeout_s)
            try:
                check_config(GatewayCfg(providers=list(providers.values()), routes=[route]))
            except ConfigError as err:
                dropped[f"route {route_spec.name}"] = str(err)
                continue
            route_owners[route_spec.name] = label
            extra.append(route)
    merged = msgspec.structs.replace(cfg, providers=list(providers.values()), routes=[*cfg.routes, *extra])
    for what, why in dropped.items():
        log.warning("store snapshot: %s left out: %s", what, why)
    return merged, dropped


class ControlState:
    """Follows the published snapshots of ``store``; ``on_change`` gets each new set (serially)."""

    def __init__(self, store: Store, on_change: Callable[[ControlSnapshots], Awaitable[None]], *,
                 refresh_interval_s: float = 5.0) -> None:
        self._store = store
        self._on_change = on_change
        self._refresh_interval_s = refresh_interval_s
        self.snapshots = ControlSnapshots()
        self.last_refresh: float | None = None  # time.monotonic() of the last successful read
        self.last_error: str | None = None
        self.skipped: dict[str, str] = {}  # kinds this reader could not decode, and why
        self.refreshes = 0  # successful reads (tests wait on it)
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> bool:
        """One read; ``False`` (logged, kept in ``last_error``) when the store could not be read."""
        try:
            found, self.skipped = await read_published(self._store)
        except _OUTAGE as err:
            if self.last_error is None:
                log.warning("control snapshots unreadable, serving the last ones: %s", err)
            self.last_error = f"{type(err).__name__}: {err}"
            return False
        if self.last_error is not None:
            log.info("control snapshots readable again")
        self.last_error, self.last_refresh = None, time.monotonic()
        self.refreshes += 1
        for kind, why in self.skipped.items():
            log.warning("control snapshot %s skipped: %s", kind, why)
        self.snapshots = self.snapshots.merged(found)
        return True

    def start(self) -> None:
        subscription = self._store.changes.subscribe(*SNAPSHOT_TOPICS.values())
        self._task = asyncio.create_task(self._follow(subscription), name="llmops-control-snapshots")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self, subscription: Any) -> None:
        with subscription:
            while True:
                with contextlib.suppress(TimeoutError):
                    await subscription.wait(self._refresh_interval_s)
                before = self.snapshots
                if await self.load() and self.snapshots is not before:
                    try:
                        await self._on_change(self.snapshots)
                    except Exception:  # a bad generation must not stop the follower; the old one keeps serving
                        log.exception("could not build a generation from the control snapshots %s",
                                      self.snapshots.generations())

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: staleness (s since the last successful read), generations, feed state."""
        staleness = None if self.last_refresh is None else round(time.monotonic() - self.last_refresh, 3)
        feed = "connected" if self._store.changes.connected.is_set() or self._store.changes.mode == "local" \
            else "disconnected"
        out: dict[str, Any] = {"staleness_s": staleness, "generations": self.snapshots.generations(), "feed": feed}
        if self.last_error is not None:
            out["error"] = "store unreachable"  # details are in the log: /readyz is public
        return out
