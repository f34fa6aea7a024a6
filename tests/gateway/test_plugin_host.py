"""What the gateway lends plug-ins beyond the request: live control snapshots on the context,
response headers, and a host (store, metrics registry) for factories that ask for one."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.gateway_plugins import PluginHost, RequestContext
from adapters.snapshots import ControlSnapshots
from adapters.testdoubles import FunctionUpstream, chat_completion, stream_chunks
from adapters.upstream import UpstreamCall
from gateway.config import PluginCfg
from gateway.plugins import _build
from tests.gateway.inprocess import fn_config, in_process

MSG = [{"role": "user", "content": "hi"}]


def _upstream() -> FunctionUpstream:
    def handler(call: UpstreamCall) -> Any:
        return stream_chunks(["a", "b"]) if call.stream else chat_completion("ok")

    return FunctionUpstream(handler, "fn")


async def test_hooks_see_live_control_snapshots_and_add_response_headers() -> None:
    seen: list[ControlSnapshots | None] = []

    class Limits:
        name = "limits"

        def on_route(self, ctx: RequestContext) -> None:
            seen.append(ctx.control)
            ctx.add_response_header("X-RateLimit-Remaining-Requests", "41")

    async with in_process(fn_config(), upstreams={"fn": _upstream()}, plugins=[Limits()]) as (gw, client):
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining-requests"] == "41"
        s = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG, "stream": True})
        assert s.status_code == 200
        assert s.headers["x-ratelimit-remaining-requests"] == "41"
        assert seen == [gw.generation.control, gw.generation.control]
        # a control-plane change swaps gen.control without a rebuild: the next request sees the new set
        newer = ControlSnapshots()
        gw.generation.control = newer
        await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert seen[-1] is newer


def test_a_factory_that_declares_host_gets_it_and_others_do_not() -> None:
    host = PluginHost(store=None, registry=None, control=lambda: ControlSnapshots())

    class HostSettings(msgspec.Struct):
        n: int = 1

    class WithHost:
        Settings = HostSettings

        def __init__(self, settings: HostSettings, *, host: PluginHost) -> None:
            self.settings, self.host = settings, host

    class Without:
        def __init__(self) -> None:
            self.built = True

    got = _build(WithHost, PluginCfg(name="w", settings={"n": 3}), "$.plugins[0]", host)
    assert got.host is host and got.settings.n == 3
    assert isinstance(got.host.control(), ControlSnapshots)
    assert _build(Without, PluginCfg(name="o"), "$.plugins[1]", host).built


def test_builtin_plugins_are_enabled_unless_the_yaml_disables_them(monkeypatch: Any) -> None:
    import gateway.plugins as plugins

    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", ("builtin-x",))
    monkeypatch.setattr(plugins, "_factories", lambda: {"builtin-x": _EP(), "other": _EP()})
    names = [c.name for _, c, _ in plugins._enabled([PluginCfg(name="other")])]
    assert names == ["builtin-x", "other"]
    assert [c.name for _, c, _ in plugins._enabled([PluginCfg(name="builtin-x", enabled=False)])] == []
    configured = plugins._enabled([PluginCfg(name="other"), PluginCfg(name="builtin-x", settings={"a": 1})])
    assert [(w, c.name, c.settings) for w, c, _ in configured] == [
        ("$.plugins[0]", "other", {}), ("$.plugins[1]", "builtin-x", {"a": 1})]


class _EP:
    def load(self) -> Any:
        return object
