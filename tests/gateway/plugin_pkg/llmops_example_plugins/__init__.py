"""Out-of-tree gateway plug-ins, one per hook, found through the `llmops.gateway` entry point.

Imports only `adapters` (the plug-in protocol), never gateway internals, as a separate
package would. The directory above this one plays an installed site-packages: it holds
`llmops_example_plugins-0.1.dist-info/entry_points.txt`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from adapters.errors import AuthenticationFailed, RateLimited
from adapters.gateway_plugins import Principal, RequestContext, UsageRecord

FINISHED: list[tuple[RequestContext, UsageRecord]] = []  # what FinishLog received, in order
LIFESPAN: list[str] = []  # "start <n>" / "stop <n>" per FinishLog instance


class RequireKey:
    """on_request: deny without a known key, else set the typed principal."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        keys: dict[str, str]  # bearer token -> team

    def __init__(self, settings: Settings) -> None:
        self._keys = settings.keys

    async def on_request(self, ctx: RequestContext) -> None:
        token = ctx.headers.get("authorization", "").removeprefix("Bearer ")
        ctx.annotate("require-key", checked=True)
        team = self._keys.get(token)
        if team is None:
            raise AuthenticationFailed("Invalid API key", code="invalid_api_key")
        ctx.principal = Principal(key_id=f"key-{token}", team=team, roles=("user",))


class SystemPrompt:
    """on_request: rewrite the body (prepend a system message)."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        text: str

    def __init__(self, settings: Settings) -> None:
        self._message = {"role": "system", "content": settings.text}

    async def on_request(self, ctx: RequestContext) -> None:
        ctx.body["messages"] = [self._message, *ctx.body.get("messages", [])]


class ModelBudget:
    """on_route: priced on the actual upstream model; some models are over budget."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        exhausted: list[str] = []
        max_tokens: int = 100

    def __init__(self, settings: Settings) -> None:
        self._exhausted = set(settings.exhausted)

    async def on_route(self, ctx: RequestContext) -> None:
        ctx.annotate("model-budget", priced=f"{ctx.provider}/{ctx.upstream_model}", route=ctx.route_name)
        if ctx.upstream_model in self._exhausted:
            raise RateLimited(f"budget for {ctx.upstream_model} exhausted", code="budget_exhausted")


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def _redact(text: str) -> str:
    return _EMAIL.sub("[email]", text)


class _EmailFilter:
    """Holds back the text after the last whitespace: it may be the start of an address
    that the next chunk completes. Releases the rest redacted."""

    def __init__(self) -> None:
        self._held = ""
        self._template: dict[str, Any] | None = None

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        for choice in completion.get("choices", []):
            msg = choice.get("message") or {}
            if isinstance(msg.get("content"), str):
                msg["content"] = _redact(msg["content"])
        return completion

    def _chunk(self, text: str) -> dict[str, Any]:
        assert self._template is not None
        return {**self._template, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        choices = chunk.get("choices") or []
        delta = choices[0].get("delta") or {} if choices else {}
        content = delta.get("content")
        if not content:  # role or finish chunk: release what is held first
            out = self.flush() if choices and choices[0].get("finish_reason") else []
            return [*out, chunk]
        self._template = {k: v for k, v in chunk.items() if k != "choices"}
        text = self._held + content
        cut = max(text.rfind(" "), text.rfind("\n"))
        if cut < 0:
            self._held = text
            return []
        self._held = text[cut + 1 :]
        return [self._chunk(_redact(text[: cut + 1]))]

    def flush(self) -> list[dict[str, Any]]:
        if not self._held:
            return []
        text, self._held = self._held, ""
        return [self._chunk(_redact(text))]


class RedactEmail:
    """response_filter: redacts e-mail addresses, even split across chunks."""

    def response_filter(self, ctx: RequestContext) -> _EmailFilter:
        return _EmailFilter()


class FinishLog:
    """on_finish + lifespan: records every final usage record while started."""

    failure = "open"
    _count = 0

    def __init__(self) -> None:
        FinishLog._count += 1
        self._n = FinishLog._count
        self._running = False

    @contextlib.asynccontextmanager
    async def _life(self) -> AsyncIterator[None]:
        LIFESPAN.append(f"start {self._n}")
        self._running = True
        try:
            yield
        finally:
            self._running = False
            LIFESPAN.append(f"stop {self._n}")

    def lifespan(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._life()

    async def on_finish(self, ctx: RequestContext, usage: UsageRecord) -> None:
        assert self._running, "on_finish after the lifespan ended"
        FINISHED.append((ctx, usage))


class Flaky:
    """Raises a bug in every hook; its failure mode comes from its settings (for the tests)."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        failure: str = "closed"
        hooks: tuple[str, ...] = ("on_request",)

    def __init__(self, settings: Settings) -> None:
        self.failure = settings.failure
        self._hooks = set(settings.hooks)

    def _maybe_fail(self, hook: str) -> None:
        if hook in self._hooks:
            raise RuntimeError(f"flaky {hook}")

    async def on_request(self, ctx: RequestContext) -> None:
        self._maybe_fail("on_request")

    async def on_route(self, ctx: RequestContext) -> None:
        self._maybe_fail("on_route")

    def response_filter(self, ctx: RequestContext) -> Any:
        return _FlakyFilter(self._maybe_fail) if "feed" in self._hooks else None


class _FlakyFilter:
    def __init__(self, fail: Any) -> None:
        self._fail = fail
        self._seen = 0

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        self._fail("feed")
        return completion

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._seen += 1
        if self._seen > 2:
            self._fail("feed")
        return [chunk]

    def flush(self) -> list[dict[str, Any]]:
        return []
