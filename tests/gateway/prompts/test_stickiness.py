"""Sticky assignment across processes: two ``llmops serve`` gateways on one PostgreSQL, and one of them
restarted, give every user the same variant (a stable hash of experiment id and unit; no store read)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from tests.serve_process import serve, stop, wait_ready
from tests.servers import start_postgres

MSG = [{"role": "user", "content": "hi"}]
USERS = [f"user-{i}" for i in range(30)]


def _serve(tmp_path: Path, name: str, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    route = {"targets": [{"provider": "mock", "model": "m"}]}
    return serve(tmp_path, name, {
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(tmp_path / name), "modules": ["governance"]},
        "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
        "routes": [{"name": "chat", **route}, {"name": "chat-b", **route}, {"name": "chat-c", **route}],
        "prompts": {"experiments": [{
            "id": "sticky", "route": "chat", "state": "running", "allocation": 0.8,
            "variants": [{"name": "a"}, {"name": "b", "route": "chat-b", "weight": 2},
                         {"name": "c", "route": "chat-c"}]}]},
    })


def _variants(url: str) -> dict[str, str]:
    out = {}
    with httpx.Client(base_url=url, timeout=10) as client:
        for user in USERS:
            r = client.post("/v1/chat/completions", json={"model": "chat", "messages": MSG, "user": user})
            assert r.status_code == 200, r.text
            out[user] = f"{r.headers.get('x-llmops-variant', '-')}/{r.headers['x-llmops-route']}"
    return out


def test_the_same_unit_gets_the_same_variant_on_two_processes_and_after_a_restart(tmp_path: Path) -> None:
    with start_postgres() as pg:
        database_url = pg.url(pg.create_database())
        a, url_a = _serve(tmp_path, "a", database_url)
        b, url_b = _serve(tmp_path, "b", database_url)
        try:
            wait_ready(url_a, a)
            wait_ready(url_b, b)
            first = _variants(url_a)
            assert _variants(url_b) == first
            stop(a)
            a, url_a = _serve(tmp_path, "a2", database_url)
            wait_ready(url_a, a)
            assert _variants(url_a) == first
        finally:
            stop(a, b)
    # every arm and the share outside the allocation (the route as usual) are represented
    assert {"a/chat", "b/chat-b", "c/chat-c"} <= set(first.values())
    assert all(v in ("a/chat", "b/chat-b", "c/chat-c", "-/chat") for v in first.values())
