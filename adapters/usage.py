"""The usage record: what one finished data-plane request cost, and who asked.

A shared contract: the gateway writes one per response, its usage consumers
(log line, Prometheus, the store-backed meter) read them in batches, and
gateway plug-ins receive theirs in `on_finish`. It lives here, not in the
gateway, so a plug-in package can type against it without importing gateway
internals.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from adapters.upstream.base import Usage

__all__ = ["Principal", "UsageRecord", "UsageSource"]

UsageSource = Literal["upstream", "counted", "estimated", "none"]
"""Where the token counts come from: the upstream's own report; counted by the gateway's
tokenizer; `estimated` at ~4 characters per token because no tokenizer is installed
(never silently: the record says so); `none` for requests no upstream answered."""


class Principal(msgspec.Struct, frozen=True, gc=False):
    """Who a request acts for, set by an authenticating plug-in. Immutable, so it can be shared."""

    key_id: str
    team: str | None = None
    roles: tuple[str, ...] = ()


class UsageRecord(msgspec.Struct, gc=False):
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
    usage_source: str = "upstream"  # a UsageSource
    error: str | None = None
    endpoint: str = "chat"  # which OpenAI endpoint served it: chat, completions, embeddings, responses
    principal: Principal | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, dict[str, Any]] | None = None  # per plug-in name, from the request context
    # Only set when the upstream reported no usage, so the usage worker can count.
    prompt_messages: list[Any] | None = None
    completion_text: str | None = None

    def apply_usage(self, usage: Usage | None, messages: list[Any], completion_text: str) -> None:
        if usage is not None:
            self.prompt_tokens = usage.prompt_tokens
            self.completion_tokens = usage.completion_tokens
            self.usage_source = "upstream"
        else:
            self.usage_source = "counted"  # the worker turns it into "estimated" without a tokenizer
            self.prompt_messages = messages
            self.completion_text = completion_text
