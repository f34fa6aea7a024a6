"""The chat playground (`/console/chat`): talk to any route of this gateway, streamed, with each reply's receipt.

The page keeps the conversation in the browser (`static/chat.js`); each send posts the whole history to
`POST /console/chat/send`, which checks it and calls the data plane in-process (`/v1/chat/completions`,
streamed, usage included). The upstream's SSE events are relayed as they come, then one `event: receipt`
with the reply's tokens, cost, latency, time to first token and A/B variant, read from the request's usage
record (the one metering priced: `console.services.receipts`), and `event: error` for a refusal or a
failure. A key without the `inference` role may not call the data plane at all (403, even on a public
route), so for such a key the playground calls anonymously: public routes answer, the others refuse with
the data plane's own 401, shown in words.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
from litestar import Response, get, post
from litestar.response import Stream

from adapters.adminapi.rbac import may_use_data_plane
from gateway.console.api import ApiError, error_of, read_all
from gateway.console.inprocess import StreamedReply
from gateway.console.render import CSP
from gateway.console.session import Console

__all__ = ["HANDLERS"]

log = logging.getLogger("llmops.console.chat")

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 200
MAX_CHARS = 200_000  # the whole conversation
MAX_TOKENS = 131_072
RECEIPT_WAIT_S = 2.0
_EVENT_END = re.compile(rb"\r?\n\r?\n")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no", "content-security-policy": CSP,
                "x-content-type-options": "nosniff"}


@get("/chat", name="console-chat")
async def chat(console: Console) -> Response[str]:
    endpoints = await _endpoints(console)
    served = {e["route"] for e in endpoints}
    routes = console.services.routes()  # the live route table, as `GET /v1/models` lists it
    return console.render("chat/chat.html", {
        "routes": [r for r in routes if r not in served], "endpoints": endpoints,
        "keyed": may_use_data_plane(console.user.roles), "max_tokens": MAX_TOKENS,
    })


async def _endpoints(console: Console) -> list[dict[str, Any]]:
    """Serving endpoints (each has a route); none when the serving module is not installed here."""
    try:
        listing = await console.api.list("/serving/endpoints", {"pageSize": 100})
    except ApiError as err:
        if err.status in (403, 404, 503):
            return []
        raise
    return [e for e in listing.items if isinstance(e, dict) and e.get("route")]


def _invalid(message: str, errors: dict[str, str] | None = None) -> Response[Any]:
    return Response({"message": message, "errors": errors or {}}, status_code=422,
                    headers={"cache-control": "no-store"})


def _number(value: Any, name: str, errors: dict[str, str], low: float, high: float, *,
            whole: bool = False) -> float | int | None:
    """An optional number within [low, high]; a message in `errors[name]` otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors[name] = "Must be a whole number" if whole else "Must be a number"
        return None
    if whole and value != int(value):
        errors[name] = "Must be a whole number"
        return None
    if not low <= value <= high:
        errors[name] = f"Must be between {low:g} and {high:g}"
        return None
    return int(value) if whole else float(value)


def chat_request(doc: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The data plane's request body from what the page sent, or the field errors (field -> message)."""
    if not isinstance(doc, dict):
        return {}, {"": "Send a JSON object"}
    errors: dict[str, str] = {}
    route = doc.get("route")
    if not isinstance(route, str) or not route.strip():
        errors["route"] = "Choose a route"
    elif len(route) > 200:
        errors["route"] = "At most 200 characters"
    messages = doc.get("messages")
    clean: list[dict[str, str]] = []
    if not isinstance(messages, list) or not messages:
        errors["messages"] = "Write a message first"
    elif len(messages) > MAX_MESSAGES:
        errors["messages"] = f"At most {MAX_MESSAGES} messages: clear the conversation"
    else:
        for item in messages:
            role = item.get("role") if isinstance(item, dict) else None
            content = item.get("content") if isinstance(item, dict) else None
            if role not in ROLES or not isinstance(content, str):
                errors["messages"] = "Each message needs a role (system, user, assistant) and a text"
                break
            clean.append({"role": role, "content": content})
        else:
            if not clean[-1]["content"].strip() or clean[-1]["role"] != "user":
                errors["messages"] = "Write a message first"
            elif sum(len(m["content"]) for m in clean) > MAX_CHARS:
                errors["messages"] = f"The conversation is over {MAX_CHARS:,} characters: clear it"
    temperature = _number(doc.get("temperature"), "temperature", errors, 0, 2)
    max_tokens = _number(doc.get("maxTokens"), "maxTokens", errors, 1, MAX_TOKENS, whole=True)
    if errors:
        return {}, errors
    body: dict[str, Any] = {"model": str(route).strip(), "messages": clean, "stream": True,
                            "stream_options": {"include_usage": True}}
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body, {}


@post("/chat/send", name="console-chat-send", status_code=200)
async def send(console: Console) -> Response[Any]:
    """Validate (422 JSON naming the field), then stream the reply as SSE: the upstream's events, a receipt."""
    try:
        doc = msgspec.json.decode(await console.request.body())
    except msgspec.DecodeError:
        return _invalid("The request is not valid JSON")
    body, errors = chat_request(doc)
    if errors:
        general = errors.pop("", None)
        return _invalid(general or "Some fields need fixing", errors)
    rid = f"console-{uuid.uuid4().hex}"
    return Stream(_relay(console, body, rid), media_type="text/event-stream", headers=_SSE_HEADERS)


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def _call(console: Console, payload: bytes, rid: str) -> AbstractAsyncContextManager[StreamedReply]:
    """The data-plane call: as the signed-in key when it holds `inference`, else anonymously (public routes)."""
    headers = {"content-type": "application/json", "x-request-id": rid, "accept": "text/event-stream"}
    if may_use_data_plane(console.user.roles):
        reply: AbstractAsyncContextManager[StreamedReply] = console.api.stream(
            "POST", "/v1/chat/completions", admin=False, body=payload, headers=headers)
        return reply
    client = console.request.client
    return console.services.caller.stream("POST", "/v1/chat/completions", headers=headers, body=payload,
                                          client=(client.host, client.port) if client else None)


def _refusal(status: int, message: str, keyed: bool) -> str:
    if status == 401 and not keyed:
        return (f"This route needs a key with the inference role; the key you signed in with has none, so the "
                f"playground can only use public routes. The gateway said: {message}")
    words = {401: "Not signed in to the data plane", 403: "Not allowed", 404: "Not found",
             429: "Too many requests", 503: "Unavailable"}
    return f"{words.get(status, 'The gateway failed' if status >= 500 else 'Refused')} ({status}): {message}"


def _data_of(raw: bytes) -> bytes | None:
    """The `data:` payload of one SSE event (lines joined), or None when it has none."""
    lines = [line[5:].removeprefix(b" ") for line in raw.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


async def _relay(console: Console, body: dict[str, Any], rid: str) -> AsyncIterator[bytes]:
    """Upstream events as they arrive (`[DONE]` dropped), then the receipt; an error as `event: error`."""
    receipts = console.services.receipts
    fut = receipts.expect(rid)  # before the call: the record may come before the stream is read to its end
    keyed = may_use_data_plane(console.user.roles)
    started = time.perf_counter()
    first_token: float | None = None
    usage: dict[str, Any] = {}
    facts: dict[str, Any] = {"route": body["model"], "provider": None, "model": None, "variant": None}
    failed = False
    try:
        async with _call(console, msgspec.json.encode(body), rid) as reply:
            if reply.status >= 400:
                err = error_of(reply.status, await read_all(reply))
                yield _event("error", {"status": reply.status, "message": _refusal(reply.status, err.message, keyed),
                                       "requestId": rid})
                return
            facts.update(route=reply.headers.get("x-llmops-route") or facts["route"],
                         provider=reply.headers.get("x-llmops-provider"),
                         variant=reply.headers.get("x-llmops-variant"))
            pending = b""
            async for chunk in reply.chunks:
                pending += chunk
                *events, pending = _EVENT_END.split(pending)
                for raw in events:
                    data = _data_of(raw)
                    if data is None or data.strip() == b"[DONE]":
                        continue
                    try:
                        doc = msgspec.json.decode(data)
                    except msgspec.DecodeError:
                        continue
                    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
                        failed = True
                        message = str(doc["error"].get("message") or "the stream failed")
                        yield _event("error", {"status": 502, "message": f"The reply stopped: {message}",
                                               "requestId": rid})
                        continue
                    if isinstance(doc, dict):
                        facts["model"] = facts["model"] or doc.get("model")
                        if isinstance(doc.get("usage"), dict):
                            usage = doc["usage"]
                        if first_token is None and any(
                                (c.get("delta") or {}).get("content") for c in doc.get("choices") or []
                                if isinstance(c, dict)):
                            first_token = time.perf_counter()
                    yield b"data: " + data + b"\n\n"
        ended = time.perf_counter()
        try:
            record = await asyncio.wait_for(fut, RECEIPT_WAIT_S)
        except TimeoutError:
            record = None  # metering has none (or not yet): the stream's own usage and timings stand in
        receipt = {
            "tokens": {"prompt": record.prompt_tokens if record else usage.get("prompt_tokens"),
                       "completion": record.completion_tokens if record else usage.get("completion_tokens")},
            "costUsd": str(record.cost_usd) if record is not None and record.cost_usd is not None else None,
            "latencyMs": round(1000 * (record.latency_s if record else ended - started)),
            "ttftMs": (round(1000 * record.ttft_s) if record and record.ttft_s is not None
                       else round(1000 * (first_token - started)) if first_token is not None else None),
            "variant": facts["variant"] or (record.variant if record else None),
            "route": facts["route"] if record is None else record.route,
            "provider": facts["provider"] if record is None else record.provider,
            "model": facts["model"] if record is None else record.model,
            "requestId": rid, "partial": failed,
        }
        yield _event("receipt", receipt)
    except (ApiError, RuntimeError, OSError, ValueError) as err:  # the in-process call itself broke
        log.warning("chat playground call %s failed: %s", rid, err)
        yield _event("error", {"status": 500, "message": f"The gateway could not answer: {err}", "requestId": rid})
    finally:
        if not fut.done():
            fut.cancel()  # no record came (a refusal, a disconnect): stop waiting for it


HANDLERS: list[Any] = [chat, send]
