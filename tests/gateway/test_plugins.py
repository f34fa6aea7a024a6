"""Out-of-tree plug-ins, loaded through the `llmops.gateway` entry point, change behaviour
through every hook; settings fail at load with their path; failure modes; atomic reload.
No sockets: the upstream is a FunctionUpstream and the app runs in-process."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.gateway_plugins import Principal, RequestContext
from adapters.testdoubles import FunctionUpstream, chat_completion, stream_chunks
from adapters.upstream import UpstreamCall
from gateway.config import ConfigError, decode_config
from gateway.plugins import Plugins, check_plugin
from tests.gateway.inprocess import fn_config, in_process

PKG_DIR = Path(__file__).parent / "plugin_pkg"
MSG = [{"role": "user", "content": "hi"}]
GOOD = {"authorization": "Bearer good"}


@pytest.fixture
def pkg(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example package on sys.path, as if pip-installed (its dist-info declares the entry points)."""
    monkeypatch.syspath_prepend(str(PKG_DIR))
    import llmops_example_plugins as mod

    mod.FINISHED.clear()
    mod.LIFESPAN.clear()
    yield mod
    sys.modules.pop("llmops_example_plugins", None)


def _upstream() -> FunctionUpstream:
    def handler(call: UpstreamCall) -> Any:
        if call.stream:
            return stream_chunks(["write to bo", "b@exam", "ple.com today"])
        return chat_completion("mail bob@example.com now")

    return FunctionUpstream(handler, "fn")


ALL = [
    {"name": "require-key", "settings": {"keys": {"good": "team-a"}}},
    {"name": "system-prompt", "settings": {"text": "be brief"}},
    {"name": "model-budget", "settings": {"exhausted": ["m-pricey"]}},
    {"name": "redact-email"},
    {"name": "finish-log"},
]


def _sse(text: str) -> list[Any]:
    out = []
    for event in text.strip().split("\n\n"):
        data = event.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def _content(events: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in events
                   if isinstance(c, dict) and c.get("choices"))


async def test_one_plugin_per_hook_changes_behaviour(pkg: Any) -> None:
    up = _upstream()
    cfg = fn_config(("r", "m0"), ("pricey", "m-pricey"), plugins=ALL)
    async with in_process(cfg, upstreams={"fn": up}) as (gw, client):
        assert pkg.LIFESPAN == ["start 1"]
        # on_request denies: no upstream call
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert up.calls == []
        # on_request rewrites the body; the response filter redacts a non-streamed body
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG}, headers=GOOD)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "mail [email] now"
        assert up.calls[-1].body["messages"] == [{"role": "system", "content": "be brief"}, *MSG]
        # ... and a streamed address split over two chunks is held back, then redacted
        r = await client.post("/v1/chat/completions", headers=GOOD, json={
            "model": "r", "messages": MSG, "stream": True, "stream_options": {"include_usage": True}})
        events = _sse(r.text)
        assert _content(events) == "write to [email] today"
        assert "@" not in r.text and "bob" not in r.text
        assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 5  # usage stays last
        # on_route prices the actual model and denies
        r = await client.post("/v1/chat/completions", json={"model": "pricey", "messages": MSG}, headers=GOOD)
        assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exhausted"
        assert len(up.calls) == 2
        await gw.usage.drain()
    assert pkg.LIFESPAN == ["start 1", "stop 1"]
    # on_finish saw every request's final record, denied ones with their principal and annotations
    recs = [rec for _, rec in pkg.FINISHED]
    assert [rec.status for rec in recs] == [401, 200, 200, 429]
    assert all(ctx.usage is rec for ctx, rec in pkg.FINISHED)
    assert recs[0].principal is None and recs[0].annotations == {"require-key": {"checked": True}}
    team_a = Principal(key_id="key-good", team="team-a", roles=("user",))
    assert [rec.principal for rec in recs[1:]] == [team_a] * 3
    assert recs[1].annotations == {"require-key": {"checked": True},
                                   "model-budget": {"priced": "fn/m0", "route": "r"}}
    assert recs[3].annotations["model-budget"] == {"priced": "fn/m-pricey", "route": "pricey"}
    assert (recs[1].prompt_tokens, recs[1].completion_tokens) == (3, 5)


async def test_on_finish_gets_counted_tokens_when_the_upstream_reports_none(pkg: Any) -> None:
    up = FunctionUpstream(lambda call: chat_completion("four words of reply", usage=None), "fn")
    async with in_process(fn_config(plugins=[{"name": "finish-log"}]), upstreams={"fn": up}) as (gw, client):
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.status_code == 200
        await gw.usage.drain()
    (_, rec), = pkg.FINISHED
    assert rec.usage_source in ("counted", "estimated") and rec.completion_tokens > 0 and rec.prompt_tokens > 0


async def test_requests_refused_before_parsing_reach_on_finish_too(pkg: Any) -> None:
    async with in_process(fn_config(plugins=[{"name": "finish-log"}]), upstreams={"fn": _upstream()}) as (gw, client):
        assert (await client.post("/v1/chat/completions", content=b"{not json")).status_code == 400
        assert (await client.get("/v1/chat/completions")).status_code == 405
        await gw.usage.drain()
    assert [rec.status for _, rec in pkg.FINISHED] == [400, 405]


def test_settings_are_validated_at_load_with_the_key_path(pkg: Any) -> None:
    def load(plugins: list[dict[str, Any]]) -> None:
        decode_config(fn_config(plugins=plugins))

    with pytest.raises(ConfigError, match=r"\$\.plugins\[1\]\.settings\.max_tokens"):
        load([{"name": "finish-log"}, {"name": "model-budget", "settings": {"max_tokens": "many"}}])
    with pytest.raises(ConfigError, match=r"\$\.plugins\[0\]\.settings.*unknown field `maxtokens`"):
        load([{"name": "model-budget", "settings": {"maxtokens": 1}}])
    with pytest.raises(ConfigError, match=r"\$\.plugins\[0\]\.name: no plug-in 'nope'.*redact-email"):
        load([{"name": "nope"}])
    with pytest.raises(ConfigError, match=r"\$\.plugins\[0\]\.settings: plug-in 'redact-email' takes no settings"):
        load([{"name": "redact-email", "settings": {"x": 1}}])
    with pytest.raises(ConfigError, match=r"\$\.plugins\[1\]\.name: plug-in 'finish-log' is enabled twice"):
        load([{"name": "finish-log"}, {"name": "finish-log"}])
    load([{"name": "nope", "enabled": False}])  # disabled: not even looked up


def test_hooks_are_checked_against_the_protocol_at_load() -> None:
    class Misspelt:
        async def on_requset(self, ctx: RequestContext) -> None: ...

    class AsyncGenHook:
        async def on_request(self, ctx: RequestContext) -> Any:
            yield

    class BadFailure:
        failure = "sometimes"

        async def on_request(self, ctx: RequestContext) -> None: ...

    with pytest.raises(ConfigError, match=r"unknown hook.*on_requset"):
        check_plugin("m", Misspelt(), "$.plugins[0]")
    with pytest.raises(ConfigError, match="on_request must be a plain function or an async def"):
        check_plugin("s", AsyncGenHook(), "$.plugins[0]")
    with pytest.raises(ConfigError, match="failure='sometimes'"):
        check_plugin("b", BadFailure(), "$.plugins[0]")
    with pytest.raises(ConfigError, match="implements none"):
        check_plugin("e", object(), "$.plugins[0]")


def test_unused_hooks_are_empty_tuples() -> None:
    class OnlyFinish:
        async def on_finish(self, ctx: RequestContext, usage: Any) -> None: ...

    p = Plugins([check_plugin("f", OnlyFinish(), "$")])
    assert (p.on_request, p.on_route, p.response_filter) == ((), (), ())
    assert len(p.on_finish) == 1
    assert p.filters(RequestContext("r", "m", {}, False, [])) is None


@pytest.mark.parametrize("stream", [False, True])
async def test_no_response_filter_means_the_stream_is_not_wrapped(
    pkg: Any, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    from gateway.chat.service import ChatService

    def wrapped(*args: Any) -> Any:
        raise AssertionError("stream wrapped without a response filter")

    monkeypatch.setattr(ChatService, "_relay_filtered", staticmethod(wrapped))
    monkeypatch.setattr("gateway.chat.service._decode", wrapped)
    cfg = fn_config(plugins=[{"name": "finish-log"}, {"name": "system-prompt", "settings": {"text": "x"}}])
    async with in_process(cfg, upstreams={"fn": _upstream()}) as (_, client):
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG, "stream": stream})
        assert r.status_code == 200 and "b@exam" in r.text


async def test_a_plugin_bug_fails_closed_with_a_500_logged_once(pkg: Any, caplog: pytest.LogCaptureFixture) -> None:
    up = _upstream()
    cfg = fn_config(plugins=[{"name": "flaky"}, {"name": "finish-log"}])
    with caplog.at_level(logging.ERROR):
        async with in_process(cfg, upstreams={"fn": up}) as (gw, client):
            r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
            await gw.usage.drain()
    assert r.status_code == 500
    assert r.json()["error"] == {"message": "Internal server error", "type": "server_error", "param": None,
                                 "code": "plugin_failed"}
    assert "flaky" not in r.text and up.calls == []
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and "plug-in flaky failed in on_request" in errors[0].getMessage()
    assert [rec.status for _, rec in pkg.FINISHED] == [500]


async def test_a_plugin_that_fails_open_is_skipped(pkg: Any, caplog: pytest.LogCaptureFixture) -> None:
    cfg = fn_config(plugins=[{"name": "flaky", "settings": {"failure": "open", "hooks": ["on_request", "on_route"]}}])
    with caplog.at_level(logging.ERROR):
        async with in_process(cfg, upstreams={"fn": _upstream()}) as (_, client):
            r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
    assert r.status_code == 200
    logged = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(logged) == 2 and all("fails open" in m for m in logged)


@pytest.mark.parametrize("failure", ["closed", "open"])
async def test_a_failing_stream_filter(pkg: Any, failure: str) -> None:
    up = _upstream()
    cfg = fn_config(plugins=[{"name": "flaky", "settings": {"failure": failure, "hooks": ["feed"]}}])
    async with in_process(cfg, upstreams={"fn": up}) as (_, client):
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG, "stream": True})
        assert r.status_code == 200
        events = _sse(r.text)
        if failure == "closed":  # two chunks went out, then one error event and [DONE]
            assert _content(events) == "write to bo"
            assert events[-2]["error"]["code"] == "plugin_failed" and events[-1] == "[DONE]"
            assert up.backends[0].breaker.failures == 0  # not the upstream's fault
        else:
            assert _content(events) == "write to bob@example.com today" and events[-1] == "[DONE]"


async def test_reload_rebuilds_plugins_atomically(pkg: Any) -> None:
    up = _upstream()
    plugins = [{"name": "system-prompt", "settings": {"text": "v1"}}, {"name": "finish-log"}]
    async with in_process(fn_config(plugins=plugins), upstreams={"fn": up}) as (gw, client):
        await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert up.calls[-1].body["messages"][0]["content"] == "v1"
        bad = fn_config(plugins=[{"name": "system-prompt", "settings": {"txt": "v2"}}])
        with pytest.raises(ConfigError, match=r"\$\.plugins\[0\]\.settings"):
            await gw.reload(decode_config(bad))
        plugins[0]["settings"] = {"text": "v2"}
        await gw.reload(decode_config(fn_config(plugins=plugins)))
        await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert up.calls[-1].body["messages"][0]["content"] == "v2"
        await gw.usage.drain()
        for _ in range(100):  # the old generation retires in the background once drained
            if "stop 1" in pkg.LIFESPAN:
                break
            await __import__("asyncio").sleep(0.01)
        assert pkg.LIFESPAN == ["start 1", "start 2", "stop 1"]
    assert pkg.LIFESPAN[-1] == "stop 2"
    assert len(pkg.FINISHED) == 2


async def test_on_route_runs_once_per_target_tried_not_per_retry() -> None:
    from adapters.errors import UpstreamStatus

    priced: list[str | None] = []

    class Recorder:
        async def on_route(self, ctx: RequestContext) -> None:
            priced.append(ctx.upstream_model)

    tried: list[str] = []

    def handler(call: UpstreamCall) -> Any:
        tried.append(call.body["model"])  # the body is rewritten in place per attempt
        if call.body["model"] == "m0":
            raise UpstreamStatus(503, b"", "fn")
        return chat_completion("ok")

    up = FunctionUpstream(handler, "fn")
    cfg = fn_config()
    cfg["routes"][0].update(retries=2, fallbacks=[{"provider": "fn", "model": "m1"}])
    async with in_process(cfg, upstreams={"fn": up}, plugins=[Recorder()]) as (_, client):
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
    assert r.status_code == 200
    assert tried == ["m0", "m0", "m0", "m1"]
    assert priced == ["m0", "m1"]


async def test_plain_function_hooks_and_a_shared_filter_run_beside_async_ones() -> None:
    seen: list[str] = []

    class Shared:
        changes_in_place = False

        def body(self, completion: dict[str, Any]) -> dict[str, Any]:
            seen.append("body")
            return completion

        def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
            return [chunk]

        def flush(self) -> list[dict[str, Any]]:
            return []

    class Plain:
        name = "plain"
        failure = "open"
        response_filter = Shared()

        def on_request(self, ctx: RequestContext) -> None:
            seen.append("request")
            raise RuntimeError("ignored: fails open")

        def on_route(self, ctx: RequestContext) -> None:
            seen.append("route")

        def on_finish(self, ctx: RequestContext, usage: Any) -> None:
            seen.append(f"finish {usage.status}")

    class Async:
        name = "async"

        async def on_request(self, ctx: RequestContext) -> None:
            seen.append("async request")

        async def on_finish(self, ctx: RequestContext, usage: Any) -> None:
            seen.append("async finish")

    async with in_process(fn_config(), upstreams={"fn": _upstream()}, plugins=[Plain(), Async()]) as (gw, client):
        body = {"model": "r", "messages": [{"role": "user", "content": "x"}]}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        await gw.usage.drain()
    assert seen == ["request", "async request", "route", "body", "finish 200", "async finish"]
