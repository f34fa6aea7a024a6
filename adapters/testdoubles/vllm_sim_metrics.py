"""A simulated replica's `GET /metrics` (a TEST DOUBLE): the Prometheus text format under vLLM's own metric
names and its `model_name` label, written by hand so each replica's numbers stay its own (prometheus_client's
registry is per process, and would add `_created` samples vLLM's scrapers never see from it)."""

from __future__ import annotations

from adapters.testdoubles.vllm_sim_replica import TTFT_BUCKETS, ReplicaEngine

__all__ = ["CONTENT_TYPE", "metrics_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FINISH_REASONS = ("stop", "length", "abort")


def _family(name: str, kind: str, help_text: str, samples: list[tuple[str, str, float]]) -> str:
    head = f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
    return head + "".join(f"{sample}{{{labels}}} {value!r}\n" for sample, labels, value in samples)


def metrics_text(engine: ReplicaEngine) -> str:
    label = f'model_name="{engine.params.model}"'
    slots = engine.slots
    usage = min(1.0, len(engine.cache) / engine.cache.capacity)

    def gauge(name: str, help_text: str, value: float) -> str:
        return _family(name, "gauge", help_text, [(name, label, float(value))])

    def counter(name: str, help_text: str, value: float) -> str:
        return _family(name + "_total", "counter", help_text, [(name + "_total", label, float(value))])

    success = [("vllm:request_success_total", f'finished_reason="{reason}",{label}',
                float(engine.success.get(reason, 0))) for reason in FINISH_REASONS]
    ttft = "vllm:time_to_first_token_seconds"
    buckets: list[tuple[str, str, float]] = []
    seen = 0
    for bound, count in zip((*map(repr, TTFT_BUCKETS), "+Inf"), engine.ttft_counts, strict=True):
        seen += count
        buckets.append((ttft + "_bucket", f'le="{bound}",{label}', float(seen)))
    buckets += [(ttft + "_count", label, float(seen)), (ttft + "_sum", label, engine.ttft_sum)]
    return "".join([
        gauge("vllm:num_requests_running", "Number of requests in model execution batches.", slots.running),
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", slots.waiting),
        gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", usage),
        gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage),
        counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                engine.prompt_tokens),
        counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                engine.cached_tokens),
        _family("vllm:request_success_total", "counter", "Count of successfully processed requests.", success),
        _family(ttft, "histogram", "Histogram of time to first token in seconds.", buckets),
    ])
