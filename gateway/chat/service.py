"""The chat endpoint's work: accept → on_request → route → on_route → relay (→ filters) → account → on_finish.

The other OpenAI endpoints (gateway/completions, embeddings, responses) are subclasses that set
their own `spec` (`EndpointSpec`: endpoint, parser, prompt field, stream meter, end marker) and, where their
stream is shaped differently, override `_relay_chunks`/`_relay_filtered`/`_error_frame`. The
instance copies them into slots once, so chat pays no lookup it did not pay before.

Raw ASGI on purpose: this is the hot path, and it needs two things a
framework response object hides: cancelling the upstream call the moment the
client disconnects, and sending each stream chunk the moment it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from adapters.errors import GatewayError, InvalidRequest, MethodNotAllowed, UpstreamError, UpstreamTimeout
from adapters.gateway_plugins import RequestContext
from gateway.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    request_id_from,
    send_error,
    send_json,
)
from gateway.chat.protocol import BodyHead, parse_chat_body
from gateway.metering import StreamMeter, UsageRecord
from gateway.plugins import FilterChain
from gateway.relay import Relayed
from gateway.routing import Route
from gateway.sse import DONE, frame
from gateway.watchdog import RequestWatch

if TYPE_CHECKING:
    from gateway.state import Gateway

__all__ = ["CHAT", "ChatService", "EndpointSpec"]

log = logging.getLogger("llmops.chat")

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _route_headers(rid: str, route: Route, provider: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-request-id", rid.encode()),
        (b"x-llmops-route", route.name.encode("utf-8", "replace")),
        (b"x-llmops-provider", provider.encode()),
    ]


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """What differs between the OpenAI endpoints one service class serves."""

    endpoint: str  # an `adapters.upstream.Endpoint`: the upstream path, and the usage record's `endpoint`
    parse: Callable[[bytes], tuple[BodyHead, dict[str, Any]]]
    prompt_key: str  # the body field whose text is counted when the upstream reports no usage
    meter: Callable[[bool], Any]  # a `StreamMeter`-like: feed(payload) -> forward?, usage, text, first_token_at
    done: bytes = DONE  # what ends a stream (the Responses API sends nothing)


CHAT = EndpointSpec("chat", parse_chat_body, "messages", StreamMeter)


class ChatService:
    __slots__ = ("_done", "_endpoint", "_gw", "_meter", "_parse", "_prompt_key")

    spec: ClassVar[EndpointSpec] = CHAT

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        spec = self.spec
        self._endpoint, self._parse, self._prompt_key = spec.endpoint, spec.parse, spec.prompt_key
        self._meter, self._done = spec.meter, spec.done

    async def handle(self, scope: Scope, receive: Receive, send: Send, route_name: str | None = None) -> None:
        """One chat request, start to finish. Deliberately one flat coroutine: each extra
        layer on this path is a frame per request that the GC scans while it is in flight."""
        incoming_id = declared_length = None
        for name, value in scope["headers"]:  # one pass for the two headers every request needs
            if name == b"x-request-id":
                if incoming_id is None:  # the first one wins (adapters/request_id.py)
                    incoming_id = value
            elif name == b"content-length":
                declared_length = value
        rid = request_id_from(incoming_id)
        started = time.perf_counter()
        if scope["method"] != "POST":
            await self.reject(send, MethodNotAllowed(f"Method {scope['method']} not allowed; use POST"), rid, started)
            return
        gw = self._gw
        gen = gw.generation
        plugins = gen.plugins  # this generation's: a reload mid-request does not change them
        gen.inflight += 1
        gw.inflight += 1  # read by the llmops_inflight_requests gauge at scrape time
        rec = ctx = chain = None  # rec is set once a route is chosen; from then on the relay block records it
        try:
            # accept → on_request → route
            try:
                raw = await read_body(receive, declared_length, gw.max_body_bytes)
                head, body = self._parse(raw)
                model = route_name or head.model
                if not model:
                    raise InvalidRequest("You must provide a model parameter", param="model")
                if route_name is not None:
                    body["model"] = route_name
                ctx = RequestContext(
                    request_id=rid, model=model, body=body, stream=bool(head.stream), raw_headers=scope["headers"],
                    client_wants_usage=bool(head.stream_options and head.stream_options.include_usage),
                    started=started, endpoint=self._endpoint, control=gen.control,
                )
                if plugins.on_request:  # no coroutine at all when no plug-in has the hook
                    pending = plugins.run_request(ctx)  # None: every hook was a plain function and ran
                    if pending is not None:
                        await pending
                route = gen.table.resolve(ctx.route_name or ctx.model)
                if plugins.response_filter:
                    chain = plugins.filters(ctx)
            except ClientDisconnected:
                self._record_rejected(rid, 499, "client_disconnected", started, ctx)
                return
            except GatewayError as exc:
                await self.reject(send, exc, rid, started, ctx)
                return
            # relay → account. The status starts as 500: whatever escapes below without setting
            # it (a bug) was answered with a 500 by the outer handler, and is counted as one.
            rec = UsageRecord(
                request_id=rid, route=route.label or route.name, provider="-", model="-", stream=ctx.stream,
                status=500, latency_s=0.0, tags=ctx.tags, endpoint=self._endpoint,
            )
            task = asyncio.current_task()
            assert task is not None
            watch = gw.watchdog.watch(receive, task, started)
            try:
                relayed = await gw.relay.run(
                    route, ctx.body, rid, watch, stream=ctx.stream,
                    ctx=ctx, on_route=plugins.run_route if plugins.on_route else None, endpoint=self._endpoint,
                )
                target = relayed.target
                rec.provider, rec.model, rec.attempts = target.provider.name, target.model, relayed.attempts
                if relayed.fallback:  # rare: the common path pays one test
                    rec.fallback, rec.first_provider = True, relayed.first_provider
                headers = _route_headers(rid, route, rec.provider)
                if ctx.response_headers:
                    headers += ctx.response_headers
                if relayed.completion is None:
                    await self._stream(ctx, relayed, rec, watch, send, headers, chain)
                else:
                    c = relayed.completion
                    rec.status = c.status
                    rec.apply_usage(c.usage, ctx.body.get(self._prompt_key, []), c.content)
                    raw = c.raw if chain is None else chain.body_bytes(c.raw)
                    watch.responded = True
                    await send_json(send, c.status, raw, headers)
            except GatewayError as exc:  # no upstream answered; nothing was sent yet
                watch.responded = True
                rec.status, rec.error, rec.fallback = exc.http_status, exc.kind, exc.fallback
                rec.first_provider = exc.first_provider
                await send_error(send, exc, rid)
            except asyncio.CancelledError:
                if not watch.disconnected:
                    raise
                task.uncancel()
                rec.status, rec.error = 499, "client_disconnected"
            except Exception:
                rec.error = "server_error"
                raise
            finally:
                gw.watchdog.done(watch)
                rec.latency_s = time.perf_counter() - started
                rec.principal, rec.annotations, rec.variant = ctx.principal, ctx.annotations, ctx.variant
                rec.experiment, rec.episode_id = ctx.experiment, ctx.episode_id
                if plugins.on_finish:
                    gw.usage.record_finished_batch(rec, ctx, plugins.finish_batch)
                else:
                    gw.usage.record(rec)
        except Exception:  # a bug, not a client or upstream error: log it, answer 500 if still possible
            log.exception("unhandled error in chat request", extra={"fields": {"request_id": rid}})
            if rec is None:  # failed before the relay block, which records its own
                self._record_rejected(rid, 500, "server_error", started, ctx)
            with contextlib.suppress(Exception):
                await send_error(send, GatewayError("Internal server error"), rid)
        finally:
            gen.inflight -= 1
            gw.inflight -= 1

    async def reject(
        self, send: Send, exc: GatewayError, rid: str, started: float, ctx: RequestContext | None = None
    ) -> None:
        """Answer an error before any upstream was tried, counted and logged like every response."""
        self._record_rejected(rid, exc.http_status, exc.kind, started, ctx)
        await send_error(send, exc, rid)

    def _record_rejected(
        self, rid: str, status: int, kind: str, started: float, ctx: RequestContext | None = None
    ) -> None:
        """Denied requests carry the principal, tags and annotations the plug-ins had set."""
        rec = UsageRecord(
            request_id=rid, route="-", provider="-", model="-", stream=False, status=status,
            latency_s=time.perf_counter() - started, attempts=0, usage_source="none", error=kind,
            endpoint=self._endpoint,
        )
        if ctx is not None:
            rec.principal, rec.tags, rec.annotations = ctx.principal, ctx.tags, ctx.annotations
            rec.variant, rec.experiment, rec.episode_id = ctx.variant, ctx.experiment, ctx.episode_id
        plugins = self._gw.generation.plugins
        if plugins.on_finish:
            if ctx is None:  # refused before its body was read or parsed: a bare context
                ctx = RequestContext(request_id=rid, model="", body={}, stream=False, raw_headers=[], started=started,
                                     endpoint=self._endpoint)
            self._gw.usage.record_finished_batch(rec, ctx, plugins.finish_batch)
        else:
            self._gw.usage.record(rec)

    async def _stream(
        self,
        ctx: RequestContext,
        stream: Relayed,
        rec: UsageRecord,
        watch: RequestWatch,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        chain: FilterChain | None,
    ) -> None:
        """Relay an open stream; from here on, failures end the stream with an error event."""
        meter = self._meter(ctx.client_wants_usage)
        first_chunk_at = time.perf_counter()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *headers]})
            rec.status = 200
            if chain is None:
                await self._relay_chunks(stream, meter, send, watch)
            else:
                await self._relay_filtered(stream, meter, send, watch, chain)
        except (GatewayError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                if not watch.take_timeout():
                    raise
                exc = UpstreamTimeout(f"upstream {stream.target.provider.name} timed out mid-stream")
            if isinstance(exc, UpstreamError):  # not a plug-in's refusal or failure: that is no replica's fault
                self._gw.relay.stream_failed(stream)
            rec.error = exc.kind
            await send({"type": "http.response.body", "body": self._error_frame(exc, meter), "more_body": True})
        finally:
            watch.settled()
            await stream.close()
            ttft_at = meter.first_token_at or first_chunk_at
            rec.ttft_s = ttft_at - ctx.started
            rec.apply_usage(meter.usage, ctx.body.get(self._prompt_key, []), meter.text)
        watch.responded = True
        await send({"type": "http.response.body", "body": self._done, "more_body": False})

    @staticmethod
    def _error_frame(exc: GatewayError, meter: Any) -> bytes:
        """A failure after the headers went out: one error event (then `done`)."""
        return frame(exc.body())

    @staticmethod
    async def _relay_chunks(stream: Relayed, meter: Any, send: Send, watch: RequestWatch) -> None:
        assert stream.chunks is not None
        clock = time.perf_counter
        try:
            if meter.feed(stream.first):
                await send({"type": "http.response.body", "body": frame(stream.first), "more_body": True})
            async for payload in stream.chunks:
                watch.progress_at = clock()  # the watchdog bounds the silence between chunks
                if meter.feed(payload):
                    await send({"type": "http.response.body", "body": frame(payload), "more_body": True})
        except ValueError:
            raise UpstreamError(f"upstream {stream.target.provider.name} sent a malformed stream chunk") from None

    @staticmethod
    async def _relay_filtered(
        stream: Relayed, meter: Any, send: Send, watch: RequestWatch, chain: FilterChain
    ) -> None:
        """`_relay_chunks` through the plug-ins' response filters: each chunk decoded once, fed
        to the chain, what comes out re-encoded (or, unchanged, sent as it came: `FilterChain.pristine`). The
        usage-only last chunk skips the filters and follows their flush, so it stays last."""
        assert stream.chunks is not None
        clock = time.perf_counter
        tail: bytes | None = None
        try:
            payload = stream.first
            while True:
                if meter.feed(payload):
                    chunk: Any = _decode(payload)
                    if chunk.get("usage") is not None and not chunk.get("choices"):
                        tail = payload
                    else:
                        outs = chain.feed(chunk)
                        if chain.pristine and len(outs) == 1 and outs[0] is chunk:  # unchanged: its own bytes
                            await send({"type": "http.response.body", "body": frame(payload), "more_body": True})
                        else:
                            for out in outs:
                                await send({"type": "http.response.body", "body": frame(_encode(out)),
                                            "more_body": True})
                try:
                    payload = await anext(stream.chunks)
                except StopAsyncIteration:
                    break
                watch.progress_at = clock()
        except ValueError:
            raise UpstreamError(f"upstream {stream.target.provider.name} sent a malformed stream chunk") from None
        for out in chain.flush():
            await send({"type": "http.response.body", "body": frame(_encode(out)), "more_body": True})
        if tail is not None:
            await send({"type": "http.response.body", "body": frame(tail), "more_body": True})
