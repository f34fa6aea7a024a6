"""The chat endpoint's work: accept → pipeline stages → route → relay → account.

Raw ASGI on purpose: this is the hot path, and it needs two things a
framework response object hides: cancelling the upstream call the moment the
client disconnects, and sending each stream chunk the moment it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from adapters.errors import GatewayError, InvalidRequest, MethodNotAllowed, UpstreamError, UpstreamTimeout
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
from gateway.chat.protocol import parse_chat_body
from gateway.metering import StreamMeter, UsageRecord
from gateway.pipeline import RequestContext
from gateway.relay import Relayed
from gateway.routing import Route
from gateway.sse import DONE, frame
from gateway.watchdog import RequestWatch

if TYPE_CHECKING:
    from gateway.state import Gateway

__all__ = ["ChatService"]

log = logging.getLogger("llmops.chat")

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


class ChatService:
    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

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
        gen.inflight += 1
        gw.inflight += 1  # read by the llmops_inflight_requests gauge at scrape time
        rec = None  # set once a route is chosen; from then on the relay block records it
        try:
            # accept → authenticate/transform → route
            try:
                raw = await read_body(receive, declared_length, gw.max_body_bytes)
                head, body = parse_chat_body(raw)
                model = route_name or head.model
                if not model:
                    raise InvalidRequest("You must provide a model parameter", param="model")
                if route_name is not None:
                    body["model"] = route_name
                ctx = RequestContext(
                    request_id=rid, model=model, body=body, stream=bool(head.stream), raw_headers=scope["headers"],
                    client_wants_usage=bool(head.stream_options and head.stream_options.include_usage),
                    started=started,
                )
                if gw.pipeline.stages:  # no coroutine at all for an empty pipeline
                    await gw.pipeline.run(ctx)
                route = gw.generation.table.resolve(ctx.route_name or ctx.model)
            except ClientDisconnected:
                self._record_rejected(rid, 499, "client_disconnected", started)
                return
            except GatewayError as exc:
                await self.reject(send, exc, rid, started)
                return
            # relay → account. The status starts as 500: whatever escapes below without setting
            # it (a bug) was answered with a 500 by the outer handler, and is counted as one.
            rec = UsageRecord(
                request_id=rid, route=route.label or route.name, provider="-", model="-", stream=ctx.stream,
                status=500, latency_s=0.0, principal=None if ctx.principal is None else str(ctx.principal),
                tags=ctx.tags,
            )
            task = asyncio.current_task()
            assert task is not None
            watch = gw.watchdog.watch(receive, task, started)
            try:
                relayed = await gw.relay.run(route, ctx.body, rid, watch, stream=ctx.stream)
                target = relayed.target
                rec.provider, rec.model, rec.attempts = target.provider.name, target.model, relayed.attempts
                headers = _route_headers(rid, route, rec.provider)
                if relayed.completion is None:
                    await self._stream(ctx, relayed, rec, watch, send, headers)
                else:
                    c = relayed.completion
                    rec.status = c.status
                    rec.apply_usage(c.usage, ctx.body.get("messages", []), c.content)
                    watch.responded = True
                    await send_json(send, c.status, c.raw, headers)
            except GatewayError as exc:  # no upstream answered; nothing was sent yet
                watch.responded = True
                rec.status, rec.error = exc.http_status, exc.kind
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
                gw.usage.record(rec)
        except Exception:  # a bug, not a client or upstream error: log it, answer 500 if still possible
            log.exception("unhandled error in chat request", extra={"fields": {"request_id": rid}})
            if rec is None:  # failed before the relay block, which records its own
                self._record_rejected(rid, 500, "server_error", started)
            with contextlib.suppress(Exception):
                await send_error(send, GatewayError("Internal server error"), rid)
        finally:
            gen.inflight -= 1
            gw.inflight -= 1

    async def reject(self, send: Send, exc: GatewayError, rid: str, started: float) -> None:
        """Answer an error before any upstream was tried, counted and logged like every response."""
        self._record_rejected(rid, exc.http_status, exc.kind, started)
        await send_error(send, exc, rid)

    def _record_rejected(self, rid: str, status: int, kind: str, started: float) -> None:
        self._gw.usage.record(UsageRecord(
            request_id=rid, route="-", provider="-", model="-", stream=False, status=status,
            latency_s=time.perf_counter() - started, attempts=0, usage_source="none", error=kind,
        ))

    async def _stream(
        self,
        ctx: RequestContext,
        stream: Relayed,
        rec: UsageRecord,
        watch: RequestWatch,
        send: Send,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Relay an open stream; from here on, failures end the stream with an error event."""
        meter = StreamMeter(ctx.client_wants_usage)
        first_chunk_at = time.perf_counter()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *headers]})
            rec.status = 200
            await self._relay_chunks(stream, meter, send, watch)
        except (GatewayError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                if not watch.take_timeout():
                    raise
                exc = UpstreamTimeout(f"upstream {stream.target.provider.name} timed out mid-stream")
            self._gw.relay.stream_failed(stream)
            rec.error = exc.kind
            await send({"type": "http.response.body", "body": frame(exc.body()), "more_body": True})
        finally:
            watch.settled()
            await stream.close()
            ttft_at = meter.first_token_at or first_chunk_at
            rec.ttft_s = ttft_at - ctx.started
            rec.apply_usage(meter.usage, ctx.body.get("messages", []), meter.text)
        watch.responded = True
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

    @staticmethod
    async def _relay_chunks(stream: Relayed, meter: StreamMeter, send: Send, watch: RequestWatch) -> None:
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
