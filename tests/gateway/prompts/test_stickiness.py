"""Sticky assignment across processes: two ``llmops serve`` gateways on one PostgreSQL, and one of them
restarted, give every user the same variant (a stable hash of experiment id and unit; no store read)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.servers import free_port, start_postgres

MSG = [{"role": "user", "content": "hi"}]
USERS = [f"user-{i}" for i in range(30)]


def _serve(tmp_path: Path, name: str, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = tmp_path / f"{name}.yaml"
    route = {"targets": [{"provider": "mock", "model": "m"}]}
    path.write_text(yaml.safe_dump({
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(tmp_path / name), "modules": ["governance"]},
        "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
        "routes": [{"name": "chat", **route}, {"name": "chat-b", **route}, {"name": "chat-c", **route}],
        "prompts": {"experiments": [{
            "id": "sticky", "route": "chat", "state": "running", "allocation": 0.8,
            "variants": [{"name": "a"}, {"name": "b", "route": "chat-b", "weight": 2},
                         {"name": "c", "route": "chat-c"}]}]},
    }))
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=dict(os.environ))
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 60  # several processes starting on a busy 2-core machine
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{url} never came up: {proc.communicate()[1].decode()[-2000:]}")


def _variants(url: str) -> dict[str, str]:
    out = {}
    with httpx.Client(base_url=url, timeout=10) as client:
        for user in USERS:
            r = client.post("/v1/chat/completions", json={"model": "chat", "messages": MSG, "user": user})
            assert r.status_code == 200, r.text
            out[user] = f"{r.headers.get('x-llmops-variant', '-')}/{r.headers['x-llmops-route']}"
    return out


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        assert b"Traceback" not in err, err.decode()[-3000:]


def test_the_same_unit_gets_the_same_variant_on_two_processes_and_after_a_restart(tmp_path: Path) -> None:
    with start_postgres() as pg:
        database_url = pg.url(pg.create_database())
        a, url_a = _serve(tmp_path, "a", database_url)
        b, url_b = _serve(tmp_path, "b", database_url)
        try:
            _wait_ready(url_a, a)
            _wait_ready(url_b, b)
            first = _variants(url_a)
            assert _variants(url_b) == first
            _stop(a)
            a, url_a = _serve(tmp_path, "a2", database_url)
            _wait_ready(url_a, a)
            assert _variants(url_a) == first
        finally:
            _stop(a, b)
    # every arm and the share outside the allocation (the route as usual) are represented
    assert {"a/chat", "b/chat-b", "c/chat-c"} <= set(first.values())
    assert all(v in ("a/chat", "b/chat-b", "c/chat-c", "-/chat") for v in first.values())
