"""The litellm adapter, driven through litellm's own OpenAI client against the mock upstream."""

from __future__ import annotations

import openai
import pytest

from adapters.testdoubles.mock_upstream import Fault
from tests.conftest import run_gateway

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def cfg(mock) -> dict:
    return {
        "providers": [{"name": "ll", "kind": "litellm", "base_url": mock.url, "api_key": "sk-test"}],
        "routes": [{"name": "r", "targets": [{"provider": "ll", "model": "openai/mock-model"}], "retries": 0}],
    }


async def test_complete_stream_and_errors(mock, cfg) -> None:
    async with run_gateway(cfg) as g:
        c = openai.AsyncOpenAI(base_url=g.base_url, api_key="x", max_retries=0, timeout=30)
        resp = await c.chat.completions.create(model="r", messages=MSG)
        assert resp.choices[0].message.content.startswith("mock")
        assert resp.usage.completion_tokens == 16
        assert mock.requests[-1].headers["authorization"] == "Bearer sk-test"
        parts = []
        async for ch in await c.chat.completions.create(model="r", messages=MSG, stream=True):
            if ch.choices and ch.choices[0].delta.content:
                parts.append(ch.choices[0].delta.content)
        assert "".join(parts) == resp.choices[0].message.content
        mock.push_faults(Fault(kind="status", status=400))
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model="r", messages=MSG)
