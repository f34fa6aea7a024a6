"""One translator maps aiohttp's exceptions for every adapter; messages never leak addresses."""

from __future__ import annotations

import aiohttp
import pytest

from adapters.errors import UpstreamError, UpstreamStatus, UpstreamTimeout
from adapters.upstream import OllamaUpstream, OpenAIUpstream, Timeouts, UpstreamCall
from adapters.upstream.client_errors import ClientErrors
from tests.conftest import free_port

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_translates_timeouts_client_errors_and_nothing_else() -> None:
    errors = ClientErrors("p")
    with pytest.raises(UpstreamTimeout, match="upstream p timed out"), errors:
        raise TimeoutError
    with pytest.raises(UpstreamError, match="upstream p failed: server disconnected") as info, errors:
        raise aiohttp.ServerDisconnectedError
    assert info.value.__suppress_context__  # the client's exception (with its URL) is not chained
    with pytest.raises(UpstreamStatus), errors:  # already a gateway error: unchanged
        raise UpstreamStatus(503, b"", "p")
    with pytest.raises(KeyError), errors:  # a bug stays a bug
        raise KeyError("x")
    with errors:  # reusable, and silent when nothing failed
        pass


@pytest.mark.parametrize("cls", [OpenAIUpstream, OllamaUpstream])
@pytest.mark.parametrize("stream", [False, True])
async def test_every_adapter_translates_a_refused_connection(cls: type[OpenAIUpstream], stream: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    up = cls("p", [url])
    await up.start()
    try:
        call = UpstreamCall(body={**BODY, "stream": stream}, request_id="r", timeouts=Timeouts(), stream=stream)
        with pytest.raises(UpstreamError) as info:
            if stream:
                await anext(up.stream(up.backends[0], call))
            else:
                await up.complete(up.backends[0], call)
        assert info.value.message.startswith("upstream p failed: cannot connect (")
        assert "127.0.0.1" not in info.value.message
    finally:
        await up.aclose()
