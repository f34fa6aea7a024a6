"""The OpenAI-compatible adapter sends its key, its configured headers and the request id on every
call, whether it owns its aiohttp session (constant headers live on the session) or borrows one."""

from __future__ import annotations

import aiohttp
import pytest

from adapters.upstream import OpenAIUpstream, Timeouts, UpstreamCall

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("borrowed", [False, True])
async def test_key_headers_and_request_id_reach_the_upstream(mock, borrowed: bool) -> None:
    session = aiohttp.ClientSession() if borrowed else None
    up = OpenAIUpstream("p", [mock.url], api_key="sk-test", headers={"x-tenant": "acme"}, session=session)
    await up.start()
    try:
        for i, stream in enumerate((False, True)):
            body = {**BODY, "stream": stream}
            call = UpstreamCall(body=body, request_id=f"rid-{i}", timeouts=Timeouts(), stream=stream)
            if stream:
                chunks = up.stream(up.backends[0], call)
                assert [p async for p in chunks]
            else:
                assert (await up.complete(up.backends[0], call)).usage is not None
            h = mock.requests[-1].headers
            assert h["authorization"] == "Bearer sk-test"
            assert h["x-tenant"] == "acme"
            assert h["x-request-id"] == f"rid-{i}"
            assert h["content-type"] == "application/json"
    finally:
        await up.aclose()
        if session is not None:
            await session.close()
