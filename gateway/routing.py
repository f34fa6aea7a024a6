"""Resolve a requested model to a route and order its targets for one request.

A route's targets are tried in a weighted-random order (each request draws
without replacement), then its fallbacks in the configured order.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from adapters.errors import NotFound
from adapters.upstream import Balancer, Timeouts, Upstream

__all__ = ["Route", "RouteTable", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    provider: Upstream
    model: str
    weight: float
    timeouts: Timeouts
    balancer: Balancer | None = None  # None: the default least-loaded pick (adapters/upstream/balancer.py)


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    targets: tuple[Target, ...]
    fallbacks: tuple[Target, ...] = ()
    retries: int = 1
    retry_backoff_s: float = 0.05
    label: str = ""  # metrics label; bounded even when clients pick direct `provider/model` names
    # > 0: while no target has a ready replica (connections refused: scaled to zero), requests wait this long
    queue_timeout_s: float = 0.0

    def plan(self, rng: random.Random | None = None) -> Iterable[Target]:
        """The targets to try, in order: a weighted draw over `targets`, then `fallbacks`."""
        if len(self.targets) == 1:
            return self.targets + self.fallbacks if self.fallbacks else self.targets
        return self._weighted(rng)

    def _weighted(self, rng: random.Random | None) -> Iterator[Target]:
        draw = (rng or random).random
        pool = list(self.targets)
        while pool:
            total = sum(t.weight for t in pool)
            x = draw() * total
            for i, t in enumerate(pool):
                x -= t.weight
                if x < 0 or i == len(pool) - 1:
                    yield pool.pop(i)
                    break
        yield from self.fallbacks


class RouteTable:
    """Immutable once built; a reload builds a new table and swaps the reference."""

    def __init__(
        self,
        routes: dict[str, Route],
        providers: dict[str, Upstream],
        *,
        allow_direct: bool = True,
        default_timeouts: dict[str, Timeouts] | None = None,
        balancers: dict[str, Balancer] | None = None,
    ) -> None:
        self.routes = routes
        self.providers = providers
        self.allow_direct = allow_direct
        self._provider_timeouts = default_timeouts or {}
        self._balancers = balancers or {}
        self._direct: dict[str, Route] = {}

    def resolve(self, model: str) -> Route:
        route = self.routes.get(model)
        if route is not None:
            return route
        route = self._direct.get(model)
        if route is not None:
            return route
        if self.allow_direct and "/" in model:
            provider_name, _, upstream_model = model.partition("/")
            provider = self.providers.get(provider_name)
            if provider is not None and upstream_model:
                timeouts = self._provider_timeouts.get(provider_name, Timeouts())
                route = Route(name=model, targets=(Target(provider, upstream_model, 1.0, timeouts,
                                                    self._balancers.get(provider_name)),),
                              label=f"{provider_name}/*")
                if len(self._direct) < 4096:  # bounded: clients choose these names
                    self._direct[model] = route
                return route
        raise NotFound(f"The model `{model}` does not exist or is not routed", param="model", code="model_not_found")
