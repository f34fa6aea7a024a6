"""The gateway plug-in protocol: what an out-of-tree package implements and imports.

A plug-in package registers one factory under the ``llmops.gateway`` entry-point
group, and the gateway YAML enables, orders and configures it::

    [project.entry-points."llmops.gateway"]
    redact = "my_guardrails:Redact"

    plugins:                       # gateway.yaml: run in this order
      - name: redact
        settings: {replacement: "[email]"}

The factory (usually the class itself) declares, in one object:

``Settings``  optional ``msgspec.Struct`` type; ``settings:`` is decoded into it at
              load, and a bad key fails the load naming ``$.plugins[i].settings.<key>``.
``failure``   ``"closed"`` (default) or ``"open"``: what an exception inside the
              plug-in does to the request. Closed answers a 500 ``server_error`` in
              OpenAI's schema (mid-stream: one error event, then ``[DONE]``); open logs
              it and carries on as if the hook had done nothing. Either way it is
              logged once. A ``GatewayError`` raised on purpose (401, 403, 429, ...) is
              a decision, not a failure: it always reaches the client.

It is called as ``factory(settings)`` (``factory()`` without ``Settings``) once per
config generation; a factory that declares a keyword parameter ``host`` also gets
``host=PluginHost(...)``: the control plane's store and the metrics registry, for
plug-ins that keep state off the request path (budgets' spend so far, counters); one that
declares ``config`` gets that generation's gateway config (``gateway.config.GatewayCfg``: the
YAML merged with the store's routes, read-only), e.g. the routes' prompt templates.
Each generation is built so a reload rebuilds every plug-in with the new settings and
swaps them in atomically with the routes. The instance implements any of these
hooks (checked at load: a misspelt ``on_*`` name is an error). ``on_request``,
``on_route`` and ``on_finish`` may be ``async def`` or plain functions: a plain one is
called without a coroutine, the cheaper form for hooks that await nothing:

``async on_request(ctx)``  after the body is parsed, before routing: authenticate
                           (set ``ctx.principal``), apply templates, assign A/B arms
                           (set ``ctx.route_name``), check input. Raise to deny.
``async on_route(ctx)``    once per target tried, before its upstream call:
                           ``ctx.route_name``, ``ctx.provider`` and ``ctx.upstream_model``
                           are the actual choice (limits and budgets price it here).
``response_filter(ctx)``   returns a ``ResponseFilter`` for this request, or None; or
                           ``response_filter`` is itself a ``ResponseFilter`` object:
                           one stateless filter shared by every request.
``async on_finish(ctx, usage)`` every request, success or failure, denied ones too,
                           off the request path once its token counts are final
                           (``usage is ctx.usage``). Settle reservations here.
Live control-plane state (keys, teams, policies, templates, experiments) is on every
request as ``ctx.control`` (``adapters.snapshots.ControlSnapshots``): it changes without a
rebuild, so derive indexes once per snapshot object (``if snap is not self._seen``), never
per request. A hook may add response headers (``ctx.add_response_header``), sent with a
successful answer (e.g. ``x-ratelimit-*``); a refusal carries its own (``GatewayError.headers``).

``lifespan()``             an async context manager, entered when its generation
                           starts and left after that generation drained: start and
                           stop clients and background refreshers.
``readiness()``            optional, not a hook: a small dict shown under ``plugins`` in
                           ``/readyz`` (a backend's state; never a secret), or None.
                           It never makes the gateway unready.

A hook no plug-in implements costs nothing on the request path.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

import msgspec

from adapters.snapshots import ControlSnapshots
from adapters.usage import Principal, UsageRecord
from policies.pricing import PriceBook

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOKS",
    "Failure",
    "GatewayPlugin",
    "PluginHost",
    "Principal",
    "RequestContext",
    "ResponseFilter",
    "UsageRecord",
]

ENTRY_POINT_GROUP = "llmops.gateway"
HOOKS = ("on_request", "on_route", "response_filter", "on_finish", "lifespan")
Failure = Literal["closed", "open"]


class RequestContext(msgspec.Struct):
    """One request as plug-ins see and change it. A msgspec Struct: built once per request, in C."""

    request_id: str
    model: str  # as the client asked (or the /serve/{route} path named)
    body: dict[str, Any]  # the parsed request body; hooks may rewrite it in place
    stream: bool
    raw_headers: list[tuple[bytes, bytes]]  # the ASGI scope's, names lower-cased by the server
    client_wants_usage: bool = False
    endpoint: str = "chat"  # chat, completions, embeddings or responses: what `body` and the filters' chunks are
    started: float = msgspec.field(default_factory=time.perf_counter)
    principal: Principal | None = None  # set by an authenticating plug-in; carried into the usage record
    route_name: str | None = None  # on_request may redirect (an A/B arm); on_route sees the resolved one
    variant: str | None = None  # the A/B arm's name, set with route_name by an experiment plug-in; into the record
    experiment: str | None = None  # the experiment's id when `variant` is set; into the record
    episode_id: str | None = None  # the request's session/episode id, when it names one; into the record
    provider: str | None = None  # on_route: the provider about to be called
    upstream_model: str | None = None  # on_route: the model name that provider is asked for
    tags: dict[str, str] = msgspec.field(default_factory=dict)  # carried into the usage record
    annotations: dict[str, dict[str, Any]] | None = None  # per plug-in; carried into the usage record
    usage: UsageRecord | None = None  # the final record, set before on_finish
    decoded_headers: dict[str, str] | None = None  # filled by `headers` on first use
    control: ControlSnapshots | None = None  # the control plane's snapshots when the request started
    response_headers: list[tuple[bytes, bytes]] | None = None  # added by hooks; sent with a successful answer

    @property
    def headers(self) -> dict[str, str]:
        """The request headers as text, decoded on first use: most requests never need them all."""
        if self.decoded_headers is None:
            self.decoded_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers}
        return self.decoded_headers

    def add_response_header(self, name: str, value: str) -> None:
        """A header for the client's successful answer (lower-case name; the value must be latin-1)."""
        if self.response_headers is None:
            self.response_headers = []
        self.response_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))

    def annotate(self, plugin: str, **values: Any) -> None:
        """Note something for the usage record under the plug-in's name (denied requests keep it too)."""
        if self.annotations is None:
            self.annotations = {}
        self.annotations.setdefault(plugin, {}).update(values)


class PluginHost:
    """What the gateway lends a plug-in that asks for it (a ``host`` keyword on its factory).

    ``store``: the control plane's store, or None without one; read it off the request path
    only (a lifespan task, ``on_finish``), never per request. ``registry``: where the plug-in's
    Prometheus metrics register; None under ``--workers`` (multiprocess mode: metrics created
    with ``registry=None`` write their own files and every worker's are summed at scrape). ``control()``: the
    current snapshots, for background work (requests have ``ctx.control``). ``price_book()``: the
    current generation's prices (``policies.pricing.PriceBook``; None before the first), e.g. to
    reserve a request's worst-case cost. ``shared``: one dict per gateway that outlives config
    generations, for state a rebuilt plug-in must keep (counters, clients), under its own name."""

    __slots__ = ("_control", "_prices", "registry", "shared", "store")

    def __init__(self, store: Any, registry: Any, control: Any, prices: Any = None) -> None:
        self.store = store
        self.registry = registry
        self._control = control
        self._prices = prices
        self.shared: dict[str, Any] = {}

    def control(self) -> ControlSnapshots:
        snapshots: ControlSnapshots = self._control()
        return snapshots

    def price_book(self) -> PriceBook | None:
        book: PriceBook | None = None if self._prices is None else self._prices()
        return book


class ResponseFilter(Protocol):
    """Sees what goes back to the client; one per request unless the plug-in's ``response_filter``
    is the filter itself (then shared by every request, so it must keep no state).

    Chunks are decoded OpenAI ``chat.completion.chunk`` objects. ``feed`` returns what to
    send now: the chunk itself, a rewritten one, nothing (held back or dropped) or several
    (released). ``flush`` is called once when the upstream stream ended normally and returns
    whatever is still held; after a failure nothing held is sent. The usage-only last chunk
    does not pass through filters: it is sent after every filter has flushed. Raising
    ``GatewayError`` blocks the response (mid-stream: an error event).

    A filter that never changes what it is given in place may say so with a class attribute
    ``changes_in_place = False``: when every filter of a request does, a body or chunk that
    comes back as the very object passed in is sent as the upstream's own bytes, not
    encoded again. A filter that rewrites must then return a new object."""

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed ``chat.completion`` body: return it, changed or not."""
        ...

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]: ...

    def flush(self) -> list[dict[str, Any]]: ...


class GatewayPlugin(Protocol):
    """The documentation type of a plug-in instance: every hook is optional (see the module doc)."""

    failure: Failure

    async def on_request(self, ctx: RequestContext) -> None: ...

    async def on_route(self, ctx: RequestContext) -> None: ...

    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None: ...

    async def on_finish(self, ctx: RequestContext, usage: UsageRecord) -> None: ...

    def lifespan(self) -> AbstractAsyncContextManager[None]: ...
