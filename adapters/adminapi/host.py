"""Assemble the control plane: discover modules, build the ``/llm-ops/v1`` router, run their lifespans.

The gateway mounts the result::

    plane = load_control_plane(cfg.control, admin_routes=[reload_handler])
    Litestar(route_handlers=[*data_plane, *plane.route_handlers],
             lifespan=[..., plane.lifespan], openapi_config=plane.openapi_config,
             exception_handlers={Exception: handler_that_delegates_admin_paths_to(envelope_exception_handler)})

Start-up order (``plane.lifespan``): open the store, check the schema (refuse a
newer one; migrate or refuse pending ones per ``auto_migrate``), start the change
feed, open the object store, then enter each module's lifespan in discovery
order; shutdown runs it backwards. Any failure aborts start-up: a control plane
that cannot reach its database or is on the wrong schema does not serve.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec
from litestar import Litestar, Request, Router
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Receive, Scope, Send

from adapters.adminapi.audit import AuditWriter, list_audit_logs
from adapters.adminapi.auth import Actor, Authenticator, Principal, bearer_token, parse_key, required_role
from adapters.adminapi.denials import DenialStats
from adapters.adminapi.envelope import (
    REQUEST_ID_HEADER,
    envelope_exception_handler,
    paging,
    request_id,
    strict_json_body,
)
from adapters.adminapi.errors import Forbidden, ServiceUnavailable, Unauthorized
from adapters.adminapi.keys import KeysController
from adapters.adminapi.openapi import AdminOpenAPIConfig, describe_routes
from adapters.adminapi.plugin import ControlModule, ModuleContext
from adapters.adminapi.rbac import PermissionTable, Role
from adapters.adminapi.services import ServiceRegistry
from adapters.adminapi.settings import ControlCfg, ResolvedControl, resolve_env
from adapters.adminapi.tables import ADMIN_MIGRATIONS
from adapters.dataplane import DATAPLANE_MIGRATIONS
from adapters.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore
from adapters.store import STORE_MIGRATIONS, Migration, Store, ensure_schema, open_store

__all__ = [
    "ADMIN_PREFIX",
    "ENTRY_POINT_GROUP",
    "ControlPlane",
    "ModuleLoadError",
    "discover_modules",
    "load_control_plane",
]

log = logging.getLogger("llmops.control")

ADMIN_PREFIX = "/llm-ops/v1"
ENTRY_POINT_GROUP = "llmops.control"
CORE_MODULES = ("store", "admin", "dataplane")  # their migrations run first; module names may not reuse them
_MODULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ModuleLoadError(Exception):
    """A control module is missing, malformed or clashes with another: fails start-up."""


def _check_module(obj: object, origin: str) -> ControlModule:
    """Check the plug-in against the protocol at load time (pluggy-style), not at first request."""
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not _MODULE_NAME.match(name) or name in CORE_MODULES:
        raise ModuleLoadError(f"{origin}: module name {name!r} must match {_MODULE_NAME.pattern}, not {CORE_MODULES}")
    for method in ("routes", "migrations", "lifespan"):
        if not callable(getattr(obj, method, None)):
            raise ModuleLoadError(f"{origin}: module {name!r} has no callable {method}()")
    return cast(ControlModule, obj)  # checked above, member by member


def discover_modules(selected: Sequence[str] | None = None) -> list[ControlModule]:
    """Modules registered under the ``llmops.control`` entry-point group, filtered by ``selected``."""
    found: dict[str, ControlModule] = {}
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if selected is not None and ep.name not in selected:
            continue
        module = _check_module(ep.load(), f"entry point {ep.name!r} ({ep.value})")
        if module.name in found:
            raise ModuleLoadError(f"two entry points provide control module {module.name!r}")
        found[module.name] = module
    missing = sorted(set(selected or ()) - set(found))
    if missing:
        raise ModuleLoadError(f"control.modules names {missing}, which are not installed")
    return list(found.values())


@dataclass
class _Running:
    store: Store
    audit: AuditWriter
    contexts: dict[str, ModuleContext]


def _admin_middleware(allow: Mapping[str, str]) -> Callable[[ASGIApp], ASGIApp]:
    """Fix the request id before auth runs and echo it on every admin response.

    It also corrects ``Allow`` on OPTIONS answers from ``allow`` (path template -> methods): Litestar's
    automatic OPTIONS handler lists only the methods of the handlers registered before it was made.
    """

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            rid = request_id(ASGIConnection(scope)).encode()
            methods = allow.get(str(scope.get("path_template", ""))) if scope.get("method") == "OPTIONS" else None

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    if not any(k.lower() == REQUEST_ID_HEADER.encode() for k, _ in headers):
                        headers.append((REQUEST_ID_HEADER.encode(), rid))
                    if methods is not None:
                        headers = [(k, methods.encode() if k.lower() == b"allow" else v) for k, v in headers]
                    message = {**message, "headers": headers}
                await send(message)

            await app(scope, receive, send_with_id)

        return middleware

    return wrap


class ControlPlane:
    """What the gateway mounts: routes, envelope handlers, OpenAPI config and one lifespan."""

    def __init__(self, resolved: ResolvedControl, modules: Sequence[ControlModule],
                 admin_routes: Sequence[ControllerRouterHandler] = ()) -> None:
        self.resolved = resolved
        self.cfg: ControlCfg = resolved.cfg
        self.modules = list(modules)
        self._running: _Running | None = None
        self._authenticator = Authenticator(None, resolved.bootstrap_key_sha256)
        self.denial_stats = DenialStats()  # llmops_admin_auth_denials_total; the gateway registers it
        self._denials = AuditWriter(None, stats=self.denial_stats)
        self._allow: dict[str, str] = {}  # path template -> "GET, OPTIONS, POST", filled once routes are built
        self.exception_handlers: dict[Any, Any] = {Exception: envelope_exception_handler}
        self.openapi_config = AdminOpenAPIConfig(
            title="llmops admin API", version="1", path=f"{ADMIN_PREFIX}/schema",
            description="Control plane of the llmops gateway. Every response uses the "
                        "{status, message, data} envelope; authenticate with 'Authorization: Bearer <key>'.",
            components=Components(security_schemes={"bearerAuth": SecurityScheme(type="http", scheme="bearer")}),
            security=[{"bearerAuth": []}],
        )
        core: list[ControllerRouterHandler] = [*admin_routes]
        if self.cfg.enabled:
            core += [KeysController, list_audit_logs]
        # Litestar deep-copies handler layers at registration, and deep-copying a bound method copies
        # its instance: hand it closures instead, so every request sees this plane's live state.
        plane = self

        async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
            await plane._check_access(connection, handler)

        def provide_store() -> Store:
            return plane._require_running().store

        def provide_audit() -> AuditWriter:
            return plane._require_running().audit

        module_routers = [
            Router("/", route_handlers=list(m.routes()), tags=[m.name],
                   dependencies={"ctx": Provide(self._context_provider(m.name), sync_to_thread=False)})
            for m in self.modules
        ]
        self.route_handlers: list[ControllerRouterHandler] = [Router(
            ADMIN_PREFIX,
            route_handlers=[*core, *module_routers],
            guards=[guard],
            exception_handlers=self.exception_handlers,
            middleware=[_admin_middleware(self._allow)],
            before_request=strict_json_body,
            request_max_body_size=self.cfg.max_json_bytes,
            dependencies={
                "store": Provide(provide_store, sync_to_thread=False),
                "audit": Provide(provide_audit, sync_to_thread=False),
                "caller": Provide(_provide_caller, sync_to_thread=False),
                "page": Provide(paging, sync_to_thread=False),
            },
        )]
        self.openapi_config.facts = describe_routes(self.route_handlers)
        # The one permission table (rbac): (method, path) -> minimum role, looked up by the guard per request.
        self.permissions = PermissionTable.from_routes(self.route_handlers, ADMIN_PREFIX)
        for path, method in self.openapi_config.facts.roles:
            self._allow[path] = ", ".join(sorted({*self._allow.get(path, "").split(", "), method.upper()} - {""}))

    # -- schema ---------------------------------------------------------------------------------

    def migration_plan(self) -> dict[str, Sequence[Migration]]:
        plan: dict[str, Sequence[Migration]] = {"store": STORE_MIGRATIONS, "admin": ADMIN_MIGRATIONS,
                                                "dataplane": DATAPLANE_MIGRATIONS}
        plan.update({m.name: tuple(m.migrations()) for m in self.modules})
        return plan

    def open_store(self) -> Store:
        return open_store(self.resolved.database_url, data_dir=self.cfg.data_dir,
                          feed_mode=self.cfg.change_feed, poll_interval_s=self.cfg.poll_interval_s,
                          timeout_s=self.cfg.store.timeout_s, pool_size=self.cfg.store.pool_size)

    # -- lifespan -------------------------------------------------------------------------------

    @property
    def store(self) -> Store | None:
        """The open store while running (for the gateway's snapshot readers); ``None`` otherwise."""
        return self._running.store if self._running else None

    def lifespan(self, _app: Litestar | None = None) -> AbstractAsyncContextManager[None]:
        """Usable directly in ``Litestar(lifespan=[plane.lifespan])`` or as ``plane.lifespan()``."""
        return self._run()

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        if not self.cfg.enabled:
            yield
            return
        async with AsyncExitStack() as stack:
            store = self.open_store()
            stack.push_async_callback(store.aclose)
            applied = await ensure_schema(store, self.migration_plan(), auto_migrate=self.cfg.auto_migrate)
            for m in applied:
                log.info("applied migration %s v%d: %s", m.module, m.version, m.description)
            await store.changes.start()
            object_store = await self._open_object_store(stack)
            audit = AuditWriter(store, stats=self.denial_stats, window_s=self.cfg.denied_audit_window_s)
            stack.push_async_callback(audit.aclose)  # before the store closes: write open denial aggregates
            contexts: dict[str, ModuleContext] = {}
            services = ServiceRegistry()  # one per start, shared: a module reads what another provides
            for module in self.modules:
                ctx = ModuleContext(name=module.name, store=store, changes=store.changes, audit=audit,
                                    settings=self.cfg, data_dir=Path(self.cfg.data_dir), object_store=object_store,
                                    services=services, authorize=self.authorize)
                await stack.enter_async_context(module.lifespan(ctx))
                contexts[module.name] = ctx
            self._authenticator = Authenticator(store, self.resolved.bootstrap_key_sha256)
            self._denials = audit
            self._running = _Running(store=store, audit=audit, contexts=contexts)
            log.info("control plane up: %s, modules %s", store.url, [m.name for m in self.modules])
            try:
                yield
            finally:
                self._running = None
                self._authenticator = Authenticator(None, self.resolved.bootstrap_key_sha256)
                self._denials = AuditWriter(None, stats=self.denial_stats)

    async def reconfigure(self, cfg: ControlCfg) -> None:
        """The gateway reloaded its config: hand ``cfg.module_settings`` to the running modules.

        Only ``module_settings`` follows a reload (the database, the module list and the rest of
        ``control:`` need a restart). Each module with a ``reconfigure(ctx, cfg)`` hook is called in
        discovery order; an ``AdminError`` it raises means it refused its settings (with nothing changed
        on its side) and reaches the caller, which rejects the reload. Before start-up the settings are
        only kept, for the lifespan to read.
        """
        before = self.cfg
        self.cfg = msgspec.structs.replace(before, module_settings=cfg.module_settings)
        self.resolved = dataclasses.replace(self.resolved, cfg=self.cfg)
        running = self._running
        if running is None:
            return
        try:
            for module in self.modules:
                ctx = running.contexts[module.name]
                ctx.settings = self.cfg
                hook = getattr(module, "reconfigure", None)
                if callable(hook):
                    await hook(ctx, self.cfg)
        except BaseException:  # refused: the settings stay as they were, for every module
            self.cfg = before
            self.resolved = dataclasses.replace(self.resolved, cfg=before)
            for ctx in running.contexts.values():
                ctx.settings = before
            raise

    async def _open_object_store(self, stack: AsyncExitStack) -> ObjectStore:
        spec = self.cfg.object_store
        store: ObjectStore
        if spec.kind == "s3":
            assert spec.s3 is not None  # ObjectStoreCfg.__post_init__ guarantees it
            store = await S3ObjectStore.connect(spec.s3)
        else:
            store = LocalObjectStore(self.resolved.object_root)
        stack.push_async_callback(store.aclose)
        return store

    # -- per-request plumbing -------------------------------------------------------------------

    async def _check_access(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        method = str(connection.scope.get("method", "WS"))
        known, minimum = self.permissions.minimum(method, str(connection.scope.get("path_template", "")))
        if not known:  # Litestar's automatic OPTIONS handlers are not in the table
            minimum = required_role(handler)
        if minimum is None:
            return
        connection.state.principal = await self.authorize(connection, minimum)

    async def authorize(self, connection: ASGIConnection[Any, Any, Any, Any], minimum: Role) -> Principal:
        """The request's admin key, checked for ``minimum``, as the guard does (denials recorded alike).

        Public routes that accept other credentials too (a training job's token) call it by hand, through
        ``ModuleContext.authorize``; ``Unauthorized``/``Forbidden`` escape for them to render."""
        method, path = str(connection.scope.get("method", "WS")), connection.url.path
        return await self.check_key(bearer_token(connection), minimum, method=method, path=path,
                                    request_id=request_id(connection),
                                    source=connection.client.host if connection.client else None)

    async def check_key(self, token: str | None, minimum: Role, *, method: str, path: str, request_id: str,
                        source: str | None) -> Principal:
        """An API key's principal, checked for ``minimum``: the guard's check for a key that did not come in an
        ``Authorization`` header (the console's sign-in form). Denials are recorded and counted alike."""
        principal: Principal | None = None
        try:
            principal = await self._authenticator.authenticate(token)
            self._authenticator.authorize(principal, minimum, f"{method} {path}")
        except (Unauthorized, Forbidden) as denied:
            parsed = parse_key(token) if token else None
            await self._denials.denial(
                principal=principal, key_id=parsed[0] if parsed else None, request_id=request_id, method=method,
                path=path, status_code=denied.status, reason=denied.message, source=source,
            )
            raise
        return principal

    def _require_running(self) -> _Running:
        if self._running is None:
            raise ServiceUnavailable("The control plane is not running")
        return self._running

    def _context_provider(self, name: str) -> Any:
        def provide() -> ModuleContext:
            return self._require_running().contexts[name]

        return provide


def _provide_caller(request: Request[Any, Any, Any]) -> Actor:
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        raise Unauthorized("This operation needs an authenticated admin key")
    return Actor(principal=principal, request_id=request_id(request))


def load_control_plane(
    cfg: ControlCfg,
    *,
    admin_routes: Sequence[ControllerRouterHandler] = (),
    modules: Sequence[ControlModule] | None = None,
    environ: dict[str, str] | None = None,
    bootstrap_admin_key: str | None = None,
) -> ControlPlane:
    """Build the control plane for ``cfg``.

    ``admin_routes``: extra handlers (paths relative to ``/llm-ops/v1``) that get the
    same guard and envelope, e.g. the gateway's ``POST /gateway/reload``.
    ``modules``: use these instead of entry-point discovery (tests).
    ``environ``/``bootstrap_admin_key``: override where the bootstrap key and
    ``LLMOPS_DATABASE_URL`` come from (default: the process environment).
    """
    resolved = resolve_env(cfg, environ, bootstrap_admin_key=bootstrap_admin_key)
    if not cfg.enabled:
        chosen: Sequence[ControlModule] = ()
    elif modules is not None:
        chosen = [_check_module(m, "modules argument") for m in modules
                  if cfg.modules is None or m.name in cfg.modules]
    else:
        chosen = discover_modules(cfg.modules)
    return ControlPlane(resolved, chosen, admin_routes)
