"""Ollama's native API (served by the mock) translated to OpenAI shapes, through the gateway."""

from __future__ import annotations

import openai
import pytest

from adapters.testdoubles.mock_upstream import Fault
from adapters.upstream.ollama import to_ollama_request
from tests.conftest import run_gateway

MSG = [{"role": "user", "content": "hello"}]


def _cfg(mock) -> dict:
    return {
        "providers": [{"name": "ol", "kind": "ollama", "base_url": mock.root_url}],
        "routes": [{"name": "r", "targets": [{"provider": "ol", "model": "llama3.2"}], "retries": 0}],
    }


def test_request_translation() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 5, "temperature": 0.2, "response_format": {"type": "json_object"}, "seed": 1}
    out = to_ollama_request(body, stream=True)
    assert out == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                   "options": {"temperature": 0.2, "seed": 1, "num_predict": 5}, "format": "json"}


async def test_complete_and_stream(mock) -> None:
    async with run_gateway(_cfg(mock)) as g:
        c = openai.AsyncOpenAI(base_url=g.base_url, api_key="x", max_retries=0)
        resp = await c.chat.completions.create(model="r", messages=MSG, max_tokens=4)
        assert resp.object == "chat.completion"
        assert resp.choices[0].finish_reason == "length"
        assert resp.usage.completion_tokens == 4 and resp.usage.prompt_tokens > 0
        assert mock.requests[-1].path == "/api/chat" and mock.requests[-1].body["options"]["num_predict"] == 4
        parts, usage = [], None
        async for ch in await c.chat.completions.create(
            model="r", messages=MSG, stream=True, stream_options={"include_usage": True}
        ):
            if ch.choices and ch.choices[0].delta.content:
                parts.append(ch.choices[0].delta.content)
            usage = ch.usage or usage
        full = await c.chat.completions.create(model="r", messages=MSG)
        assert "".join(parts) == full.choices[0].message.content
        assert usage is not None and usage.completion_tokens == 16


async def test_errors_are_reshaped(mock) -> None:
    async with run_gateway(_cfg(mock)) as g:
        c = openai.AsyncOpenAI(base_url=g.base_url, api_key="x", max_retries=0)
        mock.push_faults(Fault(kind="status", status=404))
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(model="r", messages=MSG)
