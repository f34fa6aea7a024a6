"""Optional OpenTelemetry traces: one GenAI span per request, made from its usage record.

Spans are built on the usage worker from finished records (start at `record.ts`,
end `latency_s` later), in a thread, so the request path does no tracing work at
all. With `tracing.enabled: false`, the default, nothing from opentelemetry is
imported: this module only reads the config; gateway/genai_spans.py, which
imports the SDK, is loaded the first time a batch arrives with tracing on.

The consumer follows the live config (`tracing:` takes effect on reload): a
changed section shuts the old exporter down (flushing it) and builds a new one.

Not done: an incoming `traceparent` is not honoured (every span is a root). The
record would have to carry the raw header from the request path; see
docs/operations.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from adapters.upstream.urls import redact_url
from adapters.usage import UsageRecord
from gateway.config import ConfigError, TracingCfg

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from gateway.genai_spans import GenAISpans

__all__ = ["TracingConsumer", "check_tracing"]

log = logging.getLogger("llmops.tracing")

_EXTRA = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


def check_tracing(cfg: TracingCfg) -> None:
    """Raise ConfigError if tracing is on but cannot work: the `otel` extra missing, a bad ratio.
    Looks the packages up without importing them."""
    if not cfg.enabled:
        return
    if not 0.0 <= cfg.sample_ratio <= 1.0:
        raise ConfigError(f"$.tracing.sample_ratio: {cfg.sample_ratio} is not between 0 and 1")
    if not cfg.endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"$.tracing.endpoint: {redact_url(cfg.endpoint)!r} is not an http(s) URL (OTLP/HTTP, "
                          "e.g. http://collector:4318/v1/traces)")
    for name, value in cfg.headers.items():
        if any(c in name + value for c in "\r\n\0"):
            raise ConfigError(f"$.tracing.headers.{name.strip()}: must not contain control characters (CR, LF, NUL)")
    missing = [name for name in _EXTRA if _find_spec(name) is None]
    if missing:
        raise ConfigError("$.tracing.enabled: tracing needs the `otel` extra (opentelemetry-sdk, "
                          f"opentelemetry-exporter-otlp-proto-http); {', '.join(missing)} is not installed")


def _find_spec(name: str) -> object | None:
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:  # a parent package is missing
        return None


class TracingConsumer:
    """A usage consumer that exports one span per record while `current().enabled`."""

    def __init__(self, current: Callable[[], TracingCfg]) -> None:
        self._current = current  # the live config's section (it changes on reload)
        self._cfg: TracingCfg | None = None  # the section the exporter was built from
        self._spans: GenAISpans | None = None
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return self._spans is not None

    async def consume(self, records: Sequence[UsageRecord]) -> None:
        cfg = self._current()
        if cfg is not self._cfg:  # one identity check per batch while nothing changes
            await self._configure(cfg)
        spans = self._spans
        if spans is not None and records:
            await asyncio.to_thread(spans.export, records)

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Send what the batch processor holds now (tests; shutdown does it too)."""
        spans = self._spans
        return True if spans is None else await asyncio.to_thread(spans.flush, timeout_s)

    async def aclose(self) -> None:
        """Flush and stop the exporter (after the usage queue has drained)."""
        async with self._lock:
            spans, self._spans = self._spans, None
            if spans is not None:
                await asyncio.to_thread(spans.shutdown)

    async def _configure(self, cfg: TracingCfg) -> None:
        async with self._lock:
            before, self._cfg = self._cfg, cfg
            if before == cfg:  # an equal section from a reload: keep the running exporter
                return
            spans, self._spans = self._spans, None
            if spans is not None:
                await asyncio.to_thread(spans.shutdown)
            if not cfg.enabled:
                return
            try:
                check_tracing(cfg)
                self._spans = await asyncio.to_thread(_build, cfg)
            except ConfigError as exc:  # at boot check_tracing refuses it; after a reload, say so and stay off
                log.error("tracing stays off: %s", exc)
            else:
                log.info("tracing on: OTLP/HTTP spans to %s (sample ratio %s)", redact_url(cfg.endpoint),
                         cfg.sample_ratio)


def _build(cfg: TracingCfg) -> GenAISpans:
    from gateway.genai_spans import GenAISpans  # imports the SDK: only here, in a thread

    return GenAISpans(cfg)
