"""A mock of Anthropic's Messages API (`POST /v1/messages`, JSON and SSE). A TEST DOUBLE, not a model.

Point litellm's `anthropic/` provider at it (`api_base=<root_url>`) to test the litellm kind
offline. Faithful to the wire: `x-api-key` and `anthropic-version` are required, `max_tokens`
too; usage is Anthropic's own shape, where `input_tokens` is only the uncached rest of the
prompt and `cache_read_input_tokens` / `cache_creation_input_tokens` are reported beside it;
the stream's `message_start` carries the input side (and `output_tokens: 1`), the final
`message_delta` only the cumulative `output_tokens`. The answer is the mock upstream's word
cycle, one token per word; prompt tokens are whitespace words plus one per message.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from aiohttp import web

from adapters.testdoubles.http_site import SiteServer
from adapters.testdoubles.mock_responses import answer_words, count_prompt_tokens
from adapters.testdoubles.mock_state import RecordedRequest

__all__ = ["AnthropicConfig", "AnthropicMock", "start_mock_anthropic"]

_encode = msgspec.json.Encoder().encode


class AnthropicConfig(msgspec.Struct, kw_only=True):
    completion_tokens: int = 16  # words in the answer, capped by max_tokens
    cache_read_input_tokens: int = 0  # of the prompt's tokens, how many were read from the cache
    cache_creation_input_tokens: int = 0  # … and how many were written to it
    api_key: str | None = None  # when set, `x-api-key` must equal it (any key is accepted otherwise)


def _error(status: int, kind: str, message: str) -> web.Response:
    body = _encode({"type": "error", "error": {"type": kind, "message": message}})
    return web.Response(body=body, status=status, content_type="application/json")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class _Answer:
    """One request's plan: the words, why it stopped, and the usage split the config asks for."""

    def __init__(self, cfg: AnthropicConfig, body: dict[str, Any]) -> None:
        n, limit = cfg.completion_tokens, body["max_tokens"]
        self.stop = "end_turn"
        if limit < n:
            n, self.stop = limit, "max_tokens"
        self.words = answer_words(n)
        self.model = body["model"]
        prompt = count_prompt_tokens(body["messages"]) + len(_text(body.get("system")).split())
        self.cache_read = min(cfg.cache_read_input_tokens, prompt)
        self.cache_write = min(cfg.cache_creation_input_tokens, prompt - self.cache_read)
        self.input = prompt - self.cache_read - self.cache_write
        self.id = "msg_" + uuid.uuid4().hex[:24]

    def usage(self, output_tokens: int) -> dict[str, Any]:
        return {"input_tokens": self.input, "cache_creation_input_tokens": self.cache_write,
                "cache_read_input_tokens": self.cache_read, "output_tokens": output_tokens}

    def message(self, done: bool) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": " ".join(self.words)}] if done else [],
                "stop_reason": self.stop if done else None, "stop_sequence": None,
                "usage": self.usage(len(self.words) if done else 1)}

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": self.message(False)}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]
        for i, w in enumerate(self.words):
            out.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": w if i == 0 else " " + w}}))
        out += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": None},
                               "usage": {"output_tokens": len(self.words)}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        return out


class AnthropicMock(SiteServer):
    """A running double on a loopback socket; `requests` records what it was sent."""

    def __init__(self, config: AnthropicConfig | None = None, host: str = "127.0.0.1") -> None:
        self.config = config or AnthropicConfig()
        self.requests: list[RecordedRequest] = []
        self.host = host
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def root_url(self) -> str:
        """What litellm takes as `api_base` (it appends `/v1/messages`)."""
        return f"http://{self.host}:{self.port}"

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            body = None
        self.requests.append(RecordedRequest(request.method, request.path,
                                             {k.lower(): v for k, v in request.headers.items()}, body))
        key = request.headers.get("x-api-key")
        if not key or (self.config.api_key is not None and key != self.config.api_key):
            return _error(401, "authentication_error", "invalid x-api-key (mock anthropic)")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "request body must be a JSON object")
        for field, typ in (("model", str), ("messages", list), ("max_tokens", int)):
            if not isinstance(body.get(field), typ):
                return _error(400, "invalid_request_error", f"{field}: Field required")
        answer = _Answer(self.config, body)
        if body.get("stream") is not True:
            return web.Response(body=_encode(answer.message(True)), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for kind, data in answer.events():
            await resp.write(b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n")
        await resp.write_eof()
        return resp

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        await self._serve(app, port)


async def start_mock_anthropic(config: AnthropicConfig | None = None, host: str = "127.0.0.1",
                               port: int = 0) -> AnthropicMock:
    server = AnthropicMock(config, host)
    await server.start(port)
    return server
