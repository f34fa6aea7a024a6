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
from typing import Any, Protocol

import msgspec

__all__ = ["Pipeline", "RequestContext", "Stage"]


class RequestContext(msgspec.Struct):
    """What the stages see and change. A msgspec Struct: built once per request, in C."""

    request_id: str
    model: str
    body: dict[str, Any]
    stream: bool
    raw_headers: list[tuple[bytes, bytes]]  # the ASGI scope's, names lower-cased by the server
    client_wants_usage: bool = False
    started: float = msgspec.field(default_factory=time.perf_counter)
    principal: Any = None  # set by an authenticate stage
    route_name: str | None = None  # may be rewritten by a transform stage (e.g. an A/B split)
    tags: dict[str, str] = msgspec.field(default_factory=dict)  # carried into the usage record
    decoded_headers: dict[str, str] | None = None  # filled by `headers` on first use

    @property
    def headers(self) -> dict[str, str]:
        """The request headers as text, decoded on first use: most requests never need them all."""
        if self.decoded_headers is None:
            self.decoded_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers}
        return self.decoded_headers


class Stage(Protocol):
    """One step before routing. Must stay well under 0.1 ms and never do blocking I/O."""

    name: str

    async def __call__(self, ctx: RequestContext) -> None: ...


class Pipeline:
    def __init__(self, authenticate: Sequence[Stage] = (), transform: Sequence[Stage] = ()) -> None:
        self.authenticate = tuple(authenticate)
        self.transform = tuple(transform)
        self.stages = self.authenticate + self.transform

    async def run(self, ctx: RequestContext) -> None:
        for stage in self.stages:
            await stage(ctx)
