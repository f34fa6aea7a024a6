"""The response filters' cheap path: when every filter declares `changes_in_place = False`,
what comes back unchanged is sent as the upstream's own bytes; anything else is re-encoded,
so a filter that edits in place (the default assumption) is never lost."""

from __future__ import annotations

from typing import Any

from adapters.testdoubles import FunctionUpstream
from adapters.upstream import UpstreamCall
from tests.gateway.inprocess import fn_config, in_process

MSG = [{"role": "user", "content": "hi"}]
# Spaced JSON: msgspec re-encodes it compactly, so the bytes tell whether it was re-encoded.
BODY = (b'{"id": "c1", "object": "chat.completion", "created": 1, "model": "m0", "choices": '
        b'[{"index": 0, "message": {"role": "assistant", "content": "secret"}, "finish_reason": "stop"}]}')
CHUNK = b'{"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "secret"}}]}'


def _upstream() -> FunctionUpstream:
    def handler(call: UpstreamCall) -> Any:
        return [CHUNK, CHUNK] if call.stream else BODY

    return FunctionUpstream(handler, "fn")


class _Same:
    changes_in_place = False

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        return completion

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return [chunk]

    def flush(self) -> list[dict[str, Any]]:
        return []


class _InPlace(_Same):
    changes_in_place = True

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        completion["choices"][0]["message"]["content"] = "[hidden]"
        return completion

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        chunk["choices"][0]["delta"]["content"] = "[hidden]"
        return [chunk]


class _Plugin:
    def __init__(self, name: str, make: type[_Same]) -> None:
        self.name, self._make = name, make

    def response_filter(self, ctx: Any) -> _Same:
        return self._make()


async def _answers(*plugins: _Plugin) -> tuple[bytes, bytes]:
    async with in_process(fn_config(), plugins=plugins, upstreams={"fn": _upstream()}) as (_, client):
        body = (await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})).content
        sse = (await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG, "stream": True})).content
    return body, sse


async def test_unchanged_answers_keep_the_upstream_bytes() -> None:
    body, sse = await _answers(_Plugin("a", _Same), _Plugin("b", _Same))
    assert body == BODY
    assert sse == b"data: " + CHUNK + b"\n\n" + b"data: " + CHUNK + b"\n\ndata: [DONE]\n\n"


async def test_a_filter_that_edits_in_place_is_re_encoded_even_beside_read_only_ones() -> None:
    body, sse = await _answers(_Plugin("a", _Same), _Plugin("b", _InPlace))
    assert b"secret" not in body and b'"content":"[hidden]"' in body
    assert b"secret" not in sse and sse.count(b'"content":"[hidden]"') == 2
