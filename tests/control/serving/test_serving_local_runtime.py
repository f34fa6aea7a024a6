"""The serving module on the real ``LocalRuntime``: each slot a server process on this machine (the mock
upstream, a test double answering as the served model). Deploy, answer, canary split, rollback stops the
canary's process, an image that cannot run fails visibly, delete stops the rest. SQLite only: the runtime,
not the database, is under test here."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from control.serving.runtimes import make_runtime
from tests.control.catalog._helpers import data
from tests.control.serving.serving_support import API, ServingApp, endpoint, model, published, serving_app

pytestmark = pytest.mark.timeout(180)
HI = [{"role": "user", "content": "Hi"}]


async def until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 45.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def settled(app: ServingApp, ep: str, status: str) -> dict[str, Any]:
    async def check() -> bool:
        await app.reconcile()
        return bool(data(await app.client.get(f"{API}/{ep}"))["status"] == status)

    await until(check, f"endpoint {ep} {status}")
    return data(await app.client.get(f"{API}/{ep}"))  # type: ignore[no-any-return]


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[ServingApp]:
    async with serving_app(f"sqlite+aiosqlite:///{tmp_path / 'llmops.db'}", tmp_path / "data",
                           runtime_factory=make_runtime, env={"SERVING_LOCAL_READY_TIMEOUT_S": "30"}) as running:
        yield running


async def test_deploy_canary_rollback_delete_on_real_processes(local: ServingApp) -> None:
    app = local
    m = await model(app, "smol")
    ep = (await endpoint(app, m["id"], "smol-chat", useGpu=False))["id"]
    ready = await settled(app, ep, "ready")
    stable_pid = ready["slots"]["stable"]["details"]["pid"]
    assert alive(stable_pid)
    snap = await published(app)
    (provider,) = snap.providers
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{provider.base_urls[0]}/chat/completions", json={"model": "smol", "messages": HI})
        assert answer.status_code == 200 and answer.json()["model"] == "smol"

        data(await app.client.post(f"{API}/{ep}/redeploy", json={"canaryPercent": 50}))
        split = await settled(app, ep, "ready")
        assert split["trafficSplit"] == {"1": 50, "2": 50}
        canary_pid = split["slots"]["canary"]["details"]["pid"]
        urls = {p.name: p.base_urls[0] for p in (await published(app)).providers}
        assert len(set(urls.values())) == 2
        for url in urls.values():
            assert (await http.post(f"{url}/chat/completions", json={"model": "smol", "messages": HI})).status_code \
                == 200

    back = data(await app.client.post(f"{API}/{ep}/rollback", json={}))
    assert back["canaryRevision"] is None and back["trafficSplit"] == {"1": 100}
    await until(lambda: _false(alive(canary_pid)), "the canary's process to stop")
    assert alive(stable_pid)

    bad = (await endpoint(app, m["id"], "bad-image", servingRuntimeImage="invalid/vllm:missing"))["id"]
    failed = await settled(app, bad, "failed")
    assert failed["statusReason"] == "ImageNotRunnable"

    result = data(await app.client.delete(f"{API}/{ep}"))
    assert result["deleted"] is True and result["resourcesDeleted"]
    await until(lambda: _false(alive(stable_pid)), "the stable process to stop")
    assert [r.name for r in (await published(app)).routes] == []


async def _false(value: bool) -> bool:
    return not value
