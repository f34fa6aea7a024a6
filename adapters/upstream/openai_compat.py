"""OpenAI-compatible upstream (vLLM, OpenAI, Ollama's /v1, LM Studio, …) over aiohttp.

One pooled keep-alive `ClientSession` per provider, shared by its replicas.
Bodies are relayed as raw bytes; we decode only what accounting needs.
aiohttp exceptions are translated into `adapters.errors` by `client_errors.ClientErrors`, for every adapter.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from adapters.errors import UpstreamError, UpstreamStatus
from adapters.upstream.answers import parse_answer
from adapters.upstream.base import ENDPOINTS, Backend, Completion, Timeouts, UpstreamCall
from adapters.upstream.breaker import CircuitBreaker
from adapters.upstream.client_errors import ClientErrors
from adapters.upstream.usage_wire import WireUsage, to_usage

__all__ = ["OpenAIUpstream", "parse_completion", "sse_payloads"]


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None


class _CompletionHead(msgspec.Struct):
    choices: list[_Choice] = []


class _UsageOnly(msgspec.Struct):
    usage: WireUsage | None = None


_usage_decoder = msgspec.json.Decoder(_UsageOnly)
_completion_decoder = msgspec.json.Decoder(_CompletionHead)
_encode = msgspec.json.Encoder().encode


def parse_completion(raw: bytes, provider: str) -> Completion:
    """Check an upstream body is a JSON object and lift out usage (cached, cache-write and
    reasoning details too: `usage_wire`); the text only when usage is missing and tokens must be
    counted (skipping `choices` is ~4x cheaper)."""
    try:
        usage = _usage_decoder.decode(raw).usage
        if usage is not None:
            return Completion(raw=raw, usage=to_usage(usage))
        head = _completion_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError(f"upstream {provider} returned a malformed completion body") from None
    content = "".join(c.message.content or "" for c in head.choices if c.message is not None)
    return Completion(raw=raw, usage=None, content=content)


async def sse_payloads(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Yield each event's `data` payload until `[DONE]` or EOF.

    Reads whatever bytes have arrived (one syscall's worth) and splits events on
    blank lines, instead of one `readline` per field line. After `[DONE]` the rest
    of the body is drained so the keep-alive connection goes back to the pool
    (an unread body makes aiohttp close it, and the next stream pays a connect).
    """
    buf = b""
    async for piece in content.iter_any():
        buf = buf + piece if buf else piece
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            event, buf = buf[:end], buf[end + 2 :]
            data = _event_data(event)
            if data is None:
                continue
            if data == b"[DONE]":
                await _drain(content)
                return
            yield data
    data = _event_data(buf)  # a final event without its blank line
    if data is not None and data != b"[DONE]":
        yield data


def _event_data(event: bytes) -> bytes | None:
    """The joined `data:` lines of one event; None for comments, keep-alives and empty events."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].strip() or None  # the common case: one data line
    lines = [ln[5:].strip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


async def _drain(content: aiohttp.StreamReader, limit: int = 1 << 16) -> None:
    read = 0
    while read < limit and not content.at_eof():
        chunk = await content.readany()
        if not chunk:
            break
        read += len(chunk)


class OpenAIUpstream:
    """Speaks `POST {base_url}/chat/completions` (and `/completions`, `/embeddings`, `/responses`:
    `call.endpoint`), streaming or not. Chat stays the first, cheapest branch."""

    kind = "openai"

    def __init__(
        self,
        name: str,
        urls: list[str],
        *,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        max_connections: int = 1000,
        stream_usage: bool = True,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.backends = [
            Backend(url=u.rstrip("/"), breaker=CircuitBreaker(breaker_threshold, breaker_cooldown_s)) for u in urls
        ]
        # Parsed once: aiohttp takes a ready URL as is, where a str costs a concat and a cache lookup.
        self._urls = {ep: {b.url: URL(b.url + path) for b in self.backends} for ep, path in ENDPOINTS.items()}
        self._chat_urls = self._urls["chat"]
        self._headers = {"content-type": "application/json", **(headers or {})}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._max_connections = max_connections
        self._stream_usage = stream_usage
        self._session = session
        self._owns_session = session is None
        # A session we create carries the constant headers (see start()); a borrowed one does not.
        self._per_request_headers: dict[str, str] = {} if self._owns_session else self._headers
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._client_errors = ClientErrors(name)

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                # No skip_auto_headers: aiohttp's fast path is the one without it (measured ~3% of CPU).
                # The constant headers are the session's: aiohttp copies those in C, but walks
                # per-request ones in Python (twice), so each request passes only its id.
                connector=connector, read_bufsize=1 << 20, auto_decompress=True, headers=self._headers
            )

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()

    def _timeout(self, t: Timeouts) -> aiohttp.ClientTimeout:
        """Only the connect timeout is aiohttp's. First byte, stream silence and total are
        enforced by the caller (the gateway's watchdog): aiohttp's read timeout re-arms a
        timer on every socket read, and its total timeout arms one per request."""
        ct = self._timeouts.get(t.connect_s)
        if ct is None:
            ct = self._timeouts[t.connect_s] = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s)
        return ct

    def _request_headers(self, call: UpstreamCall) -> dict[str, str]:
        return {**self._per_request_headers, "x-request-id": call.request_id}

    def _session_or_fail(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamError(f"provider {self.name} is not started")
        return self._session

    async def complete(self, backend: Backend, call: UpstreamCall) -> Completion:
        session = self._session_or_fail()
        chat = call.endpoint == "chat"
        with self._client_errors:
            async with session.post(
                (self._chat_urls if chat else self._urls[call.endpoint])[backend.url],
                data=_encode(call.body),
                headers=self._request_headers(call),
                timeout=self._timeout(call.timeouts),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        if status >= 400:
            raise UpstreamStatus(status, raw, self.name)
        return parse_completion(raw, self.name) if chat else parse_answer(call.endpoint, raw, self.name)

    async def stream(self, backend: Backend, call: UpstreamCall) -> AsyncGenerator[bytes, None]:
        session = self._session_or_fail()
        body: dict[str, Any] = call.body
        chat = call.endpoint == "chat"
        if self._stream_usage and (chat or call.endpoint == "completions"):  # responses: usage is always sent
            opts = body.get("stream_options")
            body = {**body, "stream_options": {**(opts if isinstance(opts, dict) else {}), "include_usage": True}}
        with self._client_errors:
            async with session.post(
                (self._chat_urls if chat else self._urls[call.endpoint])[backend.url],
                data=_encode(body),
                headers=self._request_headers(call),
                timeout=self._timeout(call.timeouts),
            ) as resp:
                if resp.status >= 400:
                    raise UpstreamStatus(resp.status, await resp.read(), self.name)
                async for payload in sse_payloads(resp.content):
                    yield payload

