"""Config reload: atomic swap, in-flight requests survive, bad configs are refused, SIGHUP and admin call."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import pytest
import yaml

from adapters.adminapi.testing import serve_asgi
from gateway.app import create_app
from gateway.config import ConfigError, decode_config
from tests.conftest import free_port, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]


async def test_reload_swaps_routes_and_keeps_inflight_stream(mock, mock2) -> None:
    mock.config = msgspec.structs.replace(mock.config, tokens_per_s=40, completion_tokens=20)  # ~0.5 s stream
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url, timeout=10) as h:
        async def slow_stream() -> str:
            r = await h.post("/v1/chat/completions", json={"model": "r", "stream": True, "messages": MSG})
            return r.text

        task = asyncio.create_task(slow_stream())
        async with asyncio.timeout(5):
            while mock.active < 1:
                await asyncio.sleep(0.01)
        new = simple_config(mock2.url)
        new["routes"].append({"name": "extra", "targets": [{"provider": "p0", "model": "x"}]})
        await g.gateway.reload(decode_config(new))
        text = await task
        assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text
        assert len(text.split("data: ")) > 20
        models = (await h.get("/v1/models")).json()
        assert sorted(m["id"] for m in models["data"]) == ["extra", "r"]
        await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert len(mock2.requests) == 1 and len(mock.requests) == 1


async def test_invalid_reload_keeps_old_config(mock, tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(simple_config(mock.url)))
    os.environ["LLMOPS_ADMIN_KEY"] = "adm-secret"
    try:
        async with run_gateway(decode_config(simple_config(mock.url)), config_path=path) as g, \
                httpx.AsyncClient(base_url=g.url) as h:
            path.write_text("routes: [{name: r, targets: [{provider: ghost, model: m}]}]")
            with pytest.raises(ConfigError):
                await g.gateway.reload()
            assert g.gateway.metrics.reloads.labels("error")._value.get() == 1
            r = await h.post("/llm-ops/v1/gateway/reload", headers={"authorization": "Bearer adm-secret"})
            assert r.status_code == 400, r.text
            assert r.json()["status"] == "fail" and "unknown provider" in r.json()["message"]
            assert (await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})).status_code == 200
            r = await h.post("/llm-ops/v1/gateway/reload", headers={"authorization": "Bearer wrong"})
            assert r.status_code == 401 and r.json()["status"] == "fail"
            cfg = simple_config(mock.url)
            cfg["routes"][0]["name"] = "renamed"
            path.write_text(yaml.safe_dump(cfg))
            r = await h.post("/llm-ops/v1/gateway/reload", headers={"authorization": "Bearer adm-secret"})
            assert r.status_code == 200, r.text
            assert r.json() == {"status": "success", "message": "config reloaded",
                                "data": {"routes": ["renamed"], "providers": ["p0"]}}
            assert [m["id"] for m in (await h.get("/v1/models")).json()["data"]] == ["renamed"]
    finally:
        del os.environ["LLMOPS_ADMIN_KEY"]


def _wait_http(url: str, deadline_s: float = 20) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never came up")


def test_cli_serve_with_config_reloads_on_sighup(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "gw.yaml"
    cfg = {"providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
           "routes": [{"name": "one", "targets": [{"provider": "mock", "model": "m"}]}]}
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/readyz")
        cfg["routes"][0]["name"] = "two"
        path.write_text(yaml.safe_dump(cfg))
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            ids = [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]]
            if ids == ["two"]:
                break
            time.sleep(0.1)
        assert ids == ["two"]
        r = httpx.post(base + "/v1/chat/completions", json={"model": "two", "messages": MSG})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -SIGTERM is the clean exit.
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
    assert b"Traceback" not in err


def test_cli_serve_embedded_default_answers_demo(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/healthz")
        r = httpx.post(base + "/v1/chat/completions", json={"model": "demo", "messages": MSG})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        assert [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]] == ["demo"]
        assert _half_closed_post(port, b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}') \
            .startswith(b"HTTP/1.1 200")  # `serve` runs the half-close-aware protocol
        # The embedded control plane runs too, on SQLite under ./.llmops.
        assert httpx.get(base + "/llm-ops/v1/audit/logs").status_code == 401
        assert (tmp_path / ".llmops").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
    # Logs are JSON lines with the request id.
    lines = [ln for ln in err.decode().splitlines() if ln.startswith("{")]
    access = [msgspec.json.decode(ln) for ln in lines if '"llmops.access"' in ln]
    demo = [a for a in access if a["route"] == "demo"]
    assert demo and len(demo[0]["request_id"]) == 24
    assert any(a["route"] == "/healthz" for a in access)  # every response is logged, not only chat


def _half_closed_post(port: int, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_a_reload_keeps_the_address_the_process_listens_on(mock, tmp_path: Path) -> None:
    """`serve --port N` with a file naming no port: a reload must not move the gateway's own address (the control
    modules' callback URL) to the file's default 4000."""
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({**simple_config(mock.url), "control": {"data_dir": str(tmp_path)}}))
    started = decode_config({**simple_config(mock.url), "server": {"port": 4871},
                             "control": {"data_dir": str(tmp_path)}})
    app = create_app(started, config_path=path)
    async with serve_asgi(app, lifespan="on"):
        await app.state.gateway.reload()
        assert app.state.gateway.cfg.server.port == 4871
        training = app.state.control_plane.cfg.module_settings["training"]
        assert training["api_base_url"] == "http://127.0.0.1:4871/llm-ops/v1"


async def test_a_reload_keeps_what_prefix_affinity_learned(mock, mock2) -> None:
    """An unchanged provider keeps its picker; one whose replica list changed adopts the old index for the
    replicas it kept, so a conversation stays on its replica across both reloads."""
    cfg = simple_config(mock.url)
    cfg["providers"] = [{"name": "p0", "kind": "openai", "base_urls": [mock.url, mock2.url],
                         "balance": "prefix_affinity", "prefix_affinity": {"block_chars": 16}}]
    long = [{"role": "system", "content": "you are a careful assistant " * 20}, {"role": "user", "content": "hi"}]
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url, timeout=10) as h:
        async def send() -> str:
            before = len(mock.requests)
            r = await h.post("/v1/chat/completions", json={"model": "r", "messages": long})
            assert r.status_code == 200
            return "mock" if len(mock.requests) > before else "mock2"

        home = await send()
        first = g.gateway.generation.balancers["p0"]
        cfg["routes"].append({"name": "extra", "targets": [{"provider": "p0", "model": "x"}]})
        await g.gateway.reload(decode_config(cfg))
        assert g.gateway.generation.balancers["p0"] is first  # borrowed with its provider
        assert [await send() for _ in range(3)] == [home] * 3
        third = f"http://127.0.0.1:{free_port()}/v1"  # a replica added (never asked: the home has room)
        cfg["providers"][0]["base_urls"].append(third)
        await g.gateway.reload(decode_config(cfg))
        second = g.gateway.generation.balancers["p0"]
        assert second is not first and second.held(0) + second.held(1) > 0  # type: ignore[attr-defined]
        assert [await send() for _ in range(3)] == [home] * 3
