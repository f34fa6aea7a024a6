"""Helpers for the limits plug-in's tests: snapshots, a principal-setting plug-in, a priced config."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from adapters.gateway_plugins import Principal, RequestContext
from adapters.snapshots import ControlSnapshots, KeySpec, KeysSnapshot, PoliciesSnapshot, PolicySpec, TeamSpec
from policies.documents import PolicyDocument
from tests.gateway.inprocess import fn_config

MSG = [{"role": "user", "content": "hi"}]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Who:
    """Stands in for the auth plug-in: the bearer token is the key id, ``x-team`` the team."""

    name = "who"

    def on_request(self, ctx: RequestContext) -> None:
        token = ctx.headers.get("authorization", "").removeprefix("Bearer ")
        if token:
            ctx.principal = Principal(key_id=token, team=ctx.headers.get("x-team"))


def as_key(key_id: str, team: str | None = None) -> dict[str, str]:
    return {"authorization": f"Bearer {key_id}", **({"x-team": team} if team else {})}


def policies(*docs: dict[str, Any], generation: int = 1) -> PoliciesSnapshot:
    return PoliciesSnapshot(generation=generation, published_at=NOW, policies=[
        PolicySpec(id=f"pol{i}", name=f"policy-{i}", version=1, document=msgspec.convert(d, PolicyDocument))
        for i, d in enumerate(docs)])


def keys(*specs: KeySpec, teams: tuple[TeamSpec, ...] = (), generation: int = 1) -> KeysSnapshot:
    return KeysSnapshot(generation=generation, published_at=NOW, teams=list(teams), keys=list(specs))


def key(key_id: str, team_id: str = "t1", **fields: Any) -> KeySpec:
    return KeySpec(id=key_id, team_id=team_id, secret_sha256="0" * 64, roles=["inference"], **fields)


def team(team_id: str, name: str, **fields: Any) -> TeamSpec:
    return TeamSpec(id=team_id, name=name, **fields)


def publish(gw: Any, *, keys_snapshot: KeysSnapshot | None = None, policies_snapshot: PoliciesSnapshot | None = None,
            ) -> None:
    """What the control plane's follower does: swap ``gen.control`` (one reference)."""
    gw.generation.control = ControlSnapshots(keys=keys_snapshot, policies=policies_snapshot)


def limits_of(gw: Any) -> Any:
    """The running generation's limits plug-in instance."""
    return next(p.instance for p in gw.generation.plugins.plugins if p.name == "limits")


def limits_config(*routes: tuple[str, str], price: tuple[str, str] | None = ("1000000", "2000000"),
                  **settings: Any) -> dict[str, Any]:
    """Route(s) on provider ``fn`` with the limits plug-in; ``price``: $ per million input/output
    tokens of every model on ``fn`` (the default: $1 a prompt token, $2 a completion token)."""
    # `Who` stands in for the built-in auth plug-in (its fake keys would be refused by the real one)
    cfg = fn_config(*routes, plugins=[{"name": "limits", "settings": settings}, {"name": "auth", "enabled": False}])
    pricing: dict[str, Any] = {"use_litellm_map": False}
    if price is not None:
        models = [m for _, m in routes] or ["m0"]
        pricing["models"] = [{"provider": "fn", "model": m, "input_per_mtok": price[0],
                              "output_per_mtok": price[1]} for m in models]
    cfg["pricing"] = pricing
    return cfg
