"""Two ``llmops serve`` processes share one Redis and one control plane (PostgreSQL): one global
requests-per-minute limit and one tokens-per-minute limit for a key, whichever process serves it,
and a concurrency slot held by a process killed with SIGKILL expires instead of leaking."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import yaml

from adapters.testdoubles.mock_upstream import MockConfig, start_mock_upstream
from tests.servers import PostgresServer, RedisServer, free_port

PLUGIN_PKG = Path(__file__).resolve().parents[1] / "plugin_pkg"  # require-key: bearer token -> principal
ADMIN = {"authorization": "Bearer adm-secret"}
MSG = [{"role": "user", "content": "hi"}]
TEAMS = {"rpm": "rpm-team", "tpm": "tpm-team", "conc": "conc-team"}


def _serve(tmp: Path, name: str, database_url: str, redis_url: str, upstream: str, prefix: str,
           ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"log_level": "warning", "control_refresh_s": 0.2},
        "control": {"database_url": database_url, "data_dir": str(tmp / name), "modules": ["governance"]},
        "metering": {"enabled": False},
        "providers": [{"name": "up", "kind": "openai", "base_url": upstream}],
        "routes": [{"name": "r", "targets": [{"provider": "up", "model": "m"}]}],
        "plugins": [{"name": "require-key", "settings": {"keys": TEAMS}},
                    {"name": "limits", "settings": {"backend": "redis", "redis_url": redis_url, "key_prefix": prefix,
                                                    "reservation_ttl_s": 3}}],
    }))
    env = {**os.environ, "LLMOPS_ADMIN_KEY": "adm-secret",
           "PYTHONPATH": os.pathsep.join([str(PLUGIN_PKG), os.environ.get("PYTHONPATH", "")])}
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env)
    return proc, f"http://127.0.0.1:{port}"


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _ready(client: httpx.AsyncClient, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        assert proc.poll() is None, _tail(log)
        try:
            if (await client.get(url + "/readyz", timeout=1)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never came up: {_tail(log)}")


async def _policies_seen(client: httpx.AsyncClient, url: str, generation: int) -> None:
    end = time.monotonic() + 10
    while (await client.get(url + "/readyz")).json().get("control", {}).get("generations", {}).get(
            "policies", 0) < generation:
        assert time.monotonic() < end, f"{url} did not see policies generation {generation}"
        await asyncio.sleep(0.05)


async def _burst(client: httpx.AsyncClient, urls: list[str], token: str, n: int, **body: Any) -> list[httpx.Response]:
    """n requests at once, alternating between the gateways."""
    return list(await asyncio.gather(*(
        client.post(urls[i % len(urls)] + "/v1/chat/completions", json={"model": "r", "messages": MSG, **body},
                    headers={"authorization": f"Bearer {token}"}, timeout=30) for i in range(n))))


async def test_two_processes_enforce_one_global_rpm_and_tpm_and_a_crashed_slot_expires(
        tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer) -> None:
    database = postgres_server.create_database()
    mock = await start_mock_upstream(MockConfig(latency_s=1.0, completion_tokens=8))  # nothing settles mid-burst
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    procs = []
    try:
        for name in ("a", "b"):
            procs.append(_serve(tmp_path, name, postgres_server.url(database), redis_server.url, mock.url, prefix))
        async with httpx.AsyncClient() as client:
            for (proc, url), name in zip(procs, "ab", strict=True):
                await _ready(client, url, proc, tmp_path / f"{name}.log")
            urls = [url for _, url in procs]
            for team, document in [
                    ("rpm-team", {"limits": {"requestsPerMinute": 10}}),
                    ("tpm-team", {"limits": {"tokensPerMinute": 550}}),
                    ("conc-team", {"limits": {"maxConcurrentRequests": 1}})]:
                r = await client.post(urls[0] + "/llm-ops/v1/governance/policies", headers=ADMIN,
                                      json={"name": f"p-{team}", "document": {"scope": {"teams": [team]}, **document}})
                assert r.status_code == 201, r.text
            for url in urls:
                await _policies_seen(client, url, 4)  # start-up's empty snapshot, then one per policy

            rpm = await _burst(client, urls, "rpm", 30, max_tokens=1)
            ok = [r for r in rpm if r.status_code == 200]
            assert 10 <= len(ok) <= 11, [r.status_code for r in rpm]
            assert {r.status_code for r in rpm} == {200, 429}
            assert {r.headers["x-llmops-route"] for r in ok} == {"r"}
            served_by_both = {int(r.headers["x-ratelimit-remaining-requests"]) for r in ok}
            assert len(served_by_both) >= 9  # one bucket: each answer saw a different count left

            # 55 tokens a request (a 5-token prompt estimate + max_tokens 50): 550 fit 10, across both
            tpm = await _burst(client, urls, "tpm", 30, max_tokens=50)
            assert 10 <= sum(r.status_code == 200 for r in tpm) <= 11, [r.status_code for r in tpm]
            refused = next(r for r in tpm if r.status_code == 429)
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.headers["x-ratelimit-limit-tokens"] == "550"

            # a concurrency slot held by a process that is then killed: refused elsewhere until it expires
            mock.config = msgspec.structs.replace(mock.config, latency_s=30.0)
            before = len(mock.requests)
            held = asyncio.create_task(client.post(urls[0] + "/v1/chat/completions", timeout=60, json={
                "model": "r", "messages": MSG}, headers={"authorization": "Bearer conc"}))
            end = time.monotonic() + 10
            while len(mock.requests) == before:  # the slot is taken once the request reached the upstream
                assert time.monotonic() < end
                await asyncio.sleep(0.02)
            (r,) = await _burst(client, urls[1:], "conc", 1)
            assert r.status_code == 429 and r.json()["error"]["code"] == "concurrency_limit_exceeded"
            procs[0][0].send_signal(signal.SIGKILL)
            procs[0][0].wait()
            killed_at = time.monotonic()
            mock.config = msgspec.structs.replace(mock.config, latency_s=0.0)
            while True:  # the slot's reservation_ttl_s is 3 s
                (r,) = await _burst(client, urls[1:], "conc", 1)
                if r.status_code == 200:
                    break
                assert time.monotonic() - killed_at < 6, "the dead process's slot never expired"
                await asyncio.sleep(0.2)
            assert time.monotonic() - killed_at > 1  # it was held, then expired
            with contextlib.suppress(httpx.HTTPError):  # its gateway died under it
                await held
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        await mock.stop()
        postgres_server.drop_database(database)
