"""`/v1/responses`: the chat service's path with the Responses API's typed event stream.

Upstream events arrive as `data` payloads whose `type` names the event; each is relayed as
`event: <type>` + `data:`, and the stream ends without `[DONE]`, as OpenAI's does. Usage
(`input_tokens`/`output_tokens`, with `input_tokens_details.cached_tokens` and
`output_tokens_details.reasoning_tokens`: `usage_wire`) is read from the body, or from the
`response.completed` (or `.incomplete`/`.failed`) event's `response.usage`. A failure
mid-stream becomes one `error` event.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from adapters.errors import GatewayError, UpstreamError
from adapters.upstream import Usage
from adapters.upstream.usage_wire import WireUsage, to_usage
from gateway.asgi import Send
from gateway.chat.service import ChatService, EndpointSpec
from gateway.plugins import FilterChain
from gateway.relay import Relayed
from gateway.responses.protocol import parse_responses_body
from gateway.watchdog import RequestWatch

__all__ = ["RESPONSES", "ResponsesMeter", "ResponsesService", "event_frame"]

_encode = msgspec.json.Encoder().encode
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _Response(msgspec.Struct):
    usage: WireUsage | None = None


class _Event(msgspec.Struct):
    type: str = ""
    delta: Any = None
    sequence_number: int | None = None
    response: _Response | None = None


_decode_event = msgspec.json.Decoder(_Event).decode


def event_frame(kind: str, payload: bytes) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


class ResponsesMeter:
    """Watches the event stream: first-delta time, text, the final usage, the last event's type."""

    __slots__ = ("_parts", "error", "first_token_at", "kind", "seq", "usage")

    def __init__(self, client_wants_usage: bool) -> None:
        self._parts: list[str] = []
        self.usage: Usage | None = None
        self.first_token_at: float | None = None
        self.error: Any = None
        self.kind = ""
        self.seq = -1

    def feed(self, payload: bytes) -> bool:
        try:
            ev = _decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError("malformed stream event") from exc
        if not ev.type:
            raise ValueError("stream event without a type")
        self.kind = ev.type
        if ev.sequence_number is not None:
            self.seq = ev.sequence_number
        if ev.type == "response.output_text.delta" and isinstance(ev.delta, str) and ev.delta:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self._parts.append(ev.delta)
        elif ev.type in _FINAL and ev.response is not None and ev.response.usage is not None:
            self.usage = to_usage(ev.response.usage)
        elif ev.type == "error":
            self.error = payload
        return True

    @property
    def text(self) -> str:
        return "".join(self._parts)


RESPONSES = EndpointSpec("responses", parse_responses_body, "input", ResponsesMeter, done=b"")


class ResponsesService(ChatService):
    __slots__ = ()
    spec = RESPONSES

    @staticmethod
    def _error_frame(exc: GatewayError, meter: Any) -> bytes:
        seq = meter.seq + 1 if isinstance(meter, ResponsesMeter) else 0
        data = {"type": "error", "code": exc.code or exc.kind, "message": exc.message, "param": exc.param,
                "sequence_number": seq}
        return event_frame("error", _encode(data))

    @staticmethod
    async def _relay_chunks(stream: Relayed, meter: Any, send: Send, watch: RequestWatch) -> None:
        assert stream.chunks is not None
        clock = time.perf_counter
        try:
            meter.feed(stream.first)
            await send({"type": "http.response.body", "body": event_frame(meter.kind, stream.first), "more_body": True})
            async for payload in stream.chunks:
                watch.progress_at = clock()
                meter.feed(payload)
                await send({"type": "http.response.body", "body": event_frame(meter.kind, payload), "more_body": True})
        except ValueError:
            raise UpstreamError(f"upstream {stream.target.provider.name} sent a malformed stream event") from None

    @staticmethod
    async def _relay_filtered(
        stream: Relayed, meter: Any, send: Send, watch: RequestWatch, chain: FilterChain
    ) -> None:
        """Each event decoded once and fed to the plug-ins' filters (they see event objects)."""
        assert stream.chunks is not None
        clock = time.perf_counter
        try:
            payload = stream.first
            while True:
                meter.feed(payload)
                for out in chain.feed(msgspec.json.decode(payload)):
                    kind = out.get("type") if isinstance(out, dict) else None
                    body = event_frame(kind if isinstance(kind, str) else meter.kind, _encode(out))
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                try:
                    payload = await anext(stream.chunks)
                except StopAsyncIteration:
                    break
                watch.progress_at = clock()
        except ValueError:
            raise UpstreamError(f"upstream {stream.target.provider.name} sent a malformed stream event") from None
        for out in chain.flush():
            kind = out.get("type") if isinstance(out, dict) else None
            body = event_frame(kind if isinstance(kind, str) else "message", _encode(out))
            await send({"type": "http.response.body", "body": body, "more_body": True})
