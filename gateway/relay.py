"""Try a route's targets in order: retries with backoff on retryable errors,
then the next target, then the fallbacks; circuit breakers skip dead replicas.

Once a stream's first chunk is in hand the attempt is final: nothing after
that point is retried, because bytes may already have reached the client.

Plug-ins' `on_route` hooks run once per target, before its first attempt, so a
fallback to another model is priced on that model.

A route with a queue bound (`Route.queue_timeout_s`, a serving endpoint that may be
scaled to zero) holds a request whose every attempt found no replica, and tries
again with backoff (0.2 s doubling to 2 s) until the bound, then answers 503
`endpoint_not_ready`. "No replica" is precise (`_unready`): connecting failed
(refused, unreachable, name resolution, connect timeout: nothing was sent), or a
proxy in front of the replicas (an ingress, a mesh) answered 502/503 itself, with
a body that is not JSON, as ingress-nginx's and Envoy's are when a Service has no
ready endpoint; a model server's own 502/503 (a JSON error) is an answer, not
absence. On such routes these failures leave the breakers alone (an empty Service
is expected there, and an open breaker would hide the replica once it is up). The
wait is counted on `llmops_route_queued_requests{route}`. Routes without a bound
pay nothing: the queue is entered only from the failure tail.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import msgspec

from adapters.errors import (
    GatewayError,
    NotFound,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from adapters.gateway_plugins import RequestContext
from adapters.upstream import Backend, Completion, Upstream, UpstreamCall, pick_backend
from gateway.metrics import GatewayMetrics
from gateway.routing import Route, Target
from gateway.watchdog import RequestWatch, Watchdog

__all__ = ["Relay", "Relayed"]


class Relayed(msgspec.Struct):
    """The attempt that succeeded: a `completion`, or an open stream (`chunks` after
    its already-received `first` payload) that the caller must `close()`. `fallback`: served by
    another target than the first one planned (experiments count such requests apart)."""

    target: Target
    backend: Backend
    attempts: int
    completion: Completion | None = None
    chunks: AsyncGenerator[bytes, None] | None = None
    first: bytes = b""
    fallback: bool = False
    first_provider: str | None = None  # only when `fallback`: the first planned target's provider

    async def close(self) -> None:
        if self.chunks is not None:
            self.backend.inflight -= 1
            await self.chunks.aclose()


_QUEUE_FIRST_DELAY_S = 0.2
_QUEUE_MAX_DELAY_S = 2.0


class _NotReady(Exception):
    """A queued pass found no replica again (internal to the relay)."""

    def __init__(self, error: GatewayError, attempts: int) -> None:
        self.error, self.attempts = error, attempts


def _unready(exc: GatewayError) -> bool:
    """No replica was there to answer (see the module docstring): connecting failed, or a proxy's own
    502/503, told from a model server's by its body not being a JSON object."""
    if exc.connect_failed:
        return True
    if not isinstance(exc, UpstreamStatus) or exc.upstream_status not in (502, 503):
        return False
    try:
        return not isinstance(msgspec.json.decode(exc.raw_body), dict)
    except msgspec.DecodeError:
        return True


def _name(target: Target | None) -> str | None:
    return None if target is None else target.provider.name


def _counts_as_failure(exc: GatewayError) -> bool:
    """429 means "busy", not "broken": it must not open the breaker."""
    return not (isinstance(exc, UpstreamStatus) and exc.upstream_status < 500)


class Relay:
    def __init__(self, metrics: GatewayMetrics, watchdog: Watchdog) -> None:
        self._m = metrics
        self._watchdog = watchdog
        # Requests (their watches' ids) waiting in `_queue`: its retry passes through `run` raise `_NotReady`
        # instead of queueing again. Not a parameter of `run`: the hot path would pay for its default.
        self._queued: set[int] = set()
        # The running generation's route by name (the gateway sets it): a queued request's retries use the route
        # as it is now, so a rollback or a moved endpoint while it waits is followed, and no pool the old
        # generation closed after its drain timeout is used. None: keep the route the request started with.
        self.current_route: Callable[[str], Route | None] | None = None

    async def run(
        self,
        route: Route,
        body: dict[str, Any],
        request_id: str,
        watch: RequestWatch,
        *,
        stream: bool,
        ctx: RequestContext | None = None,
        on_route: Callable[[RequestContext], Awaitable[None] | None] | None = None,
        endpoint: str = "chat",
    ) -> Relayed:
        """The one retry/fallback loop, for completions and streams alike (one coroutine
        deep on the non-stream hot path). A stream's backend stays counted in flight
        after success (`Relayed.close` releases it); a completion's is released here.

        Timeouts are the watchdog's: it cancels this task when the attempt's deadline
        on `watch` passes, and the cancellation becomes an `UpstreamTimeout` here.

        `on_route(ctx)` (plug-ins' hooks, only when some plug-in has one) runs before a
        target's first attempt with `ctx.route_name/provider/upstream_model` set; what it
        raises ends the request, untried targets included. `endpoint` names the OpenAI
        endpoint the adapter calls (chat, completions, embeddings, responses).

        Whether a target other than the first planned served (or was the last tried) is
        `Relayed.fallback`, or the raised error's `fallback` attribute; then `first_provider` names the
        first planned target's provider (a canary judge counts a canary failure that stable then served)."""
        attempts = 0
        last: GatewayError | None = None
        fallback: bool | None = None  # None before the first target planned, False for it, True after it
        first: Target | None = None  # the first target planned, set when it fails (the success path pays nothing)
        unready = True  # no attempt found a replica so far (read only on routes with a queue bound)
        for target in route.plan():
            fallback = fallback is not None
            priced = on_route is None
            failed: Backend | None = None  # the replica this target's last attempt failed on: a retry avoids it
            for retry in range(route.retries + 1):
                balancer = target.balancer
                if balancer is None:
                    backend = pick_backend(target.provider.backends, failed)
                else:
                    backend = balancer.pick(target.provider.backends, body, None if ctx is None else ctx.raw_headers,
                                            failed)
                if backend is None:
                    last = UpstreamUnavailable(f"all backends of {target.provider.name} are unavailable (circuit open)")
                    unready = False
                    if not fallback:
                        first = target
                    break
                if not priced:
                    priced = True
                    assert ctx is not None and on_route is not None
                    ctx.route_name, ctx.provider, ctx.upstream_model = route.name, target.provider.name, target.model
                    pending = on_route(ctx)  # None: every hook was a plain function and ran
                    if pending is not None:
                        await pending
                if attempts:
                    self._m.count_retry(route.label or route.name, target.provider.name)
                attempts += 1
                body["model"] = target.model  # the body is this request's own: rewrite in place
                call = UpstreamCall(body=body, request_id=request_id, timeouts=target.timeouts, stream=stream,
                                    endpoint=endpoint)
                t = target.timeouts
                attempt_end = self._watchdog.expect(watch, t.first_byte_s, t.total_s)
                backend.inflight += 1
                try:
                    if stream:
                        chunks, head = await _open(target.provider, backend, call)
                    else:
                        completion = await target.provider.complete(backend, call)
                except (GatewayError, asyncio.CancelledError) as exc:
                    watch.settled()
                    backend.inflight -= 1
                    if isinstance(exc, asyncio.CancelledError):
                        if not watch.take_timeout():
                            backend.breaker.release()
                            raise
                        exc = UpstreamTimeout(f"upstream {target.provider.name} timed out")
                    if not fallback:
                        first = target
                    if route.queue_timeout_s and _unready(exc):
                        last = self._not_there(backend, target, exc)
                    else:
                        unready = False
                        last = self._failed(backend, target, exc)
                    if not exc.retryable:
                        if fallback:
                            assert first is not None
                            exc.fallback, exc.first_provider = True, first.provider.name
                        raise
                    failed = backend
                    if retry < route.retries:
                        await _backoff(route.retry_backoff_s, retry)
                    continue
                backend.breaker.record_success()
                if stream:
                    watch.streaming(attempt_end, t.first_byte_s)
                    return Relayed(target, backend, attempts, chunks=chunks, first=head, fallback=fallback,
                                   first_provider=_name(first) if fallback else None)
                watch.settled()
                backend.inflight -= 1
                return Relayed(target, backend, attempts, completion=completion, fallback=fallback,
                               first_provider=_name(first) if fallback else None)
        final = _final(last)
        if fallback:
            assert first is not None
            final.fallback, final.first_provider = True, first.provider.name
        if unready and route.queue_timeout_s and attempts:
            if id(watch) in self._queued:  # a queue's retry pass: `_queue` decides
                raise _NotReady(final, attempts)
            return await self._queue(route, body, request_id, watch, stream=stream, endpoint=endpoint,
                                     attempts=attempts, last=final)
        raise final

    async def _queue(
        self, route: Route, body: dict[str, Any], request_id: str, watch: RequestWatch, *, stream: bool,
        endpoint: str, attempts: int, last: GatewayError,
    ) -> Relayed:
        """Hold a request no replica could take, trying the route again with backoff until
        `route.queue_timeout_s` has passed. Plug-ins' `on_route` hooks ran on every target in the
        first pass and do not run again. A client that leaves cancels the sleep or the attempt (the
        watchdog's disconnect watcher), which ends the wait; the gauge is decremented either way."""
        label = route.label or route.name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + route.queue_timeout_s
        delay = _QUEUE_FIRST_DELAY_S
        gauge = self._m.queued(label)
        gauge.inc()
        self._queued.add(id(watch))
        try:
            while (left := deadline - loop.time()) > 0:
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, _QUEUE_MAX_DELAY_S)
                if self.current_route is not None and route.name == label:  # not a direct provider/model name
                    now = self.current_route(route.name)
                    if now is None:
                        raise NotFound(f"The model `{route.name}` does not exist or is not routed", param="model",
                                       code="model_not_found")
                    route = now
                try:
                    relayed = await self.run(route, body, request_id, watch, stream=stream, endpoint=endpoint)
                except _NotReady as again:
                    attempts, last = attempts + again.attempts, again.error
                    continue
                relayed.attempts += attempts
                return relayed
        finally:
            self._queued.discard(id(watch))
            gauge.dec()
        self._m.count_queue_timeout(label)
        timed_out = UpstreamUnavailable(
            f"The endpoint of route {route.name} did not become ready within {route.queue_timeout_s:g} s "
            "(scaling up from zero); retry later", code="endpoint_not_ready")
        timed_out.fallback, timed_out.first_provider = last.fallback, last.first_provider
        raise timed_out

    def _failed(self, backend: Backend, target: Target, exc: GatewayError) -> GatewayError:
        self._m.count_upstream_error(target.provider.name, exc.kind if not isinstance(exc, UpstreamStatus)
                                     else f"http_{exc.upstream_status}")
        if exc.retryable and _counts_as_failure(exc):
            backend.breaker.record_failure()
        elif not exc.retryable or isinstance(exc, UpstreamStatus):
            backend.breaker.record_success()  # it answered: the replica is alive
        return exc

    def _not_there(self, backend: Backend, target: Target, exc: GatewayError) -> GatewayError:
        """A failure that found no replica, on a route that queues: counted, but no breaker verdict."""
        self._m.count_upstream_error(target.provider.name, exc.kind if not isinstance(exc, UpstreamStatus)
                                     else f"http_{exc.upstream_status}")
        backend.breaker.release()
        return exc

    def stream_failed(self, stream: Relayed) -> None:
        """A stream broke after its first chunk: count it against the replica."""
        self._m.count_upstream_error(stream.target.provider.name, "mid_stream")
        stream.backend.breaker.record_failure()


async def _open(provider: Upstream, backend: Backend, call: UpstreamCall) -> tuple[AsyncGenerator[bytes, None], bytes]:
    """Start a stream and wait for its first payload: until then, a failure may be retried."""
    chunks = provider.stream(backend, call)
    try:
        return chunks, await anext(chunks)
    except StopAsyncIteration:
        raise UpstreamError(f"upstream {provider.name} sent an empty stream") from None
    except BaseException:  # failed or cancelled before the first chunk: close the upstream request
        await chunks.aclose()
        raise


async def _backoff(base_s: float, retry: int) -> None:
    if base_s > 0:
        await asyncio.sleep(base_s * (2**retry) * (0.5 + random.random()))


def _final(last: GatewayError | None) -> GatewayError:
    return last or UpstreamUnavailable("no upstream target is available")
