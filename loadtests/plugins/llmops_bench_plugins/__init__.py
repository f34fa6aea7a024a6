"""A plug-in that implements every gateway hook and does nothing: the cost of the seam itself.

`python -m loadtests.bench --gateway-plugins noop3` puts this directory on the gateway's
PYTHONPATH (its dist-info declares `noop-a`, `noop-b`, `noop-c` in `llmops.gateway`) and
enables all three; the issue's target is >= 0.90x the plain gateway's req/s.

Written as a real no-op plug-in would be: hooks that await nothing are plain functions,
and the pass-through filter, holding no state, is one object shared by every request.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from adapters.gateway_plugins import RequestContext, UsageRecord


class _PassThrough:
    __slots__ = ()
    changes_in_place = False  # what it returns unchanged is unchanged: the gateway resends the upstream's bytes

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        return completion

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return [chunk]

    def flush(self) -> list[dict[str, Any]]:
        return []


class Noop:
    response_filter = _PassThrough()  # stateless: shared by every request instead of one made per request

    def on_request(self, ctx: RequestContext) -> None:
        return None

    def on_route(self, ctx: RequestContext) -> None:
        return None

    def on_finish(self, ctx: RequestContext, usage: UsageRecord) -> None:
        return None

    @contextlib.asynccontextmanager
    async def _life(self) -> AsyncIterator[None]:
        yield

    def lifespan(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._life()
