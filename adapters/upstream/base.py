"""The upstream seam: what every provider adapter implements.

Contract:
- `complete` returns a `Completion` or raises a `GatewayError` (never an HTTP
  client exception); `retryable` on the error tells the relay whether another
  attempt may help.
- `UpstreamCall.endpoint` names the OpenAI endpoint (`ENDPOINTS`: chat, completions,
  embeddings, responses); a kind that cannot serve one raises `EndpointNotSupported`.
- `stream` is an async generator of that endpoint's JSON payloads (chat:
  `chat.completion.chunk`; completions: `text_completion` chunks; responses: the
  event objects, whose `type` names the SSE event), with no SSE framing, no `[DONE]`.
  Failures before the first payload are raised from the first `__anext__`,
  so the relay can still retry; later failures are
  raised mid-iteration. Whoever iterates must `aclose()` it: closing (or
  cancelling the consuming task) closes the upstream connection, which is how a
  vanished client cancels generation upstream.
- Timeouts: an adapter enforces `Timeouts.connect_s`. The first-byte, silence
  and total bounds are the caller's: the gateway enforces them for every
  provider alike by cancelling the call (an adapter may keep a looser backstop).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from adapters.upstream.breaker import CircuitBreaker

__all__ = ["ENDPOINTS", "Backend", "Completion", "Endpoint", "Timeouts", "Upstream", "UpstreamCall", "Usage"]

Endpoint = Literal["chat", "completions", "embeddings", "responses"]
ENDPOINTS: dict[str, str] = {  # endpoint -> path under an OpenAI-compatible base URL (…/v1)
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 5.0
    first_byte_s: float = 120.0
    total_s: float = 600.0


class Usage(msgspec.Struct, kw_only=True):
    """Token counts in one normalised shape, whatever the provider's wire shape.

    ``prompt_tokens`` is the whole prompt, cached reads and cache writes included (OpenAI's
    convention; an adapter whose provider reports them apart, as Anthropic does, adds them
    in). ``reasoning_tokens`` are part of ``completion_tokens``. So cost is uncached input +
    cached reads + cache writes + completion, each at its own price, none counted twice."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class UpstreamCall(msgspec.Struct, gc=False):
    """One attempt's input: the OpenAI-shaped body with the upstream's model name.

    Per-request records are msgspec Structs: built in C, about 4x cheaper than a dataclass."""

    body: dict[str, Any]
    request_id: str
    timeouts: Timeouts
    stream: bool = False
    endpoint: str = "chat"  # an `Endpoint`


class Completion(msgspec.Struct, gc=False):
    """A non-streamed answer: the raw JSON to relay plus what accounting needs."""

    raw: bytes
    usage: Usage | None
    content: str = ""
    status: int = 200


@dataclass(slots=True, eq=False)
class Backend:
    """One replica of a provider (one base URL) with its own breaker and load."""

    url: str
    breaker: CircuitBreaker
    inflight: int = 0
    waiting: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


class Upstream(Protocol):
    name: str
    kind: str
    backends: list[Backend]

    async def complete(self, backend: Backend, call: UpstreamCall) -> Completion: ...

    def stream(self, backend: Backend, call: UpstreamCall) -> AsyncGenerator[bytes, None]: ...

    async def start(self) -> None:
        """Open pools and background tasks; called inside the running loop."""

    async def aclose(self) -> None: ...
