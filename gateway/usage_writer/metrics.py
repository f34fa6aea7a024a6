"""The usage writer's Prometheus series, registered on the gateway's registry.

With several workers (prometheus-client's multiprocess mode, gateway/metrics.py) the metrics
write their own per-process files instead of registering: counters and the histogram are summed
over every worker that ran, the buffer gauge over live workers, and the spill-size and lag gauges
are the highest any live worker reports (the spill size is the whole directory's, the same for
all of them).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gateway.metrics import GatewayMetrics

__all__ = ["WriterMetrics"]

_WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WriterMetrics:
    def __init__(self, metrics: GatewayMetrics) -> None:
        r = None if metrics.shared_dir else metrics.registry
        self.buffer = Gauge("llmops_usage_buffer_records", "Usage records held in memory, not yet in the store.",
                            registry=r, multiprocess_mode="livesum")
        self.spill_bytes = Gauge("llmops_usage_spill_bytes",
                                 "Bytes of usage records in spill files, waiting for the store.",
                                 registry=r, multiprocess_mode="livemax")
        self.lag = Gauge("llmops_usage_writer_lag_seconds",
                         "Age of the oldest usage record the writer has not got into the store (0: none).",
                         registry=r, multiprocess_mode="livemax")
        self.written = Counter("llmops_usage_records_written", "Usage records written to the store by batches.",
                               registry=r)
        self.spilled = Counter("llmops_usage_records_spilled",
                               "Usage records written to a spill file (store down or slow, or buffer full).",
                               registry=r)
        self.replayed = Counter("llmops_usage_records_replayed",
                                "Usage records replayed from spill files into the store (already stored ones "
                                "included: they are skipped, not counted twice).", registry=r)
        self.write_seconds = Histogram("llmops_usage_batch_write_seconds",
                                       "Duration of one batch write to the store, failed ones included.",
                                       buckets=_WRITE_BUCKETS, registry=r)
        # Shared with the usage queue: one counter, one alert, for records lost anywhere in metering.
        self.dropped = metrics.usage_dropped
