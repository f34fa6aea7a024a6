"""GenAI spans from usage records, exported over OTLP/HTTP (imports the OpenTelemetry SDK).

Loaded by gateway/tracing.py only while tracing is on. Attributes follow the
OpenTelemetry GenAI semantic conventions (`gen_ai.*`), plus `llmops.*` for what
they have no name for. Each span is a root with kind CLIENT (the conventions'
kind for a call to a model), timed from the record: the request's wall-clock
start and its end-to-end latency. A private TracerProvider, never the global
one, so plug-ins' own tracing is left alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from adapters.usage import UsageRecord
from gateway.access import UNMATCHED
from gateway.config import TracingCfg

__all__ = ["OPERATIONS", "GenAISpans", "is_model_request", "span_attributes"]

OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings", "responses": "chat"}
"""`gen_ai.operation.name` per gateway endpoint (the Responses API is a chat turn)."""

_ROOT = Context()  # an empty context: every span is a root, whatever the worker thread carries


def is_model_request(r: UsageRecord) -> bool:
    """Whether a record is an OpenAI-endpoint request (routed or denied), not one of the other
    paths gateway/access.py records (probes, scrapes, the admin API: a path template as route)."""
    route = r.route
    return route == "-" or not (route.startswith("/") or route == UNMATCHED)


def span_attributes(r: UsageRecord) -> dict[str, Any]:
    """A record's span attributes; absent values (`-`, None) are left out."""
    failed = r.status >= 400 or r.error is not None
    a: dict[str, Any] = {
        "gen_ai.operation.name": OPERATIONS.get(r.endpoint, r.endpoint),
        "gen_ai.usage.input_tokens": r.prompt_tokens,
        "gen_ai.usage.output_tokens": r.completion_tokens,
        "http.response.status_code": r.status,
        "llmops.request_id": r.request_id,
        "llmops.route": r.route,
        "llmops.endpoint": r.endpoint,
        "llmops.status": r.status,
        "llmops.stream": r.stream,
        "llmops.attempts": r.attempts,
        "llmops.usage_source": r.usage_source,
        "llmops.usage.cached_read_tokens": r.cached_read_tokens,
        "llmops.usage.cache_write_tokens": r.cache_write_tokens,
        "llmops.usage.reasoning_tokens": r.reasoning_tokens,
    }
    if r.provider != "-":  # the configured provider's name (e.g. `vllm`, `openai`)
        a["gen_ai.provider.name"] = a["gen_ai.system"] = r.provider
    if r.model != "-":
        a["gen_ai.request.model"] = r.model
        if not failed:  # the model that answered: the target the gateway sent the request to
            a["gen_ai.response.model"] = r.model
    if failed:
        a["error.type"] = r.error or str(r.status)
    if r.record_id:
        a["llmops.record_id"] = r.record_id
    if r.ttft_s is not None:
        a["llmops.ttft_s"] = r.ttft_s
    if r.cost_usd is not None:
        a["llmops.cost_usd"] = float(r.cost_usd)
    if r.price_source is not None:
        a["llmops.price_source"] = r.price_source
    if r.variant is not None:
        a["llmops.variant"] = r.variant
    if r.principal is not None:
        a["llmops.key_id"] = r.principal.key_id
        if r.principal.team is not None:
            a["llmops.team"] = r.principal.team
    return a


class GenAISpans:
    """One TracerProvider with a BatchSpanProcessor over an OTLP/HTTP exporter. `export` is
    called in a worker thread; the processor's own thread does the network I/O."""

    def __init__(self, cfg: TracingCfg) -> None:
        self._ratio = cfg.sample_ratio
        self._provider = TracerProvider(
            sampler=ALWAYS_ON,  # `sample_ratio` is drawn in `export`, before any attribute is built
            resource=Resource.create({"service.name": cfg.service_name}),
            shutdown_on_exit=False,  # `shutdown` is called by the gateway; a reload must not leak atexit hooks
        )
        exporter = OTLPSpanExporter(endpoint=cfg.endpoint, headers=dict(cfg.headers), timeout=10)
        # A bigger queue and a shorter delay than the SDK's defaults (2048, 5 s): thousands of spans a
        # second would otherwise overflow it between exports.
        self._provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=16_384, schedule_delay_millis=1000, max_export_batch_size=512))
        self._tracer = self._provider.get_tracer("llmops.gateway")

    def export(self, records: Sequence[UsageRecord]) -> None:
        ratio, draw, tracer = self._ratio, random.random, self._tracer
        for r in records:
            if not is_model_request(r) or (ratio < 1.0 and draw() >= ratio):
                continue
            attributes = span_attributes(r)
            start_ns = int(r.ts * 1e9)
            model = attributes.get("gen_ai.request.model")
            name = attributes["gen_ai.operation.name"] + (f" {model}" if model else "")
            span = tracer.start_span(name, context=_ROOT, kind=SpanKind.CLIENT, attributes=attributes,
                                     start_time=start_ns)
            if "error.type" in attributes:
                span.set_status(Status(StatusCode.ERROR, r.error or f"HTTP {r.status}"))
            span.end(end_time=start_ns + int(r.latency_s * 1e9))

    def flush(self, timeout_s: float) -> bool:
        return self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Export what is queued, then stop the processor's thread."""
        self._provider.shutdown()
