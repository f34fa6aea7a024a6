"""The upstream SSE reader: event splitting across reads, CRLF, multi-line data, drain after [DONE]."""

from __future__ import annotations

import asyncio
from unittest import mock

import aiohttp

from adapters.upstream.openai_compat import sse_payloads


def _reader(*pieces: bytes) -> aiohttp.StreamReader:
    r = aiohttp.StreamReader(mock.Mock(_reading_paused=False), 1 << 16, loop=asyncio.get_running_loop())
    for p in pieces:
        r.feed_data(p)
    r.feed_eof()
    return r


async def test_events_split_across_reads_and_comments_ignored() -> None:
    r = _reader(b': keep-alive\n\ndata: {"a"', b': 1}\n', b'\nevent: x\ndata: {"b": 2}\n\n', b"data: [DONE]\n\n")
    assert [p async for p in sse_payloads(r)] == [b'{"a": 1}', b'{"b": 2}']


async def test_crlf_and_multiline_data() -> None:
    r = _reader(b"data: one\r\ndata: two\r\n\r\ndata: three\r\n\r\n")
    assert [p async for p in sse_payloads(r)] == [b"one\ntwo", b"three"]


async def test_done_drains_the_rest_so_the_connection_is_reusable() -> None:
    r = _reader(b"data: x\n\ndata: [DONE]\n\n", b"\n" * 10)
    assert [p async for p in sse_payloads(r)] == [b"x"]
    assert r.at_eof()


async def test_final_event_without_blank_line() -> None:
    assert [p async for p in sse_payloads(_reader(b"data: last"))] == [b"last"]
