import random
from collections import Counter

import pytest

from adapters.errors import NotFound
from adapters.upstream import Timeouts
from gateway.routing import Route, RouteTable, Target


class P:
    def __init__(self, name: str) -> None:
        self.name = name


def _t(name: str, w: float = 1.0) -> Target:
    return Target(P(name), f"model-{name}", w, Timeouts())  # type: ignore[arg-type]


def test_plan_weighted_first_pick_then_rest_then_fallbacks() -> None:
    route = Route("r", (_t("a", 9), _t("b", 1)), fallbacks=(_t("x"), _t("y")))
    rng = random.Random(1)
    firsts = Counter()
    for _ in range(2000):
        order = [t.provider.name for t in route.plan(rng)]
        assert sorted(order[:2]) == ["a", "b"] and order[2:] == ["x", "y"]
        firsts[order[0]] += 1
    assert 0.85 < firsts["a"] / 2000 < 0.95


def test_resolve_route_direct_and_unknown() -> None:
    route = Route("r", (_t("a"),))
    table = RouteTable({"r": route}, {"prov": P("prov")})  # type: ignore[dict-item]
    assert table.resolve("r") is route
    direct = table.resolve("prov/some/model")
    assert direct.targets[0].model == "some/model" and direct.label == "prov/*"
    assert table.resolve("prov/some/model") is direct  # cached
    for bad in ("nope", "unknown/model", "prov/"):
        with pytest.raises(NotFound):
            table.resolve(bad)
    no_direct = RouteTable({"r": route}, {"prov": P("prov")}, allow_direct=False)  # type: ignore[dict-item]
    with pytest.raises(NotFound):
        no_direct.resolve("prov/x")
