"""Two ``llmops serve`` processes on one PostgreSQL: a key made through one replica's admin API works on
both, and its revocation is in force on both within 1 s (each follows the keys snapshot via LISTEN/NOTIFY)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.serve_process import serve, stop, until, wait_ready
from tests.servers import start_postgres

ADMIN = {"authorization": "Bearer adm-secret"}
GOV = "/llm-ops/v1/governance"
MSG = [{"role": "user", "content": "hi"}]


def _serve(tmp_path: Path, name: str, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    return serve(tmp_path, name, {
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(tmp_path / name), "modules": ["governance"]},
        "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
        "routes": [{"name": "r", "targets": [{"provider": "mock", "model": "m"}]}],
        "plugins": [{"name": "auth"}],
    }, env={"LLMOPS_ADMIN_KEY": "adm-secret"})


def _status(url: str, key: str | None = None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + "/v1/chat/completions", json={"model": "r", "messages": MSG}, headers=headers,
                      timeout=5).status_code


def test_a_revocation_is_in_force_on_both_replicas_within_1s(tmp_path: Path) -> None:
    with start_postgres() as pg:
        database_url = pg.url(pg.create_database())
        a, url_a = _serve(tmp_path, "a", database_url)
        b, url_b = _serve(tmp_path, "b", database_url)
        try:
            wait_ready(url_a, a)
            wait_ready(url_b, b)
            team = httpx.post(url_a + f"{GOV}/teams", headers=ADMIN, json={"name": "apps"}).json()["data"]["id"]
            made = httpx.post(url_a + f"{GOV}/keys", headers=ADMIN,
                              json={"name": "app", "teamId": team, "roles": ["inference"]})
            assert made.status_code == 201, made.text
            key, key_id = made.json()["data"]["key"], made.json()["data"]["id"]
            for url in (url_a, url_b):
                until(lambda u=url: _status(u) == 401, 1.0)  # type: ignore[misc]
                assert _status(url, key) == 200
            r = httpx.post(url_a + f"{GOV}/keys/{key_id}/revoke", headers=ADMIN)
            assert r.status_code == 200, r.text
            revoked_at = time.monotonic()
            for url in (url_a, url_b):
                until(lambda u=url: _status(u, key) == 401, 1.0)  # type: ignore[misc]
            took = time.monotonic() - revoked_at
            print(f"revocation in force on both replicas after {took:.3f} s")
            assert took < 1.0
            for url in (url_a, url_b):
                assert _status(url) == 401  # still required: a key was issued
        finally:
            stop(a, b)
