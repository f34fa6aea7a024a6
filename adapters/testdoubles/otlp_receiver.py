"""An OTLP/HTTP trace receiver (test double for an OpenTelemetry collector).

It serves `POST /v1/traces` on a real loopback socket, decodes each
`ExportTraceServiceRequest` protobuf (opentelemetry-proto, installed with the
OTLP exporter) and keeps the spans, flattened, for tests to read. It is not
exported from `adapters.testdoubles`: importing that package must not pull in
protobuf (the gateway imports it for the built-in mock upstream).
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from adapters.testdoubles.http_site import SiteServer

__all__ = ["OtlpReceiver", "ReceivedSpan", "start_otlp_receiver"]

_PROTOBUF = "application/x-protobuf"


@dataclass
class ReceivedSpan:
    """One span as the collector got it; ids in hex, times in ns since the epoch, `kind` and
    `status_code` as OTLP numbers (kind 3 = CLIENT; status 0 unset, 1 ok, 2 error)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, which)


def _attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        out[kv.key] = _value(kv.value)
    return out


class OtlpReceiver(SiteServer):
    """A running receiver; `status` other than 200 makes it refuse exports (an outage)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.spans: list[ReceivedSpan] = []
        self.headers: list[dict[str, str]] = []  # of each export request, lower-cased names
        self.status = 200
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """What `tracing.endpoint` takes (the OTLP/HTTP traces path included)."""
        return f"http://{self.host}:{self.port}/v1/traces"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        await self._serve(app, port)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ReceivedSpan]:
        """The spans, once at least `count` have arrived (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout_s):
            while len(self.spans) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.spans

    async def _export(self, request: web.Request) -> web.Response:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        if request.content_type != _PROTOBUF:
            return web.Response(status=415, text=f"only {_PROTOBUF} is served here")
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        for rs in message.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(ReceivedSpan(
                        name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(), kind=s.kind, start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano, attributes=_attributes(s.attributes),
                        status_code=s.status.code, status_message=s.status.message, resource=resource,
                        scope=ss.scope.name,
                    ))
        self._arrived.set()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type=_PROTOBUF)


async def start_otlp_receiver(host: str = "127.0.0.1", port: int = 0) -> OtlpReceiver:
    """Start on `host:port` (0 = a free port) and return once the socket accepts connections."""
    receiver = OtlpReceiver(host)
    await receiver.start(port)
    return receiver
