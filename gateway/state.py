"""The gateway's live state and atomic config reload.

A `Generation` is everything built from one config plus the control plane's
snapshots (gateway/control_state.py): providers (with their connection pools),
the route table, the plug-ins (with their lifespans) and the typed snapshots
(`gen.control`). A reload, or a new routes snapshot, builds a complete new
generation first, then swaps one reference; requests already running keep the
generation they started with, which is closed once they have drained. A provider
whose config is unchanged is handed over, pools and breakers included, rather than
rebuilt: only new or changed providers open new pools.

A snapshot change that leaves the routes as they were (policies, keys, templates,
experiments; or a routes or endpoints snapshot with the same providers and routes) builds
nothing: `gen.control` of the running generation is replaced, one reference, so
a request reads either the old set or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.gateway_plugins import PluginHost
from adapters.snapshots import EndpointsSnapshot, RoutesSnapshot
from adapters.store import Store
from adapters.upstream import Balancer, BreakerState, Upstream
from adapters.upstream.urls import redact_url
from adapters.upstream.vllm_metrics import scrape_forever
from gateway.config import BUILTIN_MOCK, GatewayCfg, ProviderCfg, load_config
from gateway.control_state import ControlSnapshots, ControlState, apply_routes
from gateway.health import backend_label
from gateway.metering import UsageQueue
from gateway.metrics import GatewayMetrics
from gateway.plugins import Plugins, load_plugins
from gateway.pricing_wiring import UsagePricer, build_pricer
from gateway.providers import build_balancer, build_provider, build_table
from gateway.relay import Relay
from gateway.routing import Route, RouteTable
from gateway.watchdog import Watchdog
from policies.pricing import PriceBook

if TYPE_CHECKING:  # the mock is imported only when a provider asks for it
    from adapters.testdoubles.mock_upstream import MockServer

__all__ = ["Gateway", "Generation"]

log = logging.getLogger("llmops.gateway")


class Generation:
    def __init__(
        self,
        cfg: GatewayCfg,
        providers: dict[str, Upstream],
        table: RouteTable,
        plugins: Plugins | None = None,
        usage: UsageQueue | None = None,
        control: ControlSnapshots | None = None,
    ) -> None:
        self.cfg = cfg  # the YAML merged with the store's routes
        self.control = control or ControlSnapshots()  # what the store published, typed (for plug-ins)
        self.providers = providers
        self.table = table
        self.plugins = plugins or Plugins()
        self.inflight = 0
        self.borrowed: frozenset[str] = frozenset()  # providers handed over by the previous generation
        self.balancers: dict[str, Balancer] = {}  # providers' stateful pickers, handed over with them
        self._usage = usage  # drained before the plug-ins stop, so their on_finish hooks ran
        self.pricer: UsagePricer | None = None  # cfg.pricing's, handed to the usage worker on swap
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, metrics: GatewayMetrics) -> None:
        await self.plugins.start()
        by_name = {p.name: p for p in self.cfg.providers}
        for name, provider in self.providers.items():
            if name not in self.borrowed:  # a borrowed one is running, its breakers keep their state
                await provider.start()
            for i, b in enumerate(provider.backends):
                label = backend_label(i)
                if name not in self.borrowed:
                    metrics.set_circuit(name, label, 0)
                b.breaker.on_change = _on_breaker_change(metrics, name, label, b.url)
            pcfg = by_name[name]
            if pcfg.balance in ("vllm_queue", "prefix_affinity"):
                self._tasks.append(asyncio.create_task(scrape_forever(provider.backends, pcfg.metrics_interval_s)))

    async def close(self, drain_timeout_s: float = 60.0, keep: frozenset[str] = frozenset()) -> None:
        """Wait for in-flight requests (bounded), then close pools (except those in ``keep``:
        handed over to the next generation) and scrapers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        # Polling keeps the hot path free of event bookkeeping; drains are rare.
        while self.inflight > 0 and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._usage is not None and self.plugins.on_finish:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(1.0, deadline - loop.time())):
                    await self._usage.drain()
        try:
            for name, p in self.providers.items():
                if name not in keep:
                    await p.aclose()
        finally:
            await self.plugins.close()


def _on_breaker_change(metrics: GatewayMetrics, provider: str, label: str, url: str) -> Callable[[BreakerState], None]:
    """Breaker changes are rare: update the gauge and tell the operator which replica (in the
    log, with its redacted URL; metrics carry only the replica's index)."""
    shown = redact_url(url)

    def changed(state: BreakerState) -> None:
        metrics.set_circuit(provider, label, int(state))
        log.warning("circuit of %s backend %s (%s) is now %s", provider, label, shown, state.name.lower())

    return changed


class Gateway:
    def __init__(
        self,
        cfg: GatewayCfg,
        *,
        config_path: Path | None = None,
        default_config: Callable[[], GatewayCfg] | None = None,
        plugins: Sequence[Any] = (),
        upstreams: Mapping[str, Upstream] | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        """`plugins`: instances run after the YAML's in every generation (tests, embedding).
        `upstreams`: ready providers used instead of building the configured ones of the same
        name (e.g. a `FunctionUpstream`); shared by every generation, so their `aclose` must be
        harmless to call more than once."""
        self.cfg = cfg
        self.config_path = config_path
        self._default_config = default_config
        self.metrics = metrics or GatewayMetrics()
        self._extra_plugins = tuple(plugins)
        self._upstreams = dict(upstreams or {})
        self.watchdog = Watchdog()
        self.relay = Relay(self.metrics, self.watchdog)
        self.relay.current_route = self._current_route  # a queued request follows route changes while it waits
        self.usage = UsageQueue([], self.metrics)
        self.max_body_bytes = cfg.server.max_body_bytes
        self.inflight = 0
        self.metrics.inflight.set_function(lambda: self.inflight)
        self.generation: Generation = None  # type: ignore[assignment]  # set by start(); never None on the request path, so no check there
        self.ready = False
        self._mock: MockServer | None = None
        self._reload_lock = asyncio.Lock()
        # Awaited by reload() once the new generation is built, before it goes live (the app's: the control
        # plane takes the YAML's prompts: section). One raising rejects the reload: nothing is swapped.
        self.before_swap: list[Callable[[GatewayCfg], Awaitable[None]]] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self.control: ControlState | None = None  # set by start() when a control-plane store is open
        self.snapshots = ControlSnapshots()
        self.store: Store | None = None  # the control plane's, set by start()
        # Multiprocess mode (--workers): metrics write their own files, so plug-ins register on none.
        registry = None if self.metrics.shared_dir else self.metrics.registry
        self.plugin_host = PluginHost(None, registry, lambda: self.generation.control, self._price_book)

    def _current_route(self, name: str) -> Route | None:
        """The running generation's route of this name (None: no longer routed)."""
        return self.generation.table.routes.get(name)

    def _price_book(self) -> PriceBook | None:
        """The running generation's prices, for plug-ins that reserve a worst-case cost (limits)."""
        gen = self.generation
        return None if gen is None or gen.pricer is None else gen.pricer.book

    async def _mock_url(self, cfg: GatewayCfg) -> str | None:
        """Start the built-in mock upstream once, if any provider asks for it."""
        if not any(u == BUILTIN_MOCK for p in cfg.providers for u in p.urls()):
            return None
        if self._mock is None:
            from adapters.testdoubles.mock_upstream import start_mock_upstream

            self._mock = await start_mock_upstream()
            log.info("built-in mock upstream (test double) at %s", self._mock.url)
        return self._mock.url

    async def _build(self, yaml_cfg: GatewayCfg) -> Generation:
        snapshots = self.snapshots
        cfg, _dropped = apply_routes(yaml_cfg, snapshots.routes, endpoints=snapshots.endpoints)
        mock_url = await self._mock_url(cfg)
        pricer = await build_pricer(cfg, self.generation.pricer if self.generation is not None else None)
        running = self._running_providers()
        kept = self.generation.balancers if self.generation is not None else {}
        providers: dict[str, Upstream] = {}
        balancers: dict[str, Balancer] = {}
        borrowed: set[str] = set()
        for p in cfg.providers:
            if (found := running.get(p.name)) is not None and found[0] == p:
                providers[p.name] = found[1]
                borrowed.add(p.name)
            else:
                providers[p.name] = self._upstreams.get(p.name) or build_provider(p, mock_url)
            # A borrowed provider keeps its picker, so a reload does not forget where prefixes live.
            previous = kept.get(p.name)
            balancer = previous if p.name in borrowed else build_balancer(p, providers[p.name], previous)
            if balancer is not None:
                balancers[p.name] = balancer
        plugins = Plugins(load_plugins(cfg.plugins, self._extra_plugins, self.plugin_host, cfg))
        gen = Generation(cfg, providers, build_table(cfg, providers, balancers), plugins, self.usage, snapshots)
        gen.balancers = balancers
        gen.borrowed = frozenset(borrowed)
        gen.pricer = pricer
        try:
            await gen.start(self.metrics)
        except BaseException:
            await gen.close(drain_timeout_s=0, keep=gen.borrowed)
            raise
        return gen

    def _running_providers(self) -> dict[str, tuple[ProviderCfg, Upstream]]:
        """The running generation's providers by name, with their config (the built-in mock, baked
        into some pools, keeps its URL for the gateway's life, so an equal config is an equal pool)."""
        old = self.generation
        if old is None:
            return {}
        by_name = {p.name: p for p in old.cfg.providers}
        return {name: (by_name[name], up) for name, up in old.providers.items()}

    async def start(self, store: Store | None = None, *, refresh_interval_s: float | None = None) -> None:
        """`store`: the control plane's, whose published snapshots feed every generation. Its
        first read may fail (database down): the gateway then starts from the YAML alone.
        `refresh_interval_s`: default `server.control_refresh_s`."""
        if refresh_interval_s is None:
            refresh_interval_s = self.cfg.server.control_refresh_s
        await self.usage.start()
        await self.watchdog.start()
        self.store = self.plugin_host.store = store
        if store is not None:
            self.control = ControlState(store, self._apply_snapshots, refresh_interval_s=refresh_interval_s)
            await self.control.load()
            self.snapshots = self.control.snapshots
        self.generation = await self._build(self.cfg)
        self.usage.set_pricer(self.generation.pricer)
        self.ready = True
        if self.control is not None:
            self.control.start()

    async def stop(self) -> None:
        self.ready = False
        if self.control is not None:
            await self.control.aclose()
        if self.generation is not None:
            await self.generation.close(drain_timeout_s=30)
        for t in list(self._retiring):
            t.cancel()
        await self.usage.stop()
        await self.watchdog.stop()
        if self._mock is not None:
            await self._mock.stop()

    async def reload(self, cfg: GatewayCfg | None = None) -> GatewayCfg:
        """Swap in a new config (default: re-read the file). Raises ConfigError and keeps the old one."""
        async with self._reload_lock:
            try:
                if cfg is None:
                    if self.config_path is not None:
                        cfg = await asyncio.to_thread(load_config, self.config_path)
                    elif self._default_config is not None:
                        cfg = self._default_config()
                    else:
                        cfg = self.cfg
                cfg = self._keep_address(cfg)
                new = await self._build(cfg)
                try:
                    for hook in self.before_swap:
                        await hook(cfg)
                except BaseException:
                    await new.close(drain_timeout_s=0, keep=new.borrowed)
                    raise
            except Exception:  # counted for the reload-failure alert, then re-raised to the caller
                self.metrics.reloads.labels("error").inc()
                raise
            self._swap(new, cfg)
            log.info("config reloaded: %d routes, %d providers", len(new.cfg.routes), len(new.cfg.providers))
            return cfg

    def _keep_address(self, cfg: GatewayCfg) -> GatewayCfg:
        """The listening host and port stay what this process listens on: a socket cannot move live, and they
        may have come from `serve --host/--port` rather than the file. Without this, a reload from a file naming
        another (or no) port told the control modules a wrong own address (local trainers and evaluation
        workers then called port 4000)."""
        running = self.cfg.server
        if (cfg.server.host, cfg.server.port) == (running.host, running.port):
            return cfg
        if cfg is not self.cfg and self.config_path is not None:
            log.info("reload: server.host/port need a restart; still listening on %s:%s", running.host, running.port)
        return msgspec.structs.replace(cfg, server=msgspec.structs.replace(cfg.server, host=running.host,
                                                                           port=running.port))

    async def _apply_snapshots(self, snapshots: ControlSnapshots) -> None:
        """A new set of control-plane snapshots. Routes as they were: swap `gen.control` of the
        running generation (nothing built). Routes changed: rebuild from the current YAML,
        reusing unchanged providers (failure: keep the old generation and snapshots)."""
        async with self._reload_lock:
            if _same_routes(self.snapshots.routes, snapshots.routes) \
                    and _same_routes(self.snapshots.endpoints, snapshots.endpoints):
                self.snapshots = snapshots
                self.generation.control = snapshots  # one reference: requests see the old set or the new
                log.info("control snapshots applied %s (routes unchanged)", snapshots.generations())
                return
            before, self.snapshots = self.snapshots, snapshots
            try:
                new = await self._build(self.cfg)
            except Exception:  # counted, then re-raised to ControlState, which logs it and keeps following
                self.snapshots = before
                self.metrics.reloads.labels("error").inc()
                raise
            self._swap(new, self.cfg)
            log.info("control snapshots applied %s: %d routes", snapshots.generations(), len(new.cfg.routes))

    def _swap(self, new: Generation, cfg: GatewayCfg) -> None:
        old, self.generation, self.cfg = self.generation, new, cfg
        self.usage.set_pricer(new.pricer)  # one reference: each batch is priced by the old book or the new
        self.max_body_bytes = cfg.server.max_body_bytes
        task = asyncio.create_task(old.close(keep=new.borrowed))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        self.metrics.reloads.labels("ok").inc()


def _same_routes(a: RoutesSnapshot | EndpointsSnapshot | None, b: RoutesSnapshot | EndpointsSnapshot | None) -> bool:
    """Whether two routes (or endpoints) snapshots describe the same providers and routes (generations aside)."""
    if a is None or b is None:
        return a is b
    return a is b or (a.providers == b.providers and a.routes == b.routes)
