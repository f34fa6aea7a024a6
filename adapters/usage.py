"""The usage record: what one finished data-plane request cost, and who asked.

A shared contract: the gateway writes one per response, its usage consumers
(log line, Prometheus, the store-backed meter) read them in batches, and
gateway plug-ins receive theirs in `on_finish`. It lives here, not in the
gateway, so a plug-in package can type against it without importing gateway
internals.
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal
from typing import Any, Literal

import msgspec

from adapters.upstream.base import Usage

__all__ = ["Principal", "UsageRecord", "UsageSource", "new_record_id"]

UsageSource = Literal["upstream", "counted", "estimated", "none"]
"""Where the token counts come from: the upstream's own report; counted by the gateway's
tokenizer; `estimated` at ~4 characters per token because no tokenizer is installed
(never silently: the record says so); `none` for requests no upstream answered."""


class Principal(msgspec.Struct, frozen=True, gc=False):
    """Who a request acts for, set by an authenticating plug-in. Immutable, so it can be shared."""

    key_id: str
    team: str | None = None
    roles: tuple[str, ...] = ()


def new_record_id() -> str:
    """The record's own key: unique per request, unlike a client-chosen ``x-request-id``."""
    return secrets.token_hex(16)


class UsageRecord(msgspec.Struct, gc=False):
    """Token counts follow ``adapters.upstream.Usage``'s normalised shape. ``cost_usd`` and
    ``price_source`` are set off the request path by the pricer (null cost: no price known)."""

    request_id: str
    route: str
    provider: str
    model: str
    stream: bool
    status: int
    latency_s: float
    ttft_s: float | None = None
    attempts: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    usage_source: str = "upstream"  # a UsageSource
    error: str | None = None
    endpoint: str = "chat"  # which OpenAI endpoint served it: chat, completions, embeddings, responses
    principal: Principal | None = None
    variant: str | None = None  # the A/B arm, set by the experiment plug-in (ctx.variant)
    experiment: str | None = None  # the experiment's id (ctx.experiment)
    episode_id: str | None = None  # the session/episode id the request named (ctx.episode_id)
    fallback: bool = False  # served (or last tried) by another target than the first one planned
    first_provider: str | None = None  # only with `fallback`: the first planned target's provider (it failed)
    record_id: str = ""  # minted by the usage writer (off the request path) before it is first persisted
    ts: float = msgspec.field(default_factory=time.time)  # wall clock when the request started (epoch s)
    cost_usd: Decimal | None = None
    price_source: str | None = None  # config, litellm or gpu_hour; None while unpriced
    gpu_usd_per_hour: Decimal | None = None  # gpu_hour pricing: the endpoint's hourly price, for the rollups
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, dict[str, Any]] | None = None  # per plug-in name, from the request context
    # Only set when the upstream reported no usage, so the usage worker can count.
    prompt_messages: list[Any] | None = None
    completion_text: str | None = None

    def apply_usage(self, usage: Usage | None, messages: list[Any], completion_text: str) -> None:
        if usage is not None:
            self.prompt_tokens = usage.prompt_tokens
            self.completion_tokens = usage.completion_tokens
            self.cached_read_tokens = usage.cached_read_tokens
            self.cache_write_tokens = usage.cache_write_tokens
            self.reasoning_tokens = usage.reasoning_tokens
            self.usage_source = "upstream"
        else:
            self.usage_source = "counted"  # the worker turns it into "estimated" without a tokenizer
            self.prompt_messages = messages
            self.completion_text = completion_text
