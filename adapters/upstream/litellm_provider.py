"""The long tail of providers (Anthropic, Bedrock, Vertex, …) through litellm.

litellm costs ~5 s and ~165 MB to import, so it is imported once in a worker
thread at start-up, and only when a provider of this kind is configured.
OpenAI-compatible upstreams never come through here.

Usage is litellm's `ModelResponse.usage`, relayed as litellm dumps it and read by
`usage_wire` like any OpenAI-shaped usage: `prompt_tokens_details` (cached reads, cache
writes), `completion_tokens_details.reasoning_tokens`, and for Anthropic the top-level
`cache_read_input_tokens` / `cache_creation_input_tokens`. Anthropic's own `input_tokens`
exclude those two; litellm (1.108) already adds them into `prompt_tokens`, so they are not
added again (tests/gateway/usage checks the exact counts against an Anthropic double). Streamed,
litellm puts the usage on a last chunk that also carries a choice; the stream meter reads it there.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from adapters.errors import EndpointNotSupported, UpstreamError, UpstreamStatus, UpstreamTimeout
from adapters.upstream.base import Backend, Completion, UpstreamCall
from adapters.upstream.breaker import CircuitBreaker
from adapters.upstream.openai_compat import parse_completion

__all__ = ["LiteLLMUpstream"]

_encode = msgspec.json.Encoder().encode


class LiteLLMUpstream:
    kind = "litellm"

    def __init__(
        self,
        name: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        params: dict[str, Any] | None = None,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 30.0,
    ) -> None:
        self.name = name
        breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_s)
        self.backends = [Backend(url=api_base or "litellm", breaker=breaker)]
        self._api_base = api_base
        self._api_key = api_key
        self._params = params or {}
        self._litellm: Any = None

    async def start(self) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        self._litellm = await asyncio.to_thread(importlib.import_module, "litellm")

    async def aclose(self) -> None:
        return None

    def _kwargs(self, call: UpstreamCall, stream: bool) -> dict[str, Any]:
        kw = {**self._params, **call.body}
        kw["stream"] = stream
        if stream:
            kw["stream_options"] = {"include_usage": True}
        kw["timeout"] = call.timeouts.total_s
        kw["extra_headers"] = {"x-request-id": call.request_id}
        if self._api_base:
            kw["api_base"] = self._api_base
        if self._api_key:
            kw["api_key"] = self._api_key
        return kw

    def _translate(self, exc: Exception) -> Exception:
        lt = self._litellm
        if isinstance(exc, lt.Timeout):
            return UpstreamTimeout(f"upstream {self.name} timed out")
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status < 600:
            message = str(getattr(exc, "message", "") or exc.__class__.__name__)
            body = _encode({"error": {"message": message, "type": "upstream_error", "param": None, "code": None}})
            return UpstreamStatus(status, body, self.name)
        return UpstreamError(f"upstream {self.name} failed: {exc.__class__.__name__}")

    async def complete(self, backend: Backend, call: UpstreamCall) -> Completion:
        if call.endpoint != "chat":  # only acompletion is wired; litellm's other calls are not
            raise EndpointNotSupported(self.name, self.kind, call.endpoint)
        if self._litellm is None:
            raise UpstreamError(f"provider {self.name} is not started")
        try:
            resp = await self._litellm.acompletion(**self._kwargs(call, stream=False))
        except Exception as exc:  # litellm raises its own tree; translate every member
            raise self._translate(exc) from None
        return parse_completion(resp.model_dump_json(exclude_none=True).encode(), self.name)

    async def stream(self, backend: Backend, call: UpstreamCall) -> AsyncGenerator[bytes, None]:
        if call.endpoint != "chat":
            raise EndpointNotSupported(self.name, self.kind, call.endpoint)
        if self._litellm is None:
            raise UpstreamError(f"provider {self.name} is not started")
        try:
            resp = await self._litellm.acompletion(**self._kwargs(call, stream=True))
            async for chunk in resp:
                yield chunk.model_dump_json(exclude_none=True).encode()
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:  # see complete()
            raise self._translate(exc) from None
