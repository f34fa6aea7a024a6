"""Helpers shared by the usage tests: a record's counts, and one request sent plain then streamed."""

from __future__ import annotations

from typing import Any

from adapters.usage import UsageRecord
from tests.conftest import capture_usage

__all__ = ["Recorder", "counts"]


def counts(r: UsageRecord) -> tuple[Any, ...]:
    return (r.prompt_tokens, r.completion_tokens, r.cached_read_tokens, r.cache_write_tokens, r.reasoning_tokens,
            r.usage_source)


class Recorder:
    """Sends requests to an in-process gateway and hands back the usage records they produced."""

    def __init__(self, gw: Any, client: Any) -> None:
        self.gw, self.client = gw, client
        self.seen: list[UsageRecord] = capture_usage(gw)

    async def one(self, path: str, body: dict[str, Any]) -> tuple[UsageRecord, Any]:
        r = await self.client.post(path, json=body)
        assert r.status_code == 200, r.text
        await self.gw.usage.drain()
        return self.seen[-1], r

    async def pair(self, path: str, body: dict[str, Any], **stream_extra: Any) -> tuple[UsageRecord, UsageRecord]:
        """The same request (`body` names the route as `model`) non-streamed, then streamed; their records."""
        first = len(self.seen)
        r = await self.client.post(path, json=body)
        assert r.status_code == 200, r.text
        r = await self.client.post(path, json={**body, "stream": True, **stream_extra})
        assert r.status_code == 200 and b'"error":{' not in r.content and b"event: error" not in r.content, r.text
        await self.gw.usage.drain()
        plain, streamed = self.seen[first:]
        assert (plain.stream, streamed.stream, plain.status, streamed.status) == (False, True, 200, 200)
        assert plain.model == streamed.model and plain.endpoint == streamed.endpoint
        return plain, streamed
