"""`FunctionUpstream(handler)`: an `Upstream` that calls a plain function instead of a server.

Like httpx's `MockTransport`: relay, plug-in and metering tests need no socket.
The handler gets each attempt's `UpstreamCall` and returns (or awaits to):

- for a completion: a `chat.completion` dict (or the `call.endpoint`'s own body), its JSON bytes,
  or a ready `Completion`;
- for a stream: an iterable or async iterable of `chat.completion.chunk` dicts or JSON bytes
  (an async generator function works as the handler itself).

To fail, it raises a `GatewayError` (e.g. `UpstreamStatus(503, b"", "fn")`,
`UpstreamTimeout("...")`), as a real adapter does. `chat_completion` and
`stream_chunks` build OpenAI-shaped answers.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from typing import Any

import msgspec

from adapters.upstream.answers import parse_answer
from adapters.upstream.base import Backend, Completion, UpstreamCall
from adapters.upstream.breaker import CircuitBreaker
from adapters.upstream.openai_compat import parse_completion

__all__ = ["FunctionUpstream", "chat_completion", "stream_chunks"]

Handler = Callable[[UpstreamCall], Any]

_encode = msgspec.json.Encoder().encode


def _bytes(item: Any) -> bytes:
    return item if isinstance(item, bytes) else _encode(item)


class FunctionUpstream:
    """Calls `handler(call)` for every attempt; `calls` records them in order."""

    kind = "function"

    def __init__(self, handler: Handler, name: str = "fn", *, replicas: int = 1) -> None:
        self.name = name
        self.backends = [Backend(url=f"function://{name}/{i}", breaker=CircuitBreaker(5, 30.0))
                         for i in range(replicas)]
        self.calls: list[UpstreamCall] = []
        self._handler = handler

    async def _call(self, call: UpstreamCall) -> Any:
        self.calls.append(call)
        result = self._handler(call)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def complete(self, backend: Backend, call: UpstreamCall) -> Completion:
        result = await self._call(call)
        if isinstance(result, Completion):
            return result
        if call.endpoint == "chat":
            return parse_completion(_bytes(result), self.name)
        return parse_answer(call.endpoint, _bytes(result), self.name)

    async def stream(self, backend: Backend, call: UpstreamCall) -> AsyncGenerator[bytes, None]:
        result = await self._call(call)
        if isinstance(result, AsyncIterable):
            async for item in result:
                yield _bytes(item)
        else:
            items: Iterable[Any] = result
            for item in items:
                yield _bytes(item)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:  # nothing to close: safe to call once per generation
        return None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_completion(
    text: str, *, model: str = "fn-model", usage: tuple[int, int] | None = (3, 5)
) -> dict[str, Any]:
    """A `chat.completion` body answering `text`; `usage=None` leaves usage out (tokens get counted)."""
    body: dict[str, Any] = {
        "id": "chatcmpl-fn", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage is not None:
        body["usage"] = _usage(*usage)
    return body


def stream_chunks(
    pieces: Iterable[str], *, model: str = "fn-model", usage: tuple[int, int] | None = (3, 5)
) -> list[dict[str, Any]]:
    """A stream's chunks: the role, one chunk per piece, the finish, then usage (unless None)."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-fn", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    out.extend(chunk({"content": p}) for p in pieces)
    out.append(chunk({}, "stop"))
    if usage is not None:
        out.append({"id": "chatcmpl-fn", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [], "usage": _usage(*usage)})
    return out
