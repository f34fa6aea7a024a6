"""Count and log every response Litestar sends: /v1/models, /readyz, /metrics, 404s, 405s, admin API.

The chat paths record their own `UsageRecord` (gateway/chat/service.py); everything
else passes through `serve_counted`, which records one per response, so
`llmops_requests_total` and the access log see every status the gateway answers
(the 5xx-ratio alert included). Those records carry `endpoint="http"`: the usage
writer leaves them out of `usage_records`, so probes, scrapes and admin calls never
count as usage in the cost API. The `route` label is Litestar's matched path
template, or `unmatched`: never the raw path, which clients choose.

It also makes sure every response carries `x-request-id` (first incoming header
wins, see adapters/request_id.py). This wrapper runs off the chat hot path only.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from adapters.request_id import REQUEST_ID_HEADER
from gateway.asgi import Receive, Scope, Send, first_request_id, request_id_from
from gateway.metering import UsageRecord

if TYPE_CHECKING:
    from gateway.state import Gateway

__all__ = ["HTTP_ENDPOINT", "SELF_COUNTED", "UNMATCHED", "serve_counted"]

UNMATCHED = "unmatched"
HTTP_ENDPOINT = "http"  # not an inference endpoint: counted and logged, never stored as usage (usage_writer)
# Route option of handlers that record their own UsageRecord (the chat service under another
# spelling, e.g. a trailing slash): counting them here too would count them twice.
SELF_COUNTED: dict[str, Any] = {"self_counted": True}
_RID = REQUEST_ID_HEADER.encode()


async def serve_counted(app: Any, gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app` (Litestar) for one HTTP request; record its status, latency and request id once."""
    started = time.perf_counter()
    incoming = first_request_id(scope["headers"])
    state: dict[str, Any] = {"status": 500, "rid": None}

    async def counted_send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            state["status"] = message["status"]
            headers = list(message.get("headers", ()))
            rid = next((v for k, v in headers if k.lower() == _RID), None)
            if rid is None:
                rid = request_id_from(incoming).encode()
                headers.append((_RID, rid))
                message = {**message, "headers": headers}
            state["rid"] = rid
        await send(message)

    try:
        await app(scope, receive, counted_send)
    finally:
        handler = scope.get("route_handler")
        if handler is None or not handler.opt.get("self_counted"):
            template = scope.get("path_template") if handler is not None else None
            rid = state["rid"]
            gw.usage.record(UsageRecord(
                request_id=rid.decode("latin-1") if rid is not None else request_id_from(incoming),
                route=template or UNMATCHED, provider="-", model="-",
                stream=False, status=state["status"], latency_s=time.perf_counter() - started, attempts=0,
                usage_source="none", error=None if state["status"] < 400 else "http_error", endpoint=HTTP_ENDPOINT,
            ))
