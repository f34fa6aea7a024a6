"""A simulated replica's HTTP face (a TEST DOUBLE, not a model): the OpenAI chat API, streaming or not, with
vLLM's `/metrics`, `/health` and `/v1/models`, plus `/sim/stats` and `/sim/reset` for tests and benchmarks."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import msgspec
from aiohttp import web

from adapters.testdoubles.mock_responses import openai_error
from adapters.testdoubles.vllm_sim_metrics import CONTENT_TYPE, metrics_text
from adapters.testdoubles.vllm_sim_model import output_pieces, render_chat
from adapters.testdoubles.vllm_sim_replica import ReplicaEngine, Sequence

__all__ = ["ENGINE_KEY", "ChatJob", "build_app", "parse_chat"]

ENGINE_KEY = web.AppKey("vllm_sim_engine", ReplicaEngine)
MAX_BODY_BYTES = 64 * 1024 * 1024
_encode = msgspec.json.encode


class _Part(msgspec.Struct):
    type: str
    text: str | None = None


class _Message(msgspec.Struct):
    role: str
    content: str | list[_Part] | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _ChatBody(msgspec.Struct):
    messages: list[_Message]
    model: str | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None


_decode_chat = msgspec.json.Decoder(_ChatBody).decode


class BadRequest(ValueError):
    pass


class ChatJob(msgspec.Struct, frozen=True):
    """A valid chat request, rendered: the prompt text and how to answer it."""

    prompt: str
    max_tokens: int
    stream: bool
    include_usage: bool
    finish_reason: str


def parse_chat(raw: bytes, engine: ReplicaEngine) -> ChatJob:
    try:
        body = _decode_chat(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError: one message for both, with its path
        raise BadRequest(f"invalid request body: {exc}") from None
    if not body.messages:
        raise BadRequest("messages must not be empty")
    rendered = []
    for m in body.messages:
        if isinstance(m.content, list):  # parts: only text counts (the simulator has no vision)
            text = "".join(p.text or "" for p in m.content if p.type == "text")
        else:
            text = m.content or ""
        rendered.append((m.role, text))
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    p = engine.params
    n = min(p.output_tokens if asked is None else asked, p.max_output_tokens)
    include = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    return ChatJob(render_chat(rendered), n, bool(body.stream), include, "stop" if asked is None else "length")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.Response(body=openai_error(message, kind), status=status, content_type="application/json")


def _usage(seq: Sequence, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": seq.prompt_tokens, "completion_tokens": completion,
            "total_tokens": seq.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": seq.cached_tokens}}


async def _chat(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    try:
        job = parse_chat(await request.read(), engine)
    except BadRequest as exc:
        return _error(400, str(exc))
    # With handler cancellation on, a client that hangs up cancels us wherever we wait: `run` frees its slot.
    async with engine.run(job.prompt) as seq:
        pieces = output_pieces(job.max_tokens)
        if job.stream:
            return await _stream(request, engine, job, seq, pieces)
        # The first token came with the prefill; the rest decode at the configured rate.
        await asyncio.sleep((len(pieces) - 1) / engine.params.decode_tokens_per_s)
        text = "".join(pieces)
        engine.finish(seq, text, job.finish_reason)
        message = {"role": "assistant", "content": text}
        return _json({
            "id": _completion_id(engine), "object": "chat.completion", "created": int(time.time()),
            "model": engine.params.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": job.finish_reason}],
            "usage": _usage(seq, len(pieces)),
        })


def _completion_id(engine: ReplicaEngine) -> str:
    engine.ids += 1
    return f"chatcmpl-sim{engine.index}-{engine.ids}"


async def _stream(request: web.Request, engine: ReplicaEngine, job: ChatJob, seq: Sequence,
                  pieces: list[str]) -> web.StreamResponse:
    head = {"id": _completion_id(engine), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": engine.params.model}

    def frame(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _encode({**head, "choices": [choice]}) + b"\n\n"

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await resp.prepare(request)
        await resp.write(frame({"role": "assistant", "content": ""}))
        loop = asyncio.get_running_loop()
        first_at = loop.time()
        step = engine.params.stream_chunk_tokens
        rate = engine.params.decode_tokens_per_s
        for start in range(0, len(pieces), step):
            last = min(start + step, len(pieces)) - 1  # a chunk goes out when its last token is decoded
            delay = first_at + last / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(frame({"content": "".join(pieces[start:last + 1])}))
        engine.finish(seq, "".join(pieces), job.finish_reason)
        tail = frame({}, job.finish_reason)
        if job.include_usage:
            tail += b"data: " + _encode({**head, "choices": [], "usage": _usage(seq, len(pieces))}) + b"\n\n"
        await resp.write(tail + b"data: [DONE]\n\n")
        await resp.write_eof()
    except ConnectionResetError:  # the client left while we wrote: `run` still frees the slot
        pass
    return resp


async def _models(request: web.Request) -> web.Response:
    p = request.app[ENGINE_KEY].params
    model = {"id": p.model, "object": "model", "created": 0, "owned_by": "vllm", "root": p.model}
    return _json({"object": "list", "data": [model]})


async def _health(request: web.Request) -> web.Response:
    return web.Response()  # vLLM answers 200 with an empty body


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=metrics_text(request.app[ENGINE_KEY]).encode(),
                        headers={"Content-Type": CONTENT_TYPE})


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[ENGINE_KEY].stats())


async def _reset(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    if engine.busy:
        return _error(409, "requests are running or waiting; reset when the replica is idle")
    engine.reset()
    return _json(engine.stats())


def build_app(engine: ReplicaEngine) -> web.Application:
    """Serve it with handler cancellation on, or a client that hangs up keeps its slot until its answer ends."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[ENGINE_KEY] = engine
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/sim/stats", _stats)
    app.router.add_post("/sim/reset", _reset)
    return app
