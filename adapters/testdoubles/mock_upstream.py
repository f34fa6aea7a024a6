"""Mock LLM upstream: an OpenAI-compatible and Ollama-native HTTP server. A TEST DOUBLE, not a model.

OpenAI: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses (mock_endpoints.py).

It backs the gateway's tests, the built-in `demo` route and the benchmark. Answers
are a deterministic word cycle, or `MockConfig.script`'s reply for a matching request (a judge's
verdict in evaluation tests); `/v1/completions` logprobs follow a known rule
(`mock_endpoints.token_logprob`) unless `MockConfig.logprobs` turns them off; faults (status, timeout,
drop, malformed, mid-stream drop/error) come from `push_faults`, or, only with `MockConfig.faults` on, the
`x-mock-fault` header, a `fault:<spec>` model name or `POST /_mock/faults`. `disconnects` counts clients that went away
before their answer was complete, so tests can prove cancellation reached upstream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from adapters.testdoubles.http_site import SiteServer
from adapters.testdoubles.mock_cli import HELP_TEXT, add_cli_arguments, run_from_args
from adapters.testdoubles.mock_control import add_control_routes
from adapters.testdoubles.mock_endpoints import CompletionReply, EmbeddingReply, ResponsesReply
from adapters.testdoubles.mock_responses import BadRequest, OllamaReply, OpenAIReply
from adapters.testdoubles.mock_state import (
    Fault,
    FaultSyntaxError,
    MockConfig,
    MockState,
    RecordedRequest,
    parse_fault,
)

__all__ = [
    "HELP_TEXT",
    "MAX_BODY_BYTES",
    "STATE_KEY",
    "Fault",
    "MockConfig",
    "MockServer",
    "MockState",
    "RecordedRequest",
    "add_cli_arguments",
    "build_app",
    "parse_fault",
    "run_from_args",
    "start_mock_upstream",
]

STATE_KEY = web.AppKey("mock_state", MockState)
_Reply = OpenAIReply | OllamaReply | CompletionReply | EmbeddingReply | ResponsesReply
_Dialect = type[_Reply]
_MID_STREAM = ("drop_mid_stream", "error_mid_stream")
_decode = msgspec.json.decode
MAX_BODY_BYTES = 64 * 1024 * 1024


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _overrides(request: web.Request, body: dict[str, Any]) -> tuple[Fault | None, float]:
    """Per-request fault and extra latency: the `x-mock-fault` header wins over a `fault:` model.
    Both are ordinary values (ignored, or a plain model name) unless `MockConfig.faults` is on."""
    if not request.app[STATE_KEY].config.faults:
        return None, 0.0
    header = request.headers.get("x-mock-fault")
    fault = parse_fault(header) if header else None
    model = body.get("model")
    extra_s = 0.0
    if isinstance(model, str):
        if model.startswith("fault:") and fault is None:
            fault = parse_fault(model[len("fault:") :])
        elif model.startswith("slow:"):
            try:
                extra_s = float(model[len("slow:") :])
            except ValueError:
                raise FaultSyntaxError(f"bad latency in model {model!r}") from None
    return fault, extra_s


async def _chat(request: web.Request, dialect: _Dialect) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    cfg = state.config
    raw = await request.read()
    try:
        body = _decode(raw) if raw else None
    except msgspec.DecodeError:
        body = None
    state.record(request.method, request.path, request.headers, body)
    if cfg.api_key is not None and request.headers.get("Authorization") != f"Bearer {cfg.api_key}":
        return _json(dialect.error_body(401, "Incorrect API key provided (mock upstream)"), 401)
    if not isinstance(body, dict):
        return _json(dialect.error_body(400, "request body must be a JSON object"), 400)
    try:
        fault, extra_s = _overrides(request, body)
        reply = dialect(cfg, body)
    except (BadRequest, FaultSyntaxError) as exc:
        return _json(dialect.error_body(400, str(exc), getattr(exc, "param", None)), 400)
    if fault is None:
        fault = state.next_fault()
    state.active += 1
    try:
        return await _respond(request, reply, fault, cfg.latency_s + extra_s, cfg.tokens_per_s)
    except asyncio.CancelledError:  # client went away (aiohttp cancels the handler) or server stopping
        state.disconnects += 1
        raise
    except ConnectionResetError:  # peer closed while we were writing the stream
        state.disconnects += 1
        return web.Response(status=499)  # never reaches anyone; keeps aiohttp from logging a 500
    finally:
        state.active -= 1


def _abort(request: web.Request) -> None:
    """Close the socket with no (further) bytes: what a crashed or OOM-killed upstream looks like."""
    if request.transport is not None:
        request.transport.abort()


async def _respond(
    request: web.Request, reply: _Reply, fault: Fault | None, delay_s: float, tokens_per_s: float
) -> web.StreamResponse:
    kind = fault.kind if fault else None
    if fault and kind == "timeout":
        delay_s += fault.delay_s  # a hung upstream; the client is expected to time out first
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    if fault and kind == "status":
        headers = {"retry-after": "1"} if fault.status == 429 else None
        message = f"mock fault: status {fault.status}"
        return _json(reply.error_body(fault.status, message), fault.status, headers)
    if kind == "drop" or (kind == "drop_mid_stream" and not reply.stream):
        _abort(request)
        return web.Response()  # aiohttp finds the transport closed and writes nothing
    if kind == "malformed":
        ctype = reply.stream_content_type if reply.stream else reply.content_type
        return web.Response(body=reply.malformed(), content_type=ctype)
    if not reply.stream:
        if kind == "error_mid_stream":  # no stream to break: the closest thing is a plain 500
            return _json(reply.error_body(500, "mock mid-stream failure"), 500)
        return _json(reply.body())
    return await _stream(request, reply, fault, tokens_per_s)


async def _stream(
    request: web.Request, reply: _Reply, fault: Fault | None, tokens_per_s: float
) -> web.StreamResponse:
    headers = {"Content-Type": reply.stream_content_type, "Cache-Control": "no-cache"}
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    head = reply.head()
    if head:
        await resp.write(head)
    mid = fault.kind if fault and fault.kind in _MID_STREAM else None
    steps = min(reply.steps, fault.after_chunks) if fault and mid else reply.steps
    gap_s = reply.chunk_tokens / tokens_per_s if tokens_per_s > 0 else 0.0
    for i in range(steps):
        if i and gap_s:
            await asyncio.sleep(gap_s)
        await resp.write(reply.step(i))  # one write per frame: each reaches the socket as it is made
    if mid == "drop_mid_stream":
        _abort(request)
        return resp
    await resp.write(reply.error_frames() if mid else reply.tail())
    await resp.write_eof()
    return resp


async def _openai_chat(request: web.Request) -> web.StreamResponse:
    return await _chat(request, OpenAIReply)


async def _ollama_chat(request: web.Request) -> web.StreamResponse:
    return await _chat(request, OllamaReply)


async def _openai_completions(request: web.Request) -> web.StreamResponse:
    return await _chat(request, CompletionReply)


async def _openai_embeddings(request: web.Request) -> web.StreamResponse:
    return await _chat(request, EmbeddingReply)


async def _openai_responses(request: web.Request) -> web.StreamResponse:
    return await _chat(request, ResponsesReply)


def _model_id(state: MockState) -> str:
    return state.config.model_name or "mock-model"


def _guard(request: web.Request) -> web.Response | None:
    key = request.app[STATE_KEY].config.api_key
    if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
        return _json(OpenAIReply.error_body(401, "Incorrect API key provided (mock upstream)"), 401)
    return None


async def _openai_models(request: web.Request) -> web.Response:
    denied = _guard(request)
    if denied:
        return denied
    model = {"id": _model_id(request.app[STATE_KEY]), "object": "model", "created": 0, "owned_by": "mock"}
    return _json(msgspec.json.encode({"object": "list", "data": [model]}))


async def _ollama_tags(request: web.Request) -> web.Response:
    name = _model_id(request.app[STATE_KEY])
    details = {"format": "mock", "family": "mock", "parameter_size": "0", "quantization_level": "none"}
    model = {"name": name, "model": name, "modified_at": "2024-01-01T00:00:00Z", "size": 0, "digest": "mock",
             "details": details}
    return _json(msgspec.json.encode({"models": [model]}))


async def _metrics(request: web.Request) -> web.Response:
    """The two vLLM gauges the gateway's least-loaded balancer scrapes."""
    state = request.app[STATE_KEY]
    label = f'{{model_name="{_model_id(state)}"}}'
    text = (
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{label} {float(state.config.vllm_waiting)}\n"
        "# HELP vllm:num_requests_running Number of requests currently running.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{label} {float(state.active)}\n"
    )
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build_app(state: MockState) -> web.Application:
    """The aiohttp app; run it with `handler_cancellation=True` or `disconnects` misses idle waits."""
    # Above the gateway's default body limit (4 MiB), so the double never refuses what the gateway accepts.
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state
    app.router.add_post("/v1/chat/completions", _openai_chat)
    app.router.add_post("/v1/completions", _openai_completions)
    app.router.add_post("/v1/embeddings", _openai_embeddings)
    app.router.add_post("/v1/responses", _openai_responses)
    app.router.add_get("/v1/models", _openai_models)
    app.router.add_post("/api/chat", _ollama_chat)
    app.router.add_get("/api/tags", _ollama_tags)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _health)
    add_control_routes(app, STATE_KEY)
    return app


class MockServer(MockState, SiteServer):
    """A running mock upstream on a real loopback socket; `async with` stops it."""

    def __init__(self, config: MockConfig | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(config)
        self.host = host
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.root_url + "/v1"

    async def start(self, port: int = 0) -> None:
        # handler_cancellation: a client that hangs up mid-wait cancels the handler, which counts it.
        await self._serve(build_app(self), port, handler_cancellation=True)


async def start_mock_upstream(
    config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> MockServer:
    """Start on `host:port` (0 = a free port) and return once the socket accepts connections."""
    server = MockServer(config, host)
    await server.start(port)
    return server
