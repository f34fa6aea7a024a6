"""Ollama's native `/api/chat` (NDJSON), translated to and from OpenAI's shapes.

Use this kind when you want Ollama-specific options; Ollama's `/v1` endpoint
works with the plain `openai` kind too.

Usage is the final line's `prompt_eval_count` / `eval_count`, relayed as OpenAI's `usage`.
Ollama leaves `prompt_eval_count` out when it evaluated no prompt token (the whole prompt
was in its KV cache); a count that says nothing about the prompt is no report, so the
gateway counts the tokens itself (the record says `counted`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from adapters.errors import EndpointNotSupported, UpstreamError, UpstreamStatus
from adapters.upstream.base import Backend, Completion, UpstreamCall, Usage
from adapters.upstream.openai_compat import OpenAIUpstream, _drain
from adapters.upstream.usage_wire import usage_json

__all__ = ["OllamaUpstream", "to_ollama_request"]

# OpenAI request field -> Ollama `options` key.
_OPTION_MAP = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
}


class _OMessage(msgspec.Struct):
    role: str = "assistant"
    content: str = ""
    tool_calls: list[Any] | None = None


class _OChunk(msgspec.Struct):
    model: str = ""
    message: _OMessage | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    error: str | None = None


_decode_chunk = msgspec.json.Decoder(_OChunk).decode
_encode = msgspec.json.Encoder().encode


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def to_ollama_request(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """Map an OpenAI chat body onto Ollama's /api/chat body."""
    messages = []
    for m in body.get("messages", []):
        msg: dict[str, Any] = {"role": m.get("role", "user"), "content": _text(m.get("content"))}
        if m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]
        messages.append(msg)
    out: dict[str, Any] = {"model": body["model"], "messages": messages, "stream": stream}
    options = {dst: body[src] for src, dst in _OPTION_MAP.items() if body.get(src) is not None}
    if options:
        out["options"] = options
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["format"] = "json"
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        out["format"] = (fmt.get("json_schema") or {}).get("schema", "json")
    if body.get("tools"):
        out["tools"] = body["tools"]
    return out


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _usage(c: _OChunk) -> Usage | None:
    """Go's `omitempty` drops zeros: no `eval_count` is 0 generated, no `prompt_eval_count` is no report."""
    if c.prompt_eval_count is None:
        return None
    completion = c.eval_count or 0
    return Usage(
        prompt_tokens=c.prompt_eval_count, completion_tokens=completion, total_tokens=c.prompt_eval_count + completion
    )


class OllamaUpstream(OpenAIUpstream):
    """Same pooling, timeouts and error translation as the OpenAI adapter."""

    kind = "ollama"

    async def complete(self, backend: Backend, call: UpstreamCall) -> Completion:
        if call.endpoint != "chat":  # /api/chat only; Ollama's /v1 (kind openai) serves the rest
            raise EndpointNotSupported(self.name, self.kind, call.endpoint)
        session = self._session_or_fail()
        with self._client_errors:
            async with session.post(
                backend.url + "/api/chat",
                data=_encode(to_ollama_request(call.body, stream=False)),
                headers=self._request_headers(call),
                timeout=self._timeout(call.timeouts),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        if status >= 400:
            raise UpstreamStatus(status, _ollama_error(raw, status), self.name)
        try:
            c = _decode_chunk(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamError(f"upstream {self.name} returned a malformed body") from None
        message: dict[str, Any] = {"role": "assistant", "content": c.message.content if c.message else ""}
        if c.message and c.message.tool_calls:
            message["tool_calls"] = c.message.tool_calls
        usage = _usage(c)
        body: dict[str, Any] = {
            "id": f"chatcmpl-{call.request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": c.model or call.body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(c.done_reason)}],
        }
        if usage is not None:
            body["usage"] = usage_json(usage)
        return Completion(raw=_encode(body), usage=usage, content=message["content"])

    async def stream(self, backend: Backend, call: UpstreamCall) -> AsyncGenerator[bytes, None]:
        if call.endpoint != "chat":
            raise EndpointNotSupported(self.name, self.kind, call.endpoint)
        session = self._session_or_fail()
        cid, created, model = f"chatcmpl-{call.request_id}", int(time.time()), call.body["model"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _encode({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            })

        with self._client_errors:
            async with session.post(
                backend.url + "/api/chat",
                data=_encode(to_ollama_request(call.body, stream=True)),
                headers=self._request_headers(call),
                timeout=self._timeout(call.timeouts),
            ) as resp:
                if resp.status >= 400:
                    raise UpstreamStatus(resp.status, _ollama_error(await resp.read(), resp.status), self.name)
                first = True
                async for line in resp.content:
                    if not line.strip():
                        continue
                    try:
                        c = _decode_chunk(line)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        raise UpstreamError(f"upstream {self.name} sent a malformed stream line") from None
                    if c.error:
                        raise UpstreamError(f"upstream {self.name}: {c.error}")
                    if first:
                        first = False
                        yield chunk({"role": "assistant", "content": ""})
                    if c.message and (c.message.content or c.message.tool_calls):
                        delta: dict[str, Any] = {"content": c.message.content}
                        if c.message.tool_calls:
                            delta["tool_calls"] = c.message.tool_calls
                        yield chunk(delta)
                    if c.done:
                        await _drain(resp.content)  # read to EOF so the connection is reused
                        yield chunk({}, _finish(c.done_reason))
                        usage = _usage(c)
                        if usage is not None:
                            yield _encode({
                                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                "choices": [], "usage": usage_json(usage),
                            })
                        return
        raise UpstreamError(f"upstream {self.name} ended the stream without done")


def _ollama_error(raw: bytes, status: int) -> bytes:
    """Ollama answers `{"error": "text"}`; re-shape it as OpenAI's error schema."""
    try:
        msg = msgspec.json.decode(raw).get("error")
    except (msgspec.DecodeError, AttributeError):
        msg = None
    if not isinstance(msg, str):
        return raw
    kind = "not_found_error" if status == 404 else ("upstream_error" if status >= 500 else "invalid_request_error")
    return _encode({"error": {"message": msg, "type": kind, "param": None, "code": None}})
