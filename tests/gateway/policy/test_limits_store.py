"""The limits plug-in with a control plane (SQLite): keys, teams and policies made through the admin REST
API and enforced with the real auth plug-in; refusals and budget alerts in the audit log; the spend so far
read back from the usage rollups after a restart."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from adapters.adminapi.testing import serve_asgi
from adapters.dataplane import usage_rollups
from adapters.testdoubles import FunctionUpstream, chat_completion
from gateway.app import create_app
from gateway.config import decode_config

ADMIN = {"authorization": "Bearer adm-secret"}
GOV = "/llm-ops/v1/governance"
MSG = [{"role": "user", "content": "hi"}]


def _cfg(tmp_path: Path) -> Any:
    return decode_config({
        "server": {"log_level": "warning"},
        "control": {"data_dir": str(tmp_path), "modules": ["governance"]},
        "providers": [{"name": "fn", "kind": "openai", "base_url": "http://fn.invalid"}],
        "routes": [{"name": "r", "targets": [{"provider": "fn", "model": "m0"}]}],
        "pricing": {"use_litellm_map": False,
                    "models": [{"provider": "fn", "model": "m0", "input_per_mtok": "1000000",
                                "output_per_mtok": "2000000"}]},  # $1 a prompt token, $2 a completion token
    })


async def _until(check: Any, within_s: float = 3.0) -> None:
    end = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < end, f"not seen within {within_s} s"
        await asyncio.sleep(0.02)


def _app(tmp_path: Path) -> Any:
    return create_app(_cfg(tmp_path), upstreams={"fn": FunctionUpstream(lambda c: chat_completion("ok", usage=(3, 5)))})


async def test_rest_made_limits_and_budgets_are_enforced_and_audited(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", "adm-secret")
    app = _app(tmp_path)
    async with serve_asgi(app, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=10) as h:
        team = (await h.post(f"{GOV}/teams", headers=ADMIN, json={"name": "research"})).json()["data"]["id"]
        made = (await h.post(f"{GOV}/keys", headers=ADMIN,
                             json={"name": "app", "teamId": team, "roles": ["inference"], "rpm": 3})).json()["data"]
        key = {"authorization": f"Bearer {made['key']}"}
        # an alert-only daily budget of $50 for the team, alerting at 40 %: each request costs $13
        r = await h.post(f"{GOV}/policies", headers=ADMIN, json={"name": "watch", "document": {
            "scope": {"teams": ["research"]},
            "budget": {"limitUsd": 50, "period": "daily", "onExceed": "alert", "alertAtPercent": [40]}}})
        assert r.status_code == 201, r.text

        async def chat() -> httpx.Response:
            return await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG, "max_tokens": 10},
                                headers=key)

        async def limited() -> bool:
            return "x-ratelimit-limit-requests" in (await chat()).headers

        await _until(limited)  # the keys and policies snapshots reached the generation (1st request)
        assert [(await chat()).status_code for _ in range(3)] == [200, 200, 429]  # the key's own rpm: 3
        refused = await chat()
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and "(key)" in error["message"]
        assert made["key"] not in refused.text

        async def audited(action: str) -> list[dict[str, Any]]:
            r = await h.get("/llm-ops/v1/audit/logs", headers=ADMIN, params={"action": action})
            return list(r.json()["data"]["items"])

        async def denied() -> bool:
            return bool(await audited("policy.denied"))

        await _until(denied)
        (entry,) = await audited("policy.denied")
        assert (entry["actorKeyId"], entry["statusCode"], entry["outcome"]) == (made["id"], 429, "denied")
        assert entry["detail"] == "rpm limit 3 (key)" and entry["requestId"]
        assert made["key"] not in str(entry)

        async def alerted() -> bool:
            return bool(await audited("gateway.budget.alert"))

        await _until(alerted)  # 3 requests x $13 = $39 > 40 % of $50
        (alert,) = await audited("gateway.budget.alert")
        assert alert["resourceId"] == "team=research" and alert["after"]["percent"] == 40
        assert alert["after"]["limitUsd"] == "50.00"
        metrics = (await h.get("/metrics")).text
        assert 'llmops_budget_alerts_total{percent="40",subject="team"} 1.0' in metrics
        assert 'llmops_policy_denials_total{reason="rate_limit_requests"}' in metrics


async def test_the_spend_so_far_survives_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", "adm-secret")
    first = _app(tmp_path)
    async with serve_asgi(first, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=10) as h:
        r = await h.post(f"{GOV}/policies", headers=ADMIN, json={"name": "cap", "document": {
            "budget": {"limitUsd": 100, "period": "monthly"}}})
        assert r.status_code == 201, r.text
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        async with first.state.control_plane.store.begin() as conn:
            # what anonymous requests spent before the restart, as the usage writer rolls it up ('': no team)
            await conn.execute(insert(usage_rollups).values(
                hour=hour, team="", key_id="", route="r", model="m0", provider="fn", variant="", endpoint="chat",
                requests=7, cost_usd=Decimal("90")))
    second = _app(tmp_path)
    async with serve_asgi(second, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=10) as h:
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG, "max_tokens": 10})
        assert r.status_code == 429, r.text  # $90 spent before the restart + a $25 worst case > $100
        assert "$90.00 spent" in r.json()["error"]["message"]
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG, "max_tokens": 2})
        assert r.status_code == 200  # a $9 worst case still fits
