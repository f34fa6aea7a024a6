"""``POST /v1/feedback``: attach an outcome (score, label, comment) to a request or an episode.

    read body (413) ─► authenticate (the auth plug-in's own check: 401/403) ─► parse (400)
        ─► find the caller's record(s), waiting up to RECORD_WAIT_S for the usage writer (404)
        ─► insert one feedback row (503 when the database is down) ─► 201

Not the inference hot path: it reads and writes the store, but never blocks the event loop (async
drivers), bounds every unit of work (``STORE_TIMEOUT_S``) and the wait for a record that is not stored
yet (the usage writer flushes every ~250 ms), and lets at most ``STORE_SLOTS`` of its calls hold a
store connection at once, so a flood of feedback cannot starve the usage writer of the pool. (On SQLite
a write waiting for another writer's lock blocks the driver's thread for the store's busy timeout,
``control.store.timeout_s``, which no caller's deadline can cut short.)

Authentication is the ``auth`` plug-in's (``gateway.policy.auth``): its ``on_request`` runs over a
context that names no route, so the same keys, modes (``required: auto|always|never``), 401/403s,
denial metrics and audit rows apply, and ``public_routes`` do not (feedback is no route). With a key,
only that key's records can be rated; someone else's request is a 404 exactly like an unknown one,
so a key learns nothing about requests that are not its own. Without authentication (no key required,
or the plug-in disabled) any request may be rated, and the row's ``key_id`` is null.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import Counter

from adapters.errors import GatewayError, MethodNotAllowed, NotFound
from adapters.feedback_store import FeedbackRow, Rated, find_rated, insert_feedback
from adapters.gateway_plugins import Principal, RequestContext
from adapters.store import Store, StoreUnavailable, utcnow
from gateway.asgi import ClientDisconnected, Receive, Scope, Send, read_body, request_id_from, send_error, send_json
from gateway.feedback.protocol import FeedbackBody, parse_feedback
from gateway.policy.auth import AuthPlugin

if TYPE_CHECKING:
    from gateway.state import Gateway

__all__ = ["OUTCOMES", "FeedbackNotStored", "FeedbackService", "FeedbackUnavailable"]

log = logging.getLogger("llmops.feedback")

RECORD_WAIT_S = 2.0  # how long a record that is not stored yet is waited for before a 404
STORE_TIMEOUT_S = 2.0  # one lookup or the insert
STORE_SLOTS = 8  # feedback calls holding a store connection at once
MAX_BODY_BYTES = 64 * 1024  # a comment of 4,000 characters, \u-escaped, fits many times over
RETRY_AFTER_S = 5
_POLL_FIRST_S, _POLL_MAX_S = 0.05, 0.4

OUTCOMES = ("recorded", "invalid", "denied", "not_found", "unavailable", "error")
"""``llmops_feedback_total{outcome}``: bounded, one per way a call can end."""

_encode = msgspec.json.Encoder().encode


class FeedbackUnavailable(GatewayError):
    """503: the database is down or too slow; nothing was written, retry later."""

    status = 503
    kind = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="store_unavailable")

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(RETRY_AFTER_S)}


class FeedbackNotStored(GatewayError):
    """501: this gateway runs without the control plane's store, so it keeps no feedback."""

    status = 501
    kind = "invalid_request_error"

    def __init__(self) -> None:
        super().__init__("This gateway keeps no feedback: it runs without the control plane's store "
                         "(control.enabled is false)", code="feedback_not_stored")


def _outcome(status: int) -> str:
    if status in (400, 405, 413):
        return "invalid"
    if status in (401, 403):
        return "denied"
    if status == 404:
        return "not_found"
    if status in (501, 503):
        return "unavailable"
    return "error"


class FeedbackService:
    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        metrics = gateway.metrics
        self._counts = Counter("llmops_feedback", "POST /v1/feedback calls by outcome.", ["outcome"],
                               registry=None if metrics.shared_dir else metrics.registry)
        self._by_outcome = {o: self._counts.labels(o) for o in OUTCOMES}  # every series exists from the start
        self._slots = asyncio.Semaphore(STORE_SLOTS)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = declared = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and incoming is None:
                incoming = value
            elif name == b"content-length":
                declared = value
        rid = request_id_from(incoming)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"Method {scope['method']} not allowed; use POST")
            raw = await read_body(receive, declared, min(MAX_BODY_BYTES, self._gw.max_body_bytes))
            principal = await self._authenticate(scope, rid)
            body = parse_feedback(raw)
            answer = await self._record(body, principal)
        except ClientDisconnected:
            return
        except GatewayError as exc:
            self._by_outcome[_outcome(exc.http_status)].inc()
            await send_error(send, exc, rid)
            return
        except Exception:  # a bug: logged with its request id, answered as a bare 500
            log.exception("unhandled error in feedback request", extra={"fields": {"request_id": rid}})
            self._by_outcome["error"].inc()
            await send_error(send, GatewayError("Internal server error"), rid)
            return
        self._by_outcome["recorded"].inc()
        await send_json(send, 201, _encode(answer), [(b"x-request-id", rid.encode())])

    async def _authenticate(self, scope: Scope, rid: str) -> Principal | None:
        """The caller as the auth plug-in of the running generation sees it; None: no key required."""
        gen = self._gw.generation
        auth = next((p.instance for p in gen.plugins.plugins if isinstance(p.instance, AuthPlugin)), None)
        check = getattr(auth, "on_request", None)  # None with required: never
        if check is None:
            return None
        ctx = RequestContext(request_id=rid, model="", body={}, stream=False, raw_headers=scope["headers"],
                             endpoint="feedback", control=gen.control)
        result = check(ctx)  # raises the plug-in's own 401/403 (and counts and audits them)
        if inspect.isawaitable(result):  # a plain function today; awaited should it ever become async
            await result
        return ctx.principal

    async def _record(self, body: FeedbackBody, principal: Principal | None) -> dict[str, Any]:
        store = self._gw.store
        if store is None:
            raise FeedbackNotStored()
        try:
            rated = await self._find(store, body, principal)
            if rated is None:
                what = f"request {body.request_id!r}" if body.request_id is not None else f"episode {body.episode_id!r}"
                raise NotFound(f"No {what} to rate: unknown, not made with this key, or not routed to a model",
                               param="request_id" if body.request_id is not None else "episode_id",
                               code="not_found")
            row = _row(body, rated, principal)
            async with self._slot():
                await insert_feedback(store, row, timeout_s=STORE_TIMEOUT_S)
        except StoreUnavailable as err:
            log.warning("feedback not recorded, the database is unavailable: %s", err)
            raise FeedbackUnavailable("The database is unavailable; the feedback was not recorded. "
                                      "Retry later.") from None
        return _answer(row, rated)

    async def _find(self, store: Store, body: FeedbackBody, principal: Principal | None) -> Rated | None:
        """The rated record(s), polled for up to RECORD_WAIT_S: a response's record reaches the store a
        few hundred ms after the response (the usage queue, then the writer's batch)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORD_WAIT_S
        pause = _POLL_FIRST_S
        key_id = principal.key_id if principal is not None else None
        while True:
            async with self._slot():
                found = await find_rated(store, request_id=body.request_id, episode_id=body.episode_id,
                                         key_id=key_id, timeout_s=STORE_TIMEOUT_S)
            left = deadline - loop.time()
            if found is not None or left <= 0:
                return found
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX_S)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of STORE_SLOTS; waiting longer than a unit of work may take means the store is swamped."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await self._slots.acquire()
        except TimeoutError:
            raise StoreUnavailable("too many feedback calls waiting for the store") from None
        try:
            yield
        finally:
            self._slots.release()


def _row(body: FeedbackBody, rated: Rated, principal: Principal | None) -> FeedbackRow:
    label = body.label
    return FeedbackRow(
        feedback_id="fb_" + secrets.token_hex(12), ts=utcnow(), request_id=body.request_id,
        episode_id=body.episode_id, experiment=rated.experiment, variant=rated.variant,
        key_id=principal.key_id if principal is not None else None,
        team=principal.team if principal is not None else None, score=body.score,
        label=("true" if label else "false") if isinstance(label, bool) else label,
        positive=label if isinstance(label, bool) else None, comment=body.comment or None,
    )


def _answer(row: FeedbackRow, rated: Rated) -> dict[str, Any]:
    return {
        "id": row.feedback_id, "object": "feedback", "created": int(row.ts.timestamp()),
        "request_id": row.request_id, "episode_id": row.episode_id,
        "request_ids": rated.request_ids, "requests": rated.requests,
        "experiment": row.experiment, "variant": row.variant,
        "score": row.score, "label": row.positive if row.positive is not None else row.label, "comment": row.comment,
    }

