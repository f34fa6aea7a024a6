"""Gateway plug-ins: found by entry point, checked at load, run as per-generation hook tuples.

The protocol plug-ins implement is `adapters.gateway_plugins` (importable without the
gateway). Here: `load_plugins` turns the YAML's `plugins:` list into instances (a bad
name, setting or hook is a `ConfigError` naming its key), and `Plugins` holds, per
config generation, one tuple of bound methods per hook. The request path tests a
tuple's truth before doing anything, so a hook no plug-in implements costs one
attribute read and no coroutine.

`on_request`, `on_route` and `on_finish` may be plain functions or `async def`
(found at load): a plain one is called directly, and when every plug-in's is plain
the runner is itself a plain call, so a request makes no coroutine for them at all.
`on_finish` runs once per usage batch (`finish_batch`), not a coroutine per record.
`response_filter` may be a filter object instead of a factory: one stateless filter
shared by every request, so nothing is built per request (see `adapters.gateway_plugins`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from adapters.errors import GatewayError, PluginFailed
from adapters.gateway_plugins import ENTRY_POINT_GROUP, HOOKS, PluginHost, RequestContext, ResponseFilter
from adapters.usage import UsageRecord
from gateway.config import ConfigError, GatewayCfg, PluginCfg

__all__ = ["FilterChain", "Plugin", "Plugins", "check_settings", "load_plugins"]

log = logging.getLogger("llmops.plugins")

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode

_ASYNC_HOOKS = ("on_request", "on_route", "on_finish")


class Plugin(msgspec.Struct, frozen=True):
    """One loaded plug-in instance with the name it was enabled under."""

    name: str
    instance: Any
    fails_open: bool


BUILTIN_PLUGINS: tuple[str, ...] = ("auth", "prompts", "guardrails", "limits")
"""This package's own plug-ins (entry points in its pyproject), enabled by default in this order
ahead of the YAML's others: the policy the governance module publishes applies without any
`plugins:` entry. Naming one in `plugins:` configures it (its settings, `enabled: false`).
`prompts` runs after `auth` (a unit may be the key) and before `guardrails` (which must see the
rendered prompt) and `limits` (which prices the route an experiment redirected to)."""


def _with_builtins(cfgs: Sequence[PluginCfg]) -> list[tuple[str, PluginCfg]]:
    named = {c.name for c in cfgs}
    implicit = [(f"$.plugins (built-in {n!r})", PluginCfg(name=n)) for n in BUILTIN_PLUGINS if n not in named]
    return [*implicit, *((f"$.plugins[{i}]", c) for i, c in enumerate(cfgs))]


def _factories() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _enabled(cfgs: Sequence[PluginCfg]) -> list[tuple[str, PluginCfg, Any]]:
    """`(where, cfg, factory)` for each enabled plug-in: built-ins not named, then YAML order."""
    found: dict[str, importlib.metadata.EntryPoint] | None = None
    out: list[tuple[str, PluginCfg, Any]] = []
    seen: set[str] = set()
    for where, cfg in _with_builtins(cfgs):
        if not cfg.enabled:
            continue
        if cfg.name in seen:
            raise ConfigError(f"{where}.name: plug-in {cfg.name!r} is enabled twice")
        seen.add(cfg.name)
        if found is None:
            found = _factories()
        ep = found.get(cfg.name)
        if ep is None:
            known = ", ".join(sorted(found)) or "none installed"
            raise ConfigError(f"{where}.name: no plug-in {cfg.name!r} in entry-point group "
                              f"{ENTRY_POINT_GROUP!r} (known: {known})")
        try:
            factory = ep.load()
        except Exception as exc:  # an installed but broken package: name it, keep the old config
            raise ConfigError(f"{where}.name: plug-in {cfg.name!r} failed to import: {exc!r}") from None
        out.append((where, cfg, factory))
    return out


def check_settings(cfgs: Sequence[PluginCfg]) -> None:
    """What `decode_config` checks: every enabled plug-in exists and its settings decode."""
    for where, cfg, factory in _enabled(cfgs):
        _settings(factory, cfg, where)


def load_plugins(cfgs: Sequence[PluginCfg], extra: Sequence[Any] = (), host: PluginHost | None = None,
                 config: GatewayCfg | None = None) -> list[Plugin]:
    """Build the enabled plug-ins in YAML order, then `extra` instances (tests, embedding).
    `config`: the generation's config (the YAML merged with the store's routes), for factories
    that declare a `config` keyword."""
    out = []
    for where, cfg, factory in _enabled(cfgs):
        out.append(check_plugin(cfg.name, _build(factory, cfg, where, host, config), where))
    for j, instance in enumerate(extra):
        out.append(check_plugin(getattr(instance, "name", f"extra{j}"), instance, f"plugins (extra {j})"))
    return out


def _settings(factory: Any, cfg: PluginCfg, where: str) -> tuple[Any, ...]:
    settings_type = getattr(factory, "Settings", None)
    if settings_type is None:
        if cfg.settings:
            raise ConfigError(f"{where}.settings: plug-in {cfg.name!r} takes no settings")
        return ()
    try:
        return (msgspec.convert(cfg.settings, settings_type),)
    except msgspec.ValidationError as exc:  # "... - at `$.x`" -> "... - at `$.plugins[0].settings.x`"
        text = str(exc)
        raise ConfigError(text.replace("`$", f"`{where}.settings") if "`$" in text
                          else f"{where}.settings: {text}") from None


def _wants(factory: Any, keyword: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no keyword we could pass
        return False
    p = params.get(keyword)
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def _build(factory: Any, cfg: PluginCfg, where: str, host: PluginHost | None = None,
           config: GatewayCfg | None = None) -> Any:
    args = _settings(factory, cfg, where)
    kwargs: dict[str, Any] = {}
    if host is not None and _wants(factory, "host"):
        kwargs["host"] = host
    if config is not None and _wants(factory, "config"):
        kwargs["config"] = config
    try:
        return factory(*args, **kwargs)
    except ConfigError:  # a plug-in that refuses the config (`config`), naming the key itself
        raise
    except Exception as exc:  # a plug-in that refuses its settings
        raise ConfigError(f"{where}.settings: plug-in {cfg.name!r} rejected them: {exc}") from None


def check_plugin(name: str, instance: Any, where: str) -> Plugin:
    """pluggy-style: every mistake a load can see fails the load, not a request."""
    failure = getattr(instance, "failure", "closed")
    if failure not in ("closed", "open"):
        raise ConfigError(f"{where}: plug-in {name!r} declares failure={failure!r}; use 'closed' or 'open'")
    hooks = [h for h in HOOKS if getattr(instance, h, None) is not None]
    unknown = sorted(a for a in dir(instance) if a.startswith("on_") and a not in HOOKS)
    if unknown:
        raise ConfigError(f"{where}: plug-in {name!r} has unknown hook(s) {unknown} (known: {list(HOOKS)})")
    for h in hooks:
        fn = getattr(instance, h)
        if h == "response_filter" and _is_filter(fn):
            continue  # one shared, stateless filter rather than a factory
        if not callable(fn):
            raise ConfigError(f"{where}: plug-in {name!r}: {h} is not callable")
        if h in _ASYNC_HOOKS and inspect.isasyncgenfunction(fn):
            raise ConfigError(f"{where}: plug-in {name!r}: {h} must be a plain function or an async def")
    if not hooks:
        raise ConfigError(f"{where}: plug-in {name!r} implements none of {list(HOOKS)}")
    return Plugin(name=name, instance=instance, fails_open=failure == "open")


def _is_filter(obj: Any) -> bool:
    """A `ResponseFilter` object (shared by every request) rather than a factory making one."""
    return all(callable(getattr(obj, m, None)) for m in ("body", "feed", "flush"))


def _is_async(fn: Any) -> bool:
    """An `async def` function or method, or an object whose `__call__` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _failed(plugin: Plugin, hook: str, rid: str) -> None:
    """Log an exception from inside a plug-in once; re-raise it as a 500 unless it fails open."""
    outcome = "ignored (fails open)" if plugin.fails_open else "request failed (fails closed)"
    log.exception("plug-in %s failed in %s; %s", plugin.name, hook, outcome,
                  extra={"fields": {"request_id": rid, "plugin": plugin.name, "hook": hook}})
    if not plugin.fails_open:
        raise PluginFailed(plugin.name) from None


_Hooks = tuple[tuple[Any, "Plugin", bool], ...]  # (bound hook, plug-in, is async)


def _runner(hooks: _Hooks, phase: str) -> Callable[[RequestContext], Awaitable[None] | None]:
    """One phase's hooks as a single callable: plain when every hook is a plain function, so the
    request path makes no coroutine; else async, awaiting only the hooks that are."""
    run = _run_async if any(is_async for _, _, is_async in hooks) else _run_plain
    return functools.partial(run, hooks, phase)


def _run_plain(hooks: _Hooks, phase: str, ctx: RequestContext) -> None:
    for hook, plugin, _ in hooks:
        try:  # free in 3.11 unless it raises (zero-cost exception tables)
            hook(ctx)
        except GatewayError:
            raise
        except Exception:
            _failed(plugin, phase, ctx.request_id)


async def _run_async(hooks: _Hooks, phase: str, ctx: RequestContext) -> None:
    for hook, plugin, is_async in hooks:
        try:
            if is_async:
                await hook(ctx)
            else:
                hook(ctx)
        except GatewayError:
            raise
        except Exception:
            _failed(plugin, phase, ctx.request_id)


class Plugins:
    """One generation's plug-ins as per-hook tuples of `(bound method, plugin)`; empty when unused.

    `run_request(ctx)` and `run_route(ctx)` return None when every plug-in's hook is a plain
    function (all of them already ran), else a coroutine to await: call, then await what is
    not None. `finish_batch` runs `on_finish` for a usage batch, on the usage worker (`_finish_batch`)."""

    def __init__(self, plugins: Sequence[Plugin] = ()) -> None:
        self.plugins = tuple(plugins)

        def bound(hook: str) -> tuple[tuple[Any, Plugin], ...]:
            return tuple((getattr(p.instance, hook), p) for p in self.plugins
                         if getattr(p.instance, hook, None) is not None)

        self.on_request = bound("on_request")
        self.on_route = bound("on_route")
        self.response_filter = bound("response_filter")
        self.on_finish = bound("on_finish")
        self._lifespans = bound("lifespan")
        self._stack: contextlib.AsyncExitStack | None = None
        self._request = tuple((fn, p, _is_async(fn)) for fn, p in self.on_request)
        self._route = tuple((fn, p, _is_async(fn)) for fn, p in self.on_route)
        self._finish = tuple((fn, p, _is_async(fn)) for fn, p in self.on_finish)
        self.run_request = _runner(self._request, "on_request")
        self.run_route = _runner(self._route, "on_route")
        self.finish_batch = self._finish_batch  # one object per generation: the usage worker batches by identity
        # response filters: `(factory or None, shared filter or None, plugin)`; all shared: one ready list
        self._makers = tuple((None, f, p) if _is_filter(f) else (f, None, p) for f, p in self.response_filter)
        self._shared: list[tuple[ResponseFilter, Plugin]] | None = None
        if self._makers and all(make is None for make, _, _ in self._makers):
            self._shared = [(f, p) for _, f, p in self._makers if f is not None]
            self._shared_pristine = not any(getattr(f, "changes_in_place", True) for f, _ in self._shared)

    async def start(self) -> None:
        """Enter every lifespan in order; if one fails, those already entered are left again."""
        async with contextlib.AsyncExitStack() as stack:
            for hook, _ in self._lifespans:
                await stack.enter_async_context(hook())
            self._stack = stack.pop_all()

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def run_finish(self, ctx: RequestContext, usage: UsageRecord) -> None:
        """One record's `on_finish` hooks (`finish_batch` is the worker's path)."""
        await self._finish_batch([(None, ctx, usage)])

    async def _finish_batch(self, items: Sequence[tuple[Any, RequestContext, UsageRecord]]) -> None:
        """`on_finish` for each `(_, ctx, usage)` of a usage batch, record by record in plug-in
        order, off the request path: a failure is logged, and the other plug-ins still run."""
        hooks = self._finish
        for _, ctx, usage in items:
            for hook, plugin, is_async in hooks:
                try:
                    if is_async:
                        await hook(ctx, usage)
                    else:
                        hook(ctx, usage)
                except Exception:
                    log.exception("plug-in %s failed in on_finish", plugin.name,
                                  extra={"fields": {"request_id": ctx.request_id, "plugin": plugin.name}})

    def filters(self, ctx: RequestContext) -> FilterChain | None:
        """This request's response filters, or None when no plug-in wants to see the response."""
        if self._shared is not None:  # every filter shared: nothing to build but the chain
            return FilterChain(self._shared, ctx.request_id, self._shared_pristine)
        chain: list[tuple[ResponseFilter, Plugin]] = []
        pristine = True
        for make, shared, plugin in self._makers:
            if make is None:
                f = shared
            else:
                try:
                    f = make(ctx)
                except GatewayError:
                    raise
                except Exception:
                    _failed(plugin, "response_filter", ctx.request_id)
                    continue
            if f is not None:
                chain.append((f, plugin))
                if pristine and getattr(f, "changes_in_place", True):
                    pristine = False
        return FilterChain(chain, ctx.request_id, pristine) if chain else None


class FilterChain:
    """A request's response filters in plug-in order; a chunk passes each in turn.

    A filter that raises is handled by its plug-in's failure mode: closed raises
    `PluginFailed` (the caller answers 500 or ends the stream with an error event),
    open logs once and drops that filter for the rest of the response.

    `passes(obj, out)`: when every filter declares `changes_in_place = False`, an object
    that comes back as itself is unchanged, so the caller sends the upstream's bytes
    instead of encoding it again (the no-op and read-only filters' cheap path)."""

    __slots__ = ("_filters", "_rid", "pristine")

    def __init__(self, filters: list[tuple[ResponseFilter, Plugin]], rid: str, pristine: bool | None = None) -> None:
        self._filters = filters  # may be shared between requests: `_drop` replaces it, never changes it
        self._rid = rid
        self.pristine = (not any(getattr(f, "changes_in_place", True) for f, _ in filters)
                         if pristine is None else pristine)

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        for f, plugin in self._filters:  # `_drop` replaces the list, never changes it
            try:
                completion = f.body(completion)
            except GatewayError:
                raise
            except Exception:
                self._drop(f, plugin, "response_filter.body")
        return completion

    def body_bytes(self, raw: bytes) -> bytes:
        """A non-streamed body through `body`, as bytes: `raw` itself when no filter changed it."""
        completion = _decode(raw)
        out = self.body(completion)
        return raw if out is completion and self.pristine else _encode(out)

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return self._through(0, [chunk])

    def flush(self) -> list[dict[str, Any]]:
        """Flush each filter in order; what one releases still passes the filters after it."""
        out: list[dict[str, Any]] = []
        i = 0
        while i < len(self._filters):
            f, plugin = self._filters[i]
            try:
                held = f.flush()
            except GatewayError:
                raise
            except Exception:
                self._drop(f, plugin, "response_filter.flush")
                continue  # dropped: index i now names the next filter
            i += 1
            out.extend(self._through(i, held) if held else ())
        return out

    def _through(self, start: int, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        i = start
        while i < len(self._filters) and chunks:
            f, plugin = self._filters[i]
            out: list[dict[str, Any]] = []
            try:
                for c in chunks:
                    out.extend(f.feed(c))
            except GatewayError:
                raise
            except Exception:
                self._drop(f, plugin, "response_filter.feed")
                continue  # fails open: the chunks go on unfiltered by it
            chunks = out
            i += 1
        return chunks

    def _drop(self, f: ResponseFilter, plugin: Plugin, hook: str) -> None:
        _failed(plugin, hook, self._rid)  # raises unless the plug-in fails open
        self._filters = [(g, p) for g, p in self._filters if g is not f]
