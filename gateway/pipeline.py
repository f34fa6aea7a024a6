"""The request pipeline: accept → authenticate → transform → route → relay → account.

`accept`, `route`, `relay` and `account` are the gateway's core and live in
`chat/service.py`; the two middle phases are open: each later feature (keys
and RBAC, rate limits, budgets, guardrails, prompt templates, A/B splits) is a
`Stage` in its own module, appended here. Stages run in order, mutate the
context, and stop a request by raising a `GatewayError`. With no stages the
pipeline costs one loop over an empty tuple.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Pipeline", "RequestContext", "Stage"]


@dataclass(slots=True)
class RequestContext:
    request_id: str
    model: str
    body: dict[str, Any]
    stream: bool
    headers: dict[str, str]
    client_wants_usage: bool = False
    started: float = field(default_factory=time.perf_counter)
    principal: Any = None  # set by an authenticate stage
    route_name: str | None = None  # may be rewritten by a transform stage (e.g. an A/B split)
    tags: dict[str, str] = field(default_factory=dict)  # carried into the usage record


class Stage(Protocol):
    """One step before routing. Must stay well under 0.1 ms and never do blocking I/O."""

    name: str

    async def __call__(self, ctx: RequestContext) -> None: ...


class Pipeline:
    def __init__(self, authenticate: Sequence[Stage] = (), transform: Sequence[Stage] = ()) -> None:
        self.authenticate = tuple(authenticate)
        self.transform = tuple(transform)
        self._stages = self.authenticate + self.transform

    async def run(self, ctx: RequestContext) -> None:
        for stage in self._stages:
            await stage(ctx)
