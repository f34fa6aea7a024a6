"""The ``guardrails`` built-in plug-in: the policy documents' guardrails, on prompts and answers.

For each request, the policies whose ``scope.teams`` names the key's team (``ctx.principal.team``)
apply, and those with an empty scope apply to everyone (a request without a principal gets
only those). Their rules (``policies.guardrails``) run:

* on the prompt in ``on_request``: chat messages (string and content-part forms), the
  completions ``prompt``, the embeddings ``input``, the Responses ``instructions`` and ``input``
  (token-id prompts are not text and are not checked). ``max_input`` counts their characters.
  A redaction rewrites the body in place, before routing; a block answers 400;
* on the answer through a response filter (``gateway.policy.guardrail_filters``), streamed or not.

A block is a 400 ``invalid_request_error`` with code ``guardrail_blocked`` naming the rule
kind and policy, never the matched text (mid-stream: one error event). Every block counts in
``llmops_policy_denials_total{reason="guardrail"}`` and goes to the audit log (``policy.denied``,
actor: the key id, detail: rule kind and policy) through ``gateway.policy.audit``, off the
request path. ``log`` rules, and redactions, are counted in the request's
``annotations["guardrails"]``; a ``log`` hit also writes a log line, without the text.

Cost when idle: rules are compiled once per policies snapshot object, off the request path
(``gateway.policy.guardrail_index``); with no guardrails in it, ``on_request`` is a few
attribute reads and ``response_filter`` returns None (the stream is relayed untouched).

Settings: ``failure`` (``closed``, the default: a guardrail that errors, e.g. a regex RE2
cannot run, answers 500 ``plugin_failed``; ``open``: the request goes on unguarded, logged)
and ``max_hold_chars``, the most of a stream held back for one unbounded pattern.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, NoReturn

import msgspec

from adapters.errors import InvalidRequest
from adapters.gateway_plugins import PluginHost, RequestContext, ResponseFilter
from gateway.policy.audit import Denial, DenialAudit
from gateway.policy.guardrail_filters import ChoicesFilter, ResponsesFilter
from gateway.policy.guardrail_index import LiveIndex
from gateway.policy.metrics import policy_metrics
from policies.guardrails import Blocked, Guardrails, Hit

__all__ = ["GuardrailBlocked", "GuardrailsPlugin", "GuardrailsSettings"]

log = logging.getLogger("llmops.guardrails")

NAME = "guardrails"
_PARAMS = {"chat": "messages", "completions": "prompt", "embeddings": "input", "responses": "input"}


class GuardrailsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    failure: Literal["closed", "open"] = "closed"
    max_hold_chars: Annotated[int, msgspec.Meta(ge=16, le=65536)] = 256


class GuardrailBlocked(InvalidRequest):
    """A guardrail refused the prompt or the answer (400, code ``guardrail_blocked``)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param, code="guardrail_blocked")


class _Request:
    """What the filters report to for one request: counts hits, turns a block into the 400."""

    __slots__ = ("_ctx", "_plugin")

    def __init__(self, plugin: GuardrailsPlugin, ctx: RequestContext) -> None:
        self._plugin, self._ctx = plugin, ctx

    def observe(self, hits: list[Hit]) -> None:
        self._plugin.observe(self._ctx, hits, "output")

    def deny(self, blocked: Blocked) -> NoReturn:
        self._plugin.deny(self._ctx, blocked, "output")


class GuardrailsPlugin:
    """See the module docstring. One instance per config generation."""

    Settings = GuardrailsSettings

    def __init__(self, settings: GuardrailsSettings | None = None, *, host: PluginHost | None = None) -> None:
        self.settings = settings or GuardrailsSettings()
        self.failure = self.settings.failure
        self._live = LiveIndex(self.settings.max_hold_chars)
        self._host = host
        self._metrics = policy_metrics(host.registry if host is not None else None)
        self._audit = DenialAudit(host.store if host is not None else None, action="policy.denied")

    def _guardrails(self, ctx: RequestContext) -> Guardrails | None:
        control = ctx.control
        snapshot = control.policies if control is not None else None
        live = self._live
        if snapshot is not live.seen:
            live.refresh(snapshot)
        if live.index is None:
            return None
        principal = ctx.principal
        return live.index.lookup(principal.team if principal is not None else None)

    def on_request(self, ctx: RequestContext) -> None:
        live, control = self._live, ctx.control
        if live.index is None and control is not None and control.policies is live.seen:
            return  # the idle path: no guardrails anywhere
        g = self._guardrails(ctx)
        if g is None or (g.input is None and g.max_input is None):
            return
        slots = list(_input_slots(ctx.body, ctx.endpoint))
        found: list[Hit] = []
        try:
            if g.max_input is not None:
                g.check_size(sum(len(holder[key]) for holder, key in slots))
            for holder, key in slots if g.input is not None else ():
                text = holder[key]
                new, hits = g.input.apply(text)  # type: ignore[union-attr]  # not None: see the loop
                if hits:
                    found += hits
                    if new is not text:
                        holder[key] = new
        except Blocked as b:
            self.deny(ctx, b, "input")
        if found:
            self.observe(ctx, found, "input")

    def response_filter(self, ctx: RequestContext) -> ResponseFilter | None:
        live, control = self._live, ctx.control
        if live.index is None and control is not None and control.policies is live.seen:
            return None
        if ctx.endpoint == "embeddings":
            return None
        g = self._guardrails(ctx)
        if g is None or g.output is None:
            return None
        if ctx.endpoint == "responses":
            return ResponsesFilter(g.output, _Request(self, ctx))
        return ChoicesFilter(g.output, _Request(self, ctx), chat=ctx.endpoint == "chat")

    def observe(self, ctx: RequestContext, hits: list[Hit], direction: str) -> None:
        """Count redactions and log hits in the request's annotations; log each ``log`` hit (no text)."""
        note = ctx.annotations.get(NAME) if ctx.annotations else None
        if note is None:
            ctx.annotate(NAME)
            note = ctx.annotations[NAME]  # type: ignore[index]  # annotate() created it
        for h in hits:
            field = f"{direction}_{'redacted' if h.action == 'redact' else 'logged'}"
            counts = note.setdefault(field, {})
            counts[h.describe()] = counts.get(h.describe(), 0) + 1
            if h.action == "log":
                log.info("guardrail matched (log only)", extra={"fields": {
                    "request_id": ctx.request_id, "policy": h.policy, "rule": h.kind, "entity": h.detail or None,
                    "direction": direction, "key_id": ctx.principal.key_id if ctx.principal else None}})

    def deny(self, ctx: RequestContext, blocked: Blocked, direction: str) -> NoReturn:
        """Count and audit a block, then refuse: the client learns the rule and policy, not the text."""
        hit = blocked.hit
        self._metrics.deny("guardrail")
        ctx.annotate(NAME, blocked=f"{direction}: {hit.describe()} (policy {hit.policy})")
        key_id = ctx.principal.key_id if ctx.principal is not None else None
        self._audit.record(Denial(
            at=time.time(), status=GuardrailBlocked.status, reason="guardrail",
            detail=f"guardrail {hit.describe()} on {direction} (policy {hit.policy!r})", request_id=ctx.request_id,
            resource=ctx.route_name or ctx.model or "-", endpoint=ctx.endpoint, key_id=key_id,
            actor_name=key_id or "anonymous"))
        detail = f"{hit.describe()} (policy {hit.policy!r})"
        if hit.kind == "max_input":
            detail = f"max_input ({blocked})"
        if direction == "input":
            raise GuardrailBlocked(f"Your request was blocked by a guardrail: {detail}.",
                                   param=_PARAMS.get(ctx.endpoint)) from None
        raise GuardrailBlocked(f"The response was blocked by a guardrail: {detail}.") from None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Compile the rules in force before the first request needs them; audit denials meanwhile."""
        warm = asyncio.create_task(self._live.warm(self._host.control)) if self._host is not None else None
        try:
            async with self._audit.running():
                yield
        finally:
            if warm is not None:
                warm.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warm


def _input_slots(body: dict[str, Any], endpoint: str) -> Iterator[tuple[Any, Any]]:
    """``(holder, key)`` for each prompt text: ``holder[key]`` is a str that a redaction replaces."""
    if endpoint == "chat":
        for message in body.get("messages") or ():
            if isinstance(message, dict):
                yield from _content(message, "content")
    elif endpoint == "responses":
        if isinstance(body.get("instructions"), str):
            yield body, "instructions"
        items = body.get("input")
        if isinstance(items, str):
            yield body, "input"
        elif isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    yield from _content(item, "content")
                    if isinstance(item.get("output"), str):  # a function_call_output
                        yield item, "output"
    else:  # completions `prompt`, embeddings `input`: a string or a list of strings (token ids are skipped)
        key = "prompt" if endpoint == "completions" else "input"
        value = body.get(key)
        if isinstance(value, str):
            yield body, key
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, str):
                    yield value, i


def _content(holder: dict[str, Any], key: str) -> Iterator[tuple[Any, Any]]:
    value = holder.get(key)
    if isinstance(value, str):
        yield holder, key
    elif isinstance(value, list):  # content parts: {"type": "text" | "input_text", "text": ...}
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part, "text"
