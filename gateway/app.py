"""App factory: wires config, state, plug-ins and routes into one Litestar app.

Data-plane endpoints answer OpenAI's error schema; admin endpoints under
/llm-ops/v1 answer the `{status, message, data}` envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.handlers import asgi
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest

from adapters.adminapi import (
    ADMIN_PREFIX,
    Actor,
    AdminError,
    AuditWriter,
    BadRequest,
    ControlCfg,
    Envelope,
    Role,
    ServiceUnavailable,
    envelope_exception_handler,
    load_control_plane,
    ok,
    requires,
)
from adapters.errors import GatewayError, NotFound, error_body
from adapters.store import Store, StoreError
from adapters.upstream import Upstream
from gateway.access import SELF_COUNTED, serve_counted
from gateway.asgi import Receive, Scope, Send, first_request_id, request_id_from
from gateway.chat.service import ChatService
from gateway.completions.service import CompletionsService
from gateway.config import ConfigError, GatewayCfg
from gateway.console import console_problem, console_router, console_services
from gateway.dashboard import dashboard_handlers
from gateway.embeddings.service import EmbeddingsService
from gateway.feedback import feedback_handlers
from gateway.health import public_readiness, upstream_detail
from gateway.metering import LogConsumer, MetricsConsumer
from gateway.responses.service import ResponsesService
from gateway.state import Gateway
from gateway.tracing import TracingConsumer, check_tracing
from gateway.usage_writer import usage_writer_for, writer_lifespan
from gateway.workers import reload_others

__all__ = ["create_app"]

log = logging.getLogger("llmops.app")
disable_created_metrics()  # the *_created series double the scrape size for no dashboard value

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                429: "rate_limit_error"}


def _error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Last-resort handler for anything Litestar itself raises (unknown path, 405, …)."""
    # Litestar puts e.g. `Allow` on its 405s; keep such headers whichever schema answers.
    extra = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if request.url.path.startswith(ADMIN_PREFIX):
        response = envelope_exception_handler(request, exc)
        for name, value in extra.items():
            if name.lower() not in {k.lower() for k in response.headers}:
                response.headers[name] = value
        return response
    if request.url.path == "/console" or request.url.path.startswith("/console/"):
        return console_problem(request, exc)  # a page for people, not JSON
    if isinstance(exc, GatewayError):  # raised by a data-plane handler: its own status and body
        return Response(exc.body(), status_code=exc.http_status, media_type=MediaType.JSON, headers=exc.headers())
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status >= 500:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        message = "Internal server error"
    else:
        message = exc.detail if isinstance(exc, HTTPException) else str(exc)
        if status == 404:
            message = f"Unknown path {request.url.path!r}"
    body = error_body(message, _ERROR_TYPES.get(status, "server_error"), None, None)
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=extra)


def create_app(
    cfg: GatewayCfg,
    *,
    config_path: Path | None = None,
    default_config: Any = None,
    plugins: Sequence[Any] = (),
    upstreams: Mapping[str, Upstream] | None = None,
    install_signal_handlers: bool = False,
) -> GatewayApp:
    """`plugins` and `upstreams`: see `Gateway` (plug-in instances beside the YAML's; ready
    providers in place of configured ones, e.g. `FunctionUpstream` in tests)."""
    gw = Gateway(cfg, config_path=config_path, default_config=default_config, plugins=plugins, upstreams=upstreams)
    # Records into the store (None without one, or with metering off). First: it mints each record's
    # record_id, which the consumers after it (traces) then see.
    usage_writer = usage_writer_for(cfg, gw.metrics)
    if usage_writer is not None:
        gw.usage.add_consumer(usage_writer)
    gw.usage.add_consumer(MetricsConsumer(gw.metrics))
    gw.usage.add_consumer(gw.metrics.usage_stats)  # tokens, cost, priced/unpriced, A/B variants
    check_tracing(cfg.tracing)  # tracing on without the otel extra fails at boot, not on the first batch
    tracing = TracingConsumer(lambda: gw.cfg.tracing)  # follows reloads; imports nothing while off
    gw.usage.add_consumer(LogConsumer())
    gw.usage.add_consumer(tracing)  # after the writer, which mints record ids: spans carry them
    chat = ChatService(gw)
    # The other OpenAI endpoints: the chat path (routing, resilience, plug-ins, metering), their own wire.
    endpoints: dict[str, ChatService] = {
        "/v1/completions": CompletionsService(gw),
        "/v1/embeddings": EmbeddingsService(gw),
        "/v1/responses": ResponsesService(gw),
    }

    @asgi("/v1/chat/completions", include_in_schema=False, copy_scope=False, opt=SELF_COUNTED)
    async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
        await chat.handle(scope, receive, send)

    def _endpoint_handler(path: str, service: ChatService) -> Any:
        """What Litestar serves for odd spellings of an endpoint's path (e.g. a trailing slash)."""

        @asgi(path, include_in_schema=False, copy_scope=False, opt=SELF_COUNTED, name=path)
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await service.handle(scope, receive, send)

        return handler

    @asgi("/serve", is_mount=True, include_in_schema=False, opt=SELF_COUNTED)
    async def serve_route(scope: Scope, receive: Receive, send: Send) -> None:
        # A mount, not a `{route:str}` path param: route names may contain '/'.
        await _serve_path(chat, "/serve/" + scope["path"].removeprefix("/serve").strip("/"), scope, receive, send)

    @get("/v1/models", include_in_schema=False)
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model(name) for name in gw.generation.table.routes]}

    @get("/v1/models/{model_id:path}", include_in_schema=False)
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        name = model_id.lstrip("/")  # a `path` parameter keeps its leading slash; route names may hold '/'
        if name not in gw.generation.table.routes:
            raise NotFound(f"The model `{name}` does not exist", param="model", code="model_not_found")
        return _model(name)

    @get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", include_in_schema=False)
    async def readyz() -> Response[Any]:
        """Public: overall state and per-route readiness only (see gateway/health.py)."""
        if not gw.ready:
            return Response({"status": "starting"}, status_code=503)
        return Response(public_readiness(gw.generation, gw.control))

    @get("/metrics", include_in_schema=False)
    async def metrics() -> Response[bytes]:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @post("/gateway/reload", status_code=200, tags=["gateway"], opt=requires(Role.admin))
    async def reload_config(caller: Actor) -> Envelope[dict[str, Any]]:
        """Re-read the gateway config file and swap the route table atomically (admin only).

        Under `serve --workers N` the others are then told to reload too; they do so asynchronously, as on SIGHUP."""
        before = _summary(gw.cfg)
        try:
            after = _summary(await gw.reload())
        except ConfigError as exc:
            raise BadRequest(f"config rejected, the running config is kept: {exc}") from None
        reload_others()
        await _audit_reload(plane.store, caller, before, after)
        return ok(after, "config reloaded")

    @get("/gateway/upstreams", tags=["gateway"])
    async def upstream_status() -> Envelope[dict[str, Any]]:
        """Per provider replica: redacted URL, circuit state, failures, in-flight requests (what /readyz omits)."""
        if not gw.ready:
            raise ServiceUnavailable("The gateway is starting")
        return ok(upstream_detail(gw.generation))

    plane = load_control_plane(_control_cfg(cfg), admin_routes=[reload_config, upstream_status])

    async def reconfigure_control(new: GatewayCfg) -> None:
        """Every reload (SIGHUP, the endpoint, each worker), before the new config goes live: the control
        plane takes its part (the prompts: section, in one transaction); a refusal rejects the whole reload."""
        try:
            await plane.reconfigure(_control_cfg(new))
        except AdminError as exc:
            raise ConfigError(exc.message) from None

    gw.before_swap.append(reconfigure_control)
    # The web console (/console): pages over the admin API, called in-process as the signed-in key.
    console = console_services(plane, cfg.console, lambda: _route_names(gw)) if cfg.console.enabled else None
    if console is not None:
        gw.usage.add_consumer(console.receipts)  # the playground's tokens, cost and variant per reply
    gw.metrics.registry.register(plane.denial_stats)  # llmops_admin_auth_denials_total on /metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The usage writer outlives gw.stop(), which drains the usage queue into it; it then flushes.
        async with plane.lifespan(), writer_lifespan(usage_writer, plane.store):
            await gw.start(plane.store)  # its published snapshots feed every generation
            # Everything allocated so far (imports, config, pools) lives for the whole process:
            # move it out of the collector's reach so GC passes only scan request garbage.
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                await gw.stop()
                await tracing.aclose()  # after the usage queue drained: its last spans are exported

    @contextlib.asynccontextmanager
    async def signals(app: Litestar) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            pending: set[asyncio.Task[None]] = set()

            def on_hup() -> None:
                task = asyncio.ensure_future(_reload_on_signal(gw))
                pending.add(task)  # keep a reference until it finishes
                task.add_done_callback(pending.discard)

            loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            yield
        finally:
            if install_signal_handlers:
                loop.remove_signal_handler(signal.SIGHUP)

    app = Litestar(
        route_handlers=[chat_completions, *(_endpoint_handler(p, svc) for p, svc in endpoints.items()),
                        serve_route, list_models, retrieve_model, healthz, readyz, metrics, *plane.route_handlers,
                        *feedback_handlers(gw), *dashboard_handlers(), *([console_router()] if console else [])],
        lifespan=[lifespan, signals],
        exception_handlers={Exception: _error_handler},
        openapi_config=plane.openapi_config,
        logging_config=None,
    )
    app.state.gateway = gw
    app.state.control_plane = plane
    app.state.console = console
    root = GatewayApp(app, chat, gw, endpoints)
    if console is not None:
        console.caller.app = root  # the console calls the whole app: admin API and data plane alike
    return root


async def _serve_path(chat: ChatService, path: str, scope: Scope, receive: Receive, send: Send) -> None:
    """`/serve/{route}/chat`, where the route name itself may contain '/'."""
    rest = path.removeprefix("/serve/")
    route = rest.removesuffix("/chat")
    if rest == path or route == rest or not route:
        rid = request_id_from(first_request_id(scope["headers"]))
        await chat.reject(send, NotFound(f"Unknown path {path!r}; use /serve/{{route}}/chat"), rid, time.perf_counter())
        return
    await chat.handle(scope, receive, send, route_name=route)


class GatewayApp:
    """The ASGI entry point: chat requests go straight to the chat service, then the other
    OpenAI endpoints (completions, embeddings, responses) to theirs, the rest to Litestar.

    The two chat paths are the hot path and are tested first; skipping Litestar's router,
    exception middleware and send wrappers there is worth ~10% throughput (docs/benchmarks.md).
    Litestar still owns every other path, the lifespan, and odd spellings of the endpoint paths
    (e.g. a trailing slash).
    """

    def __init__(
        self, litestar: Litestar, chat: ChatService, gateway: Gateway,
        endpoints: Mapping[str, ChatService] | None = None,
    ) -> None:
        self.litestar = litestar
        self.state = litestar.state
        self._chat = chat
        self._gw = gateway
        self._endpoints = dict(endpoints or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/v1/chat/completions":
                await self._chat.handle(scope, receive, send)
                return
            if path.startswith("/serve/") and path.endswith("/chat"):
                await _serve_path(self._chat, path, scope, receive, send)
                return
            service = self._endpoints.get(path)
            if service is not None:
                await service.handle(scope, receive, send)
                return
            # Every other response is counted, logged and given an x-request-id (gateway/access.py).
            await serve_counted(self.litestar, self._gw, scope, receive, send)
            return
        await self.litestar(scope, receive, send)  # type: ignore[arg-type]  # Litestar types ASGI events as narrower TypedDicts


def _route_names(gw: Gateway) -> list[str]:
    """The route names as the live generation has them (none before start-up)."""
    gen = gw.generation
    return sorted(gen.table.routes) if gen is not None else []


def _model(name: str) -> dict[str, Any]:
    """OpenAI's model object; routes have no creation time, hence 0."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "llmops"}


def _control_cfg(cfg: GatewayCfg) -> ControlCfg:
    """``cfg.control`` plus what control modules need from the rest of the YAML (control/ never reads it):
    the ``prompts:`` section and the routes' templates, for the prompts module (control/prompts/settings.py);
    this gateway's own address and route names, for the evaluation module (control/evaluation/settings.py), and
    its admin URL, which local training jobs call back (control/training/runtimes.py)."""
    prompts = {**cfg.control.module_settings.get("prompts", {}), "declared": msgspec.to_builtins(cfg.prompts),
               "route_templates": [r.template for r in cfg.routes if r.template]}
    host = cfg.server.host if cfg.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    own_url = f"http://{'[' + host + ']' if ':' in host else host}:{cfg.server.port}"
    evaluation = {"gateway_url": own_url,
                  **cfg.control.module_settings.get("evaluation", {}), "gateway_routes": [r.name for r in cfg.routes]}
    # what local trainers call back (TRAINING_API_BASE_URL, or this section's own api_base_url, wins)
    training = {"api_base_url": f"{own_url}/llm-ops/v1", **cfg.control.module_settings.get("training", {})}
    return msgspec.structs.replace(cfg.control, module_settings={**cfg.control.module_settings, "prompts": prompts,
                                                                 "evaluation": evaluation, "training": training})


def _summary(cfg: GatewayCfg) -> dict[str, list[str]]:
    return {"routes": [r.name for r in cfg.routes], "providers": [p.name for p in cfg.providers]}


async def _audit_reload(store: Store | None, caller: Actor, before: Any, after: Any) -> None:
    """Best effort: the reload already happened, and must work while the database is down (as SIGHUP does)."""
    if store is None:
        return
    try:
        async with store.begin() as conn:
            await AuditWriter(store).record(
                conn, caller, action="gateway.reload", resource_type="gateway_config", before=before, after=after
            )
    except StoreError as err:
        log.warning("config reloaded by %s, but its audit entry was not written: %s", caller.principal.key_id, err)


async def _reload_on_signal(gw: Gateway) -> None:
    try:
        await gw.reload()
    except ConfigError as exc:
        log.error("SIGHUP reload rejected, old config kept: %s", exc)
