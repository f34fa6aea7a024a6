"""The policy plug-ins' Prometheus metrics, created once per registry and shared by all of them.

Plug-ins are rebuilt with every config generation, and the auth, guardrails and limits plug-ins
count into the same series (``llmops_policy_denials_total{reason}``), so none of them may create
a metric itself: a second registration of a name in one registry fails. ``policy_metrics(registry)``
answers the same object for the same registry (``PluginHost.registry``; None under ``--workers``,
where metrics write per-process files and one object per process is what keeps them consistent).

Denial reasons are a small fixed vocabulary (the label must stay bounded): ``authentication``,
``permission``, ``model_not_allowed``, ``rate_limit_requests``, ``rate_limit_tokens``,
``concurrency``, ``budget``, ``max_tokens``, ``limiter_unavailable``, ``guardrail``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["PolicyMetrics", "policy_metrics"]


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.denials = Counter("llmops_policy_denials", "Data-plane requests refused by a policy plug-in, by reason.",
                               ["reason"], registry=registry)
        self.backend_errors = Counter(
            "llmops_ratelimit_backend_errors",
            "Rate-limit backend calls that failed (connection, timeout, script) or were skipped while it was down.",
            ["backend", "kind"], registry=registry)
        self.fallbacks = Counter(
            "llmops_ratelimit_decisions_without_backend",
            "Requests decided without the shared backend: refused (closed) or limited per replica (open).",
            ["mode"], registry=registry)
        self.reservations = Gauge(
            "llmops_ratelimit_reservations",
            "Reservations (limits, budgets) this replica holds for requests in flight.",
            registry=registry, multiprocess_mode="livesum")
        self.budget_alerts = Counter(
            "llmops_budget_alerts", "Budget alert thresholds crossed (once per budget, subject and period).",
            ["subject", "percent"], registry=registry)
        self.settlements_dropped = Counter(
            "llmops_ratelimit_settlements_dropped",
            "Settlements given up (backend down too long, queue full): their spend is missing from the shared total.",
            registry=registry)
        self._children: dict[tuple[Any, ...], Any] = {}

    def deny(self, reason: str) -> None:
        key = ("deny", reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.denials.labels(reason)
        child.inc()


_BY_REGISTRY: dict[int, tuple[CollectorRegistry | None, PolicyMetrics]] = {}


def policy_metrics(registry: CollectorRegistry | None) -> PolicyMetrics:
    """The one ``PolicyMetrics`` of ``registry`` (created on first use)."""
    found = _BY_REGISTRY.get(id(registry))
    if found is not None and found[0] is registry:
        return found[1]
    metrics = PolicyMetrics(registry)
    _BY_REGISTRY[id(registry)] = (registry, metrics)  # the registry is kept alive: its id stays its own
    return metrics
