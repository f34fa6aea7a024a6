"""Usage accounting: every response, streamed or not, ends in one UsageRecord.

The request path only builds the record and appends it; a background worker
counts missing tokens and hands batches to the consumers (a log line and
Prometheus today; the store-backed meter later), then gives each record whose
request has `on_finish` plug-in hooks to them, with its final token counts, on
the request context (`ctx.usage`): nobody re-parses a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec

from adapters.gateway_plugins import RequestContext
from adapters.upstream import Usage
from adapters.upstream.usage_wire import WireUsage, to_usage
from adapters.usage import UsageRecord
from gateway.metrics import GatewayMetrics
from gateway.tokens import counter_for, estimate_tokens

__all__ = [
    "FinishBatch", "FinishHook", "LogConsumer", "MetricsConsumer", "Pricer", "StreamMeter", "UsageConsumer",
    "UsageQueue", "UsageRecord",
]

Pricer = Callable[[list[UsageRecord]], None]
"""Prices a batch in place (`UsageRecord.cost_usd`, `price_source`); must not block on I/O."""
FinishHook = Callable[[RequestContext, UsageRecord], Awaitable[None]]
FinishBatch = Callable[[list[tuple[Any, RequestContext, UsageRecord]]], Awaitable[None]]
"""Given `(hook, ctx, record)` entries that all name it (one generation's plug-ins): one call per batch."""

log = logging.getLogger("llmops.access")


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    usage: WireUsage | None = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


class StreamMeter:
    """Watches relayed chunks: first-token time, text, usage; drops the usage
    chunk we asked the upstream for when the client did not ask for it.

    Usage is read from whichever chunk carries it, also one with choices (vLLM's continuous
    usage puts a running total on every chunk, litellm and some proxies put the final one on
    the finish chunk): the last report wins. It is normalised (`usage_wire.to_usage`) once, when
    read at the end, not per chunk."""

    __slots__ = ("_keep_usage_chunk", "_parts", "_wire", "error", "first_token_at")

    def __init__(self, client_wants_usage: bool) -> None:
        self._keep_usage_chunk = client_wants_usage
        self._parts: list[str] = []
        self._wire: WireUsage | None = None
        self.first_token_at: float | None = None
        self.error: Any = None

    @property
    def usage(self) -> Usage | None:
        return None if self._wire is None else to_usage(self._wire)

    def feed(self, payload: bytes) -> bool:
        """Account one chunk; return whether to forward it. Raises ValueError if malformed."""
        try:
            chunk = _decode_chunk(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError("malformed stream chunk") from exc
        if chunk.error is not None:
            self.error = chunk.error
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                self._parts.append(choice.delta.content)
        if chunk.usage is not None:
            self._wire = chunk.usage
            if not chunk.choices and not self._keep_usage_chunk:
                return False
        return True

    @property
    def text(self) -> str:
        return "".join(self._parts)


class UsageConsumer(Protocol):
    """Receives finished records in batches, off the request path."""

    async def consume(self, records: Sequence[UsageRecord]) -> None: ...


class LogConsumer:
    """One structured access line per request."""

    async def consume(self, records: Sequence[UsageRecord]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        for r in records:
            log.info(
                "request",
                extra={"fields": {
                    "request_id": r.request_id, "endpoint": r.endpoint, "route": r.route, "provider": r.provider,
                    "model": r.model,
                    "stream": r.stream, "status": r.status, "latency_ms": round(r.latency_s * 1000, 3),
                    "ttft_ms": None if r.ttft_s is None else round(r.ttft_s * 1000, 3), "attempts": r.attempts,
                    "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "usage_source": r.usage_source, "error": r.error,
                    "principal": None if r.principal is None else r.principal.key_id, **r.tags,
                }},
            )


class MetricsConsumer:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._m = metrics

    async def consume(self, records: Sequence[UsageRecord]) -> None:
        self._m.stats.observe_many(records)


def _count_all(records: list[UsageRecord]) -> None:
    for r in records:
        _count_missing(r)


def _count_missing(r: UsageRecord) -> None:
    """Count a record whose upstream reported no usage, with the model's tokenizer (usage_source
    stays `counted`), else ~4 characters per token (`estimated`, and a warning once).

    Chat messages follow OpenAI's own recipe (3 tokens per message, its role and content, a
    name's extra token, 3 priming the reply); completions' `prompt` and embeddings' `input`
    (a string, strings or token ids) are their text's tokens, or the ids themselves."""
    if r.usage_source != "counted":
        return
    counter = counter_for(r.model)
    count = estimate_tokens if counter is None else counter
    prompt = r.prompt_messages
    tokens = messages = 0
    # chat `messages`; completions' `prompt` / embeddings' `input`: a string, strings or token
    # ids; the Responses API's `input`: a string or message items
    for m in [prompt] if isinstance(prompt, str) else prompt or []:
        if isinstance(m, str):
            tokens += count(m) if m else 0
        elif isinstance(m, int):
            tokens += 1
        elif isinstance(m, list) and all(isinstance(t, int) for t in m):
            tokens += len(m)
        elif isinstance(m, dict):
            messages += 1
            tokens += 3 + sum(count(v) for k in ("role", "name") if isinstance(v := m.get(k), str) and v)
            tokens += 1 if isinstance(m.get("name"), str) else 0
            content = m.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict)
                                  and isinstance(p.get("text"), str))
            if isinstance(content, str) and content:
                tokens += count(content)
    r.prompt_tokens = tokens + (3 if messages else 0)
    r.completion_tokens = count(r.completion_text) if r.completion_text else 0
    r.prompt_messages = None
    r.completion_text = None
    if counter is None:  # characters / 4: say so, or a meter would bill guesses as counts
        r.usage_source = "estimated"


class UsageQueue:
    """A bounded buffer plus the worker that flushes it in batches.

    `record` is a list append: no future, no task wake-up per request. The worker
    wakes every `flush_interval_s` (or as soon as a batch fills) and hands the
    whole batch to each consumer.
    """

    def __init__(
        self,
        consumers: Sequence[UsageConsumer],
        metrics: GatewayMetrics,
        maxsize: int = 100_000,
        flush_interval_s: float = 0.05,
        batch_size: int = 1024,
    ) -> None:
        self._consumers = list(consumers)
        self._metrics = metrics
        self._maxsize = maxsize
        self._interval_s = flush_interval_s
        self._batch_size = batch_size
        self._buffer: list[UsageRecord] = []
        self._finishing: list[tuple[FinishBatch, RequestContext, UsageRecord]] = []
        self._wake = asyncio.Event()
        self._passed = asyncio.Event()  # set after each pass of the worker; `drain` waits on it
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        self._pricer: Pricer | None = None

    def set_pricer(self, pricer: Pricer | None) -> None:
        """Called on the worker for each batch once its tokens are final, before any consumer
        sees it: sets `cost_usd` / `price_source` (swapped on reload with the pricing config)."""
        self._pricer = pricer

    def record(self, rec: UsageRecord) -> None:
        buf = self._buffer
        if len(buf) >= self._maxsize:
            self._metrics.usage_dropped.inc()
            return
        buf.append(rec)
        if len(buf) == self._batch_size:
            self._wake.set()

    def record_finished(self, rec: UsageRecord, ctx: RequestContext, finish: FinishHook) -> None:
        """`record`, then `await finish(ctx, rec)` on the worker once the tokens are final
        (a coroutine per record: plug-ins' hooks go through `record_finished_batch`)."""

        async def one(items: list[tuple[Any, RequestContext, UsageRecord]]) -> None:
            for _, c, r in items:
                await finish(c, r)

        self.record_finished_batch(rec, ctx, one)

    def record_finished_batch(self, rec: UsageRecord, ctx: RequestContext, finish: FinishBatch) -> None:
        """`record`, then, on the worker once the tokens are final, `await finish(entries)` once
        for each run of consecutive requests that passed the same `finish` (`ctx.usage` set).

        Only requests with `on_finish` hooks come here. The hook runs even when the record itself
        was dropped for a full buffer: it settles reservations, which must not leak."""
        self.record(rec)
        self._finishing.append((finish, ctx, rec))
        if len(self._finishing) == self._batch_size:
            self._wake.set()

    def add_consumer(self, consumer: UsageConsumer) -> None:
        self._consumers.append(consumer)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llmops-usage-worker")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what is buffered (bounded by timeout), then stop the worker."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self) -> None:
        """Wait until every buffered record was consumed (tests, shutdown)."""
        while self._buffer or self._finishing or self._flushing:
            self._passed.clear()
            self._wake.set()
            await self._passed.wait()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            while self._buffer or self._finishing:
                batch, self._buffer = self._buffer, []
                finishing, self._finishing = self._finishing, []
                self._flushing = True
                try:
                    await self._flush(batch)
                    await _finish_all(finishing)
                finally:
                    self._flushing = False
            self._passed.set()

    async def _flush(self, batch: list[UsageRecord]) -> None:
        counted = [r for r in batch if r.usage_source == "counted" and r.prompt_messages is not None]
        if counted:
            await asyncio.to_thread(_count_all, counted)
        if self._pricer is not None:
            try:
                self._pricer(batch)
            except Exception:  # unpriced (cost null, counted as such) beats unrecorded
                logging.getLogger("llmops.metering").exception("pricing failed for %d record(s)", len(batch))
        for c in self._consumers:
            try:
                await c.consume(batch)
            except Exception:  # one broken consumer must not stop accounting for the rest
                logging.getLogger("llmops.metering").exception("usage consumer %r failed", c)


async def _finish_all(finishing: list[tuple[FinishBatch, RequestContext, UsageRecord]]) -> None:
    """Each run of entries naming the same batch hook (one generation's plug-ins) in one call."""
    hook: FinishBatch | None = None
    start = 0
    for i, (finish, ctx, rec) in enumerate(finishing):
        if rec.usage_source == "counted" and rec.prompt_messages is not None:  # dropped from the batch
            await asyncio.to_thread(_count_missing, rec)
        ctx.usage = rec
        if finish is not hook:
            if hook is not None:
                await _finish_run(hook, finishing[start:i])
            hook, start = finish, i
    if hook is not None:
        await _finish_run(hook, finishing if start == 0 else finishing[start:])


async def _finish_run(hook: FinishBatch, entries: list[tuple[FinishBatch, RequestContext, UsageRecord]]) -> None:
    try:
        await hook(entries)
    except Exception:  # the hook runner logs plug-in failures itself; this is its own bug
        logging.getLogger("llmops.metering").exception("on_finish hooks failed for %d request(s)", len(entries))
