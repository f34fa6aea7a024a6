"""Build provider adapters and route tables from the typed config."""

from __future__ import annotations

from typing import TypedDict

from adapters.upstream import Balancer, OllamaUpstream, OpenAIUpstream, RandomBalancer, Timeouts, Upstream
from adapters.upstream.prefix_affinity import PrefixAffinity
from gateway.config import BUILTIN_MOCK, GatewayCfg, ProviderCfg, RouteCfg, TargetCfg, TimeoutsCfg
from gateway.routing import Route, RouteTable, Target

__all__ = ["build_balancer", "build_provider", "build_table"]


def _timeouts(*layers: TimeoutsCfg | None) -> Timeouts:
    for t in layers:
        if t is not None:
            return Timeouts(connect_s=t.connect_s, first_byte_s=t.first_byte_s, total_s=t.total_s)
    return Timeouts()


class _PoolArgs(TypedDict):
    """What every aiohttp-based adapter takes besides its name and URLs."""

    api_key: str | None
    headers: dict[str, str]
    max_connections: int
    breaker_threshold: int
    breaker_cooldown_s: float


def build_provider(cfg: ProviderCfg, mock_url: str | None = None) -> Upstream:
    urls = [mock_url if u == BUILTIN_MOCK and mock_url else u for u in cfg.urls()]
    common = _PoolArgs(
        api_key=cfg.api_key, headers=cfg.headers, max_connections=cfg.max_connections,
        breaker_threshold=cfg.breaker.failure_threshold, breaker_cooldown_s=cfg.breaker.cooldown_s,
    )
    if cfg.kind == "openai":
        return OpenAIUpstream(cfg.name, urls, stream_usage=cfg.stream_usage, **common)
    if cfg.kind == "ollama":
        return OllamaUpstream(cfg.name, urls, **common)
    from adapters.upstream.litellm_provider import LiteLLMUpstream

    return LiteLLMUpstream(
        cfg.name, api_base=urls[0] if urls else None, api_key=cfg.api_key, params=cfg.litellm_params,
        breaker_threshold=cfg.breaker.failure_threshold, breaker_cooldown_s=cfg.breaker.cooldown_s,
    )


def build_balancer(cfg: ProviderCfg, provider: Upstream, previous: Balancer | None = None) -> Balancer | None:
    """The provider's picker when its mode keeps state (random, prefix_affinity); None for the default
    least-loaded function, and for a single replica, where there is nothing to choose. `previous`: the
    provider's picker before a reload changed it; a prefix index is carried over for the replicas kept."""
    if len(provider.backends) < 2:
        return None
    if cfg.balance == "random":
        return RandomBalancer()
    if cfg.balance == "prefix_affinity":
        a = cfg.prefix_affinity
        picker = PrefixAffinity(
            [b.url for b in provider.backends], block_chars=a.block_chars, max_blocks=a.max_blocks,
            index_blocks=a.index_blocks, epsilon=a.epsilon, affinity=a.affinity, header=a.header,
        )
        if isinstance(previous, PrefixAffinity) and previous.block_chars == picker.block_chars:
            picker.adopt(previous)
        return picker
    return None


def build_table(
    cfg: GatewayCfg, providers: dict[str, Upstream], balancers: dict[str, Balancer] | None = None,
) -> RouteTable:
    """`balancers`: each provider's picker (build_balancer), kept across reloads with its provider."""
    by_name = {p.name: p for p in cfg.providers}
    balancers = balancers or {}
    routes: dict[str, Route] = {}
    for r in cfg.routes:
        def target(t: TargetCfg, r: RouteCfg = r) -> Target:
            return Target(providers[t.provider], t.model, t.weight, _timeouts(r.timeouts, by_name[t.provider].timeouts),
                          balancers.get(t.provider))

        routes[r.name] = Route(
            name=r.name, targets=tuple(target(t) for t in r.targets), fallbacks=tuple(target(t) for t in r.fallbacks),
            retries=r.retries, retry_backoff_s=r.retry_backoff_s, label=r.name, queue_timeout_s=r.queue_timeout_s,
        )
    return RouteTable(
        routes, providers, allow_direct=cfg.server.allow_direct,
        default_timeouts={p.name: _timeouts(p.timeouts) for p in cfg.providers}, balancers=balancers,
    )
