"""What the chat playground shows after a reply: the request's usage record (tokens, cost, latency, variant).

A usage consumer like the others (gateway/metering.py): it looks at each record's id and keeps only
those a playground request is waiting for, so it costs one dict lookup per record and never touches the
request path. The cost is the one metering computed, not an estimate of the console's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from adapters.usage import UsageRecord

__all__ = ["Receipts"]


class Receipts:
    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[UsageRecord]] = {}

    def expect(self, request_id: str) -> asyncio.Future[UsageRecord]:
        """Register before sending the request; await the future (with a timeout) after the reply ended."""
        future: asyncio.Future[UsageRecord] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        future.add_done_callback(lambda _: self._waiting.pop(request_id, None))
        return future

    async def consume(self, records: Sequence[UsageRecord]) -> None:
        if not self._waiting:
            return
        for record in records:
            future = self._waiting.pop(record.request_id, None)
            if future is not None and not future.done():
                future.set_result(record)
