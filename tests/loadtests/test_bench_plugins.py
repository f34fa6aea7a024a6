"""`--gateway-plugins noop3`: the bench's three no-op plug-ins load by entry point and touch nothing."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from adapters.testdoubles import FunctionUpstream, chat_completion, stream_chunks
from adapters.upstream import UpstreamCall
from gateway.config import decode_config
from loadtests import bench_servers
from tests.gateway.inprocess import in_process


async def test_noop3_config_loads_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(bench_servers.PLUGIN_PATH))
    assert bench_servers._plugin_env(bench_servers.gateway_config(1, "http://a", "http://b", "http://c", "http://d"))\
        is None
    cfg: dict[str, Any] = bench_servers.gateway_config(
        1, "http://a", "http://b", "http://c", "http://d", plugins="noop3")
    assert [p["name"] for p in cfg["plugins"]] == ["noop-a", "noop-b", "noop-c"]
    env = bench_servers._plugin_env(cfg)
    assert env is not None and env["PYTHONPATH"].startswith(str(bench_servers.PLUGIN_PATH))
    cfg["control"] = {"enabled": False}

    def handler(call: UpstreamCall) -> Any:
        return stream_chunks(["a", "b"]) if call.stream else chat_completion("plain")

    async with in_process(decode_config(cfg), upstreams={"upstream": FunctionUpstream(handler, "upstream")}) as (
        gw, client):
        plugins = gw.generation.plugins
        hooks = (plugins.on_request, plugins.on_route, plugins.response_filter, plugins.on_finish)
        assert [sum(p.name.startswith("noop-") for _, p in h) for h in hooks] == [3, 3, 3, 3]  # built-ins aside
        body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "plain"
        r = await client.post("/v1/chat/completions", json={**body, "stream": True})
        assert r.text.count("data: ") == 5 and '"content":"b"' in r.text  # role, a, b, finish, [DONE]
    sys.modules.pop("llmops_bench_plugins", None)
