"""FunctionUpstream: an Upstream that calls a function, like httpx's MockTransport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.errors import UpstreamStatus
from adapters.testdoubles import FunctionUpstream, chat_completion, stream_chunks
from adapters.upstream import Timeouts, UpstreamCall


def _call(stream: bool = False) -> UpstreamCall:
    return UpstreamCall(body={"model": "m", "messages": []}, request_id="r", timeouts=Timeouts(), stream=stream)


async def test_sync_and_async_handlers_answer_completions() -> None:
    async def handler(call: UpstreamCall) -> dict[str, Any]:
        return chat_completion("hi", usage=(1, 2))

    up = FunctionUpstream(handler)
    c = await up.complete(up.backends[0], _call())
    assert c.usage is not None and c.usage.completion_tokens == 2
    c = await FunctionUpstream(lambda call: chat_completion("no usage", usage=None)).complete(up.backends[0], _call())
    assert c.usage is None and c.content == "no usage"
    assert [call.request_id for call in up.calls] == ["r"]


async def test_streams_from_lists_and_async_generators() -> None:
    up = FunctionUpstream(lambda call: stream_chunks(["a", "b"], usage=None))
    got = [p async for p in up.stream(up.backends[0], _call(True))]
    assert len(got) == 4 and b'"content":"a"' in got[1]

    async def gen(call: UpstreamCall) -> AsyncIterator[bytes]:
        yield b'{"choices":[]}'

    up = FunctionUpstream(gen)
    assert [p async for p in up.stream(up.backends[0], _call(True))] == [b'{"choices":[]}']


async def test_handler_errors_are_the_adapters_errors() -> None:
    def handler(call: UpstreamCall) -> Any:
        raise UpstreamStatus(503, b"", "fn")

    up = FunctionUpstream(handler)
    with pytest.raises(UpstreamStatus):
        await up.complete(up.backends[0], _call())
    with pytest.raises(UpstreamStatus):
        await anext(up.stream(up.backends[0], _call(True)))
