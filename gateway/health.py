"""What `/readyz` tells anyone, and what only an admin key may see.

Anonymous callers get the overall state and, per route, whether any of its
targets could take a request now: enough for a load balancer or a client's
retry logic. Upstream URLs, replicas and breaker states are internals (and the
URLs are the operator's), so they are answered only on the admin API
(`GET /llm-ops/v1/gateway/upstreams`), with URLs redacted all the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.upstream.urls import redact_url

if TYPE_CHECKING:
    from gateway.control_state import ControlState
    from gateway.routing import Route
    from gateway.state import Generation

__all__ = ["backend_label", "plugin_readiness", "public_readiness", "upstream_detail"]


def backend_label(index: int) -> str:
    """The `backend` label of per-replica metrics: the replica's position in the provider's
    URL list. Never the URL itself: /metrics is scraped into Prometheus and often public."""
    return str(index)


def _route_ready(route: Route) -> bool:
    return any(b.breaker.available() for t in (*route.targets, *route.fallbacks) for b in t.provider.backends)


def public_readiness(gen: Generation, control: ControlState | None = None) -> dict[str, Any]:
    """`{"status": "ready", "routes": {name: "ready" | "unavailable"}}`: no URLs, no providers.

    With a control plane, also `"control": {"staleness_s", "generations", "feed"}`: how old the
    snapshots in force are. The status stays "ready" whatever the database does: the gateway
    serves from its last snapshots, and readiness must never depend on the database."""
    routes = {name: "ready" if _route_ready(r) else "unavailable" for name, r in gen.table.routes.items()}
    out: dict[str, Any] = {"status": "ready", "routes": routes}
    if control is not None:
        out["control"] = control.status()
    if plugins := plugin_readiness(gen):
        out["plugins"] = plugins
    return out


def plugin_readiness(gen: Generation) -> dict[str, Any]:
    """What plug-ins with a ``readiness()`` method report (e.g. limits: its backend's state), by name;
    a plug-in answering None is left out.

    Detail only: a plug-in's state never turns the gateway unready, so a flaky dependency of one
    plug-in cannot make load balancers flap. A report that fails is shown as such, not raised."""
    out: dict[str, Any] = {}
    for p in gen.plugins.plugins:
        report = getattr(p.instance, "readiness", None)
        if report is None:
            continue
        try:
            status = report()
        except Exception as exc:  # a broken report must not break /readyz: say so instead
            status = {"state": "unknown", "error": type(exc).__name__}
        if status is not None:  # None: nothing worth saying
            out[p.name] = status
    return out


def upstream_detail(gen: Generation) -> dict[str, Any]:
    """Per provider and replica: redacted URL, breaker state, consecutive failures, requests in flight."""
    return {
        name: [
            {"backend": backend_label(i), "url": redact_url(b.url), "circuit": b.breaker.state.name.lower(),
             "failures": b.breaker.failures, "inflight": b.inflight}
            for i, b in enumerate(p.backends)
        ]
        for name, p in gen.providers.items()
    }
