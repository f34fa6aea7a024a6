"""The one interface a control-plane module implements, and what it receives at start-up.

A module is a package under ``control/`` exposing one object, registered in
``pyproject.toml``::

    [project.entry-points."llmops.control"]
    governance = "control.governance:module"

The object satisfies ``ControlModule``:

``name``
    Lower-case identifier (``[a-z][a-z0-9_]*``); names the migration history, the
    OpenAPI tag default, ``cfg.modules`` filtering and ``cfg.module_settings[name]``.
``routes()``
    Litestar handlers/controllers/routers with paths *relative to* ``/llm-ops/v1``.
    The host mounts them under that prefix inside a router that already has
    the auth guard, the envelope exception handler, request-size limit and these
    dependencies, so handlers just declare what they need by name:

    ======== ===================================================================
    ``ctx``    this module's ``ModuleContext``
    ``store``  the ``Store`` (``async with store.begin() as conn``)
    ``audit``  the ``AuditWriter``
    ``caller`` the authenticated ``Actor`` (principal + request id) for audit entries
    ``page``   ``PageParams`` from ``?page=&pageSize=`` (bounded), for list endpoints
    ======== ===================================================================

    Set a route's minimum role with ``opt=requires(Role.operator)``; default is
    viewer for GET and operator for other methods. Return ``ok(data)`` (an
    ``Envelope``); raise ``AdminError`` subclasses for failures. JSON bodies are
    capped at ``cfg.max_json_bytes``; an upload handler that streams
    (``request.stream()``) sets ``request_max_body_size=None`` on itself and
    enforces ``ctx.settings.max_upload_bytes`` while streaming.
``migrations()``
    This module's ``Migration``s, versions 1, 2, 3… (see ``adapters.store.migrations``).
``lifespan(ctx)``
    An async context manager entered after the schema is current and left at
    shutdown (start background workers here; publish objects with
    ``ctx.provide(KEY, obj)``; handlers read them with ``ctx.services[KEY]``).

``reconfigure(ctx, cfg)`` (optional)
    ``async``; called when the gateway reloads its config (SIGHUP, ``POST /gateway/reload``, each
    worker), before the new config goes live, with the new ``ControlCfg`` (``ctx.settings`` already
    holds it). Only ``module_settings`` follows a reload. Raise an ``AdminError`` (e.g. ``SemanticError``)
    to refuse it, after changing nothing: the reload is then rejected as a whole.

``ctx.services`` is one ``ServiceRegistry`` shared by every module of the
control plane (``adapters.adminapi.services``); keys for services other modules
use are declared in ``adapters.adminapi.seams``.

Modules must not import one another or ``gateway``; what they share goes through
the store (tables, ``ChangeFeed`` topics), types in ``adapters`` or the service registry.
What the gateway serves from (routes, keys, policies, templates, experiments) goes
out as a snapshot: ``await ctx.publish_snapshot(conn, kind, build)`` in the write's
transaction (``adapters.snapshots`` has the payload types).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec
from litestar.connection import ASGIConnection
from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi.audit import AuditWriter
from adapters.adminapi.auth import Principal
from adapters.adminapi.rbac import Role
from adapters.adminapi.services import ServiceKey, ServiceRegistry
from adapters.adminapi.settings import ControlCfg
from adapters.objectstore import ObjectStore
from adapters.snapshots import SnapshotKind, SnapshotPayload
from adapters.store import ChangeFeed, Migration, Store, publish

__all__ = ["ControlModule", "Migration", "ModuleContext", "no_lifespan"]

T = TypeVar("T")


@runtime_checkable
class ControlModule(Protocol):
    name: str

    def routes(self) -> Sequence[ControllerRouterHandler]: ...

    def migrations(self) -> Sequence[Migration]: ...

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]: ...


@dataclass
class ModuleContext:
    """What a module gets from the host; one per module, alive between start-up and shutdown."""

    name: str
    store: Store
    changes: ChangeFeed
    audit: AuditWriter
    settings: ControlCfg
    data_dir: Path
    object_store: ObjectStore | None = None  # None when the host could not build one (e.g. s3 extra missing)
    services: ServiceRegistry = field(default_factory=ServiceRegistry)  # the plane's, shared by all modules
    # The guard's key check for a route marked public that also takes another credential: the request's admin
    # key for a minimum role, the principal or ``Unauthorized``/``Forbidden`` (None outside a running plane).
    authorize: Callable[[ASGIConnection[Any, Any, Any, Any], Role], Awaitable[Principal]] | None = None

    def provide(self, key: ServiceKey[T], service: T) -> None:
        """Publish ``service`` under ``key`` (named ``<this module>.…``); a second provider fails start-up."""
        self.services.provide(self.name, key, service)

    async def publish_snapshot(
        self, conn: AsyncConnection, kind: SnapshotKind,
        build: Callable[[int, datetime], Awaitable[SnapshotPayload]],
    ) -> SnapshotPayload:
        """Publish the gateway's ``kind`` snapshot in the caller's write transaction (``store.begin()``):
        ``await build(generation, published_at)`` returns the whole payload, read through ``conn``
        (it runs after the snapshot's row lock is taken, so it sees every earlier publish)."""
        return await publish(conn, self.changes, kind, build)

    def module_settings(self, type_: type[T]) -> T:
        """``cfg.module_settings[<name>]`` decoded into the module's own typed settings struct.

        Raises ``msgspec.ValidationError`` naming the bad field, so typos fail at start-up.
        """
        return msgspec.convert(self.settings.module_settings.get(self.name, {}), type_)


@contextlib.asynccontextmanager
async def no_lifespan(_ctx: ModuleContext) -> AsyncIterator[None]:
    """For modules with nothing to start: ``def lifespan(self, ctx): return no_lifespan(ctx)``."""
    yield
