"""The auth plug-in in-process: keys from the snapshot, every refusal in OpenAI's schema, no secret anywhere."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import generate_latest

from adapters.adminapi.auth import generate_key
from adapters.gateway_plugins import RequestContext
from adapters.snapshots import ControlSnapshots, KeySpec, KeysSnapshot, TeamSpec
from adapters.testdoubles import FunctionUpstream
from adapters.upstream import UpstreamCall
from gateway.config import ConfigError, decode_config
from gateway.defaults import default_config
from gateway.policy.auth import AuthPlugin, AuthSettings
from tests.conftest import capture_usage
from tests.gateway.inprocess import fn_config, in_process

MSG = [{"role": "user", "content": "hi"}]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CHAT = "/v1/chat/completions"


class Keys:
    """Real keys (``generate_key``) and the snapshot the governance module would publish for them."""

    def __init__(self) -> None:
        self.specs: list[KeySpec] = []
        self.tokens: dict[str, str] = {}
        self.teams = [TeamSpec(id="t1", name="research"), TeamSpec(id="t2", name="sales", allowed_models=["m0"])]

    def add(self, name: str, roles: tuple[str, ...] = ("inference",), team: str = "t1", **fields: Any) -> str:
        key_id, token, digest = generate_key()
        self.specs.append(KeySpec(id=key_id, team_id=team, secret_sha256=digest, roles=list(roles), name=name,
                                  **fields))
        self.tokens[name] = token
        return token

    def snapshot(self, generation: int = 1, *, without: tuple[str, ...] = (), issued: bool = True) -> KeysSnapshot:
        """``without``: revoked keys (left out); ``issued``: say, as keyring does, whether a data-plane key was
        ever made (False: a publisher from before the field)."""
        gone = {self.specs[i].id for i, name in enumerate(self.tokens) if name in without}
        return KeysSnapshot(generation=generation, published_at=NOW, teams=self.teams,
                            keys=[k for k in self.specs if k.id not in gone],
                            data_plane_keys_issued=issued and any("inference" in k.roles for k in self.specs))


def _answer(call: UpstreamCall) -> Any:
    if call.endpoint == "embeddings":
        return {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}],
                "model": "m0", "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    if call.endpoint == "completions":
        if call.stream:
            return [{"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "ok"}]}]
        return {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "ok"}]}
    if call.endpoint == "responses":
        events = [{"type": "response.created", "sequence_number": 0, "response": {"id": "r", "usage": None}},
                  {"type": "response.completed", "sequence_number": 1,
                   "response": {"id": "r", "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}}}]
        if call.stream:
            return events
        return {"id": "r", "object": "response", "output": [], "usage": {"input_tokens": 1, "output_tokens": 1,
                                                                        "total_tokens": 2}}
    if call.stream:
        return [{"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "ok"}}]}]
    return {"id": "x", "object": "chat.completion", "model": call.body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _cfg(settings: dict[str, Any] | None = None, routes: tuple[tuple[str, str], ...] = (("r", "m0"),)) -> Any:
    return fn_config(*routes, plugins=[{"name": "auth", "settings": settings or {}}])


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _publish(gw: Any, keys: KeysSnapshot | None) -> None:
    """What the control plane's follower does on a keys change: swap ``gen.control``, nothing rebuilt."""
    gw.generation.control = ControlSnapshots(keys=keys)


async def _chat(h: httpx.AsyncClient, headers: dict[str, str] | None = None, model: str = "r",
                **body: Any) -> httpx.Response:
    return await h.post(CHAT, json={"model": model, "messages": MSG, **body}, headers=headers or {})


def _openai_401(r: httpx.Response, code: str) -> dict[str, Any]:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer realm="llmops"'
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] is None and error["code"] == code
    return error  # type: ignore[no-any-return]


async def test_auto_is_off_until_a_data_plane_key_is_issued_and_stays_on_after_revocation() -> None:
    keys = Keys()
    admin_token = keys.add("ops", roles=("admin",))
    async with in_process(_cfg(), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        assert (await _chat(h)).status_code == 200  # no snapshot at all
        assert (await _chat(h, _bearer("sk-an-openai-key"))).status_code == 200  # nothing to check it against
        _publish(gw, keys.snapshot())
        assert (await _chat(h)).status_code == 200  # an admin key alone does not switch the data plane's on
        assert (await _chat(h, _bearer(admin_token))).status_code == 200
        keys.add("app")
        _publish(gw, keys.snapshot(2))
        error = _openai_401(await _chat(h), "missing_api_key")
        assert error["message"].startswith("You didn't provide an API key")
        _publish(gw, keys.snapshot(3, without=("app",)))  # the last data-plane key revoked: still on
        _openai_401(await _chat(h), "missing_api_key")
        _openai_401(await _chat(h, _bearer(keys.tokens["app"])), "invalid_api_key")
        _publish(gw, keys.snapshot(4, without=("app",), issued=False))  # an older publisher: the live keys decide
        assert (await _chat(h)).status_code == 200


async def test_bearer_and_api_key_authenticate_and_the_team_reaches_the_usage_record() -> None:
    keys = Keys()
    app = keys.add("app")
    async with in_process(_cfg(), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        seen = capture_usage(gw)
        _publish(gw, keys.snapshot())
        assert (await _chat(h, _bearer(app))).status_code == 200
        assert (await _chat(h, {"authorization": f"bearer   {app}"})).status_code == 200  # scheme is case-blind
        assert (await _chat(h, {"api-key": app})).status_code == 200
        assert (await _chat(h, {"api-key": app, **_bearer(app)})).status_code == 200  # both, the same key
        await gw.usage.drain()
        principals = [r.principal for r in seen]
        assert len(principals) == 4
        assert {(p.key_id, p.team, p.roles) for p in principals} == {(keys.specs[0].id, "research", ("inference",))}


async def test_malformed_unknown_revoked_and_wrong_secret_are_the_same_401() -> None:
    keys = Keys()
    app = keys.add("app")
    gone = keys.add("gone")
    _, unknown, _ = generate_key()
    wrong_secret = app[:-4] + ("AAAA" if not app.endswith("AAAA") else "BBBB")
    async with in_process(_cfg(), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        _publish(gw, keys.snapshot())
        assert (await _chat(h, _bearer(gone))).status_code == 200
        _publish(gw, keys.snapshot(2, without=("gone",)))
        bodies = set()
        for token in (unknown, gone, wrong_secret):
            r = await _chat(h, _bearer(token))
            assert _openai_401(r, "invalid_api_key")["message"] == "Incorrect API key provided."
            bodies.add(r.content)
        assert len(bodies) == 1  # a revoked key reads exactly like one that never existed
        for bad in ("Bearer", "Bearer ", "Bearer sk-abc", "Basic dXNlcjpwYXNz", app, f"Bearer {app}x",
                    f"Bearer {app[:-1]}", "Bearer " + "a" * 5000):
            r = await _chat(h, {"authorization": bad})
            _openai_401(r, "invalid_api_key")
            assert app not in r.text and "aaaa" not in r.text
        r = await _chat(h, {"api-key": gone, **_bearer(app)})
        assert "different keys" in _openai_401(r, "invalid_api_key")["message"]


async def test_expired_key_is_refused_and_says_so() -> None:
    keys = Keys()
    old = keys.add("old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    fresh = keys.add("fresh", expires_at=datetime.now(UTC) + timedelta(hours=1))
    async with in_process(_cfg(), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        _publish(gw, keys.snapshot())
        r = await _chat(h, _bearer(old))
        assert _openai_401(r, "invalid_api_key")["message"] == "The API key provided has expired."
        assert (await _chat(h, _bearer(fresh))).status_code == 200


async def test_a_key_without_the_inference_role_gets_403_and_is_attributed() -> None:
    keys = Keys()
    keys.add("app")
    dev = keys.add("dev", roles=("developer", "viewer"))
    both = keys.add("person", roles=("developer", "inference"))
    async with in_process(_cfg(), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        seen = capture_usage(gw)
        _publish(gw, keys.snapshot())
        r = await _chat(h, _bearer(dev))
        assert r.status_code == 403
        assert r.json() == {"error": {"message": f"Key {keys.specs[1].id} may not call the data plane: it lacks the "
                                                 "'inference' role", "type": "permission_error", "param": None,
                                      "code": "insufficient_permissions"}}
        assert (await _chat(h, _bearer(both))).status_code == 200
        await gw.usage.drain()
        assert [(r.status, r.principal.key_id if r.principal else None) for r in seen] == [
            (403, keys.specs[1].id), (200, keys.specs[2].id)]


async def test_allowed_routes_and_models_of_the_key_and_its_team() -> None:
    keys = Keys()
    only_a = keys.add("only-a", allowed_routes=["a*"])
    m1 = keys.add("m1", allowed_models=["fn/m1"])
    sales = keys.add("sales", team="t2")  # team sales allows model m0 only
    routes = (("a1", "m0"), ("b1", "m1"), ("a2", "m1"))
    async with in_process(_cfg(routes=routes), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        _publish(gw, keys.snapshot())
        assert (await _chat(h, _bearer(only_a), model="a1")).status_code == 200
        r = await _chat(h, _bearer(only_a), model="b1")
        assert r.status_code == 403 and r.json()["error"] == {
            "message": f"Key {keys.specs[0].id} may not use route 'b1'", "type": "permission_error",
            "param": "model", "code": "route_not_allowed"}
        assert (await _chat(h, _bearer(m1), model="b1")).status_code == 200  # provider/model matches
        r = await _chat(h, _bearer(m1), model="a1")
        assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
        assert "'m0'" in r.json()["error"]["message"]
        assert (await _chat(h, _bearer(sales), model="a1")).status_code == 200
        assert (await _chat(h, _bearer(sales), model="a2")).json()["error"]["code"] == "model_not_allowed"


@pytest.mark.parametrize(("path", "body"), [
    (CHAT, {"messages": MSG}),
    (CHAT, {"messages": MSG, "stream": True}),
    ("/v1/completions", {"prompt": "hi"}),
    ("/v1/completions", {"prompt": "hi", "stream": True}),
    ("/v1/embeddings", {"input": "hi"}),
    ("/v1/responses", {"input": "hi"}),
    ("/v1/responses", {"input": "hi", "stream": True}),
    ("/serve/r/chat", {"messages": MSG}),
])
async def test_every_endpoint_and_stream_needs_the_key(path: str, body: dict[str, Any]) -> None:
    keys = Keys()
    app = keys.add("app")
    async with in_process(_cfg(), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        seen = capture_usage(gw)
        _publish(gw, keys.snapshot())
        payload = {"model": "r", **body}
        _openai_401(await h.post(path, json=payload), "missing_api_key")
        _openai_401(await h.post(path, json=payload, headers={"api-key": "nope"}), "invalid_api_key")
        r = await h.post(path, json=payload, headers=_bearer(app))
        assert r.status_code == 200, r.text
        if body.get("stream"):
            assert r.headers["content-type"].startswith("text/event-stream")
        await gw.usage.drain()
        assert [x.status for x in seen] == [401, 401, 200]
        assert seen[-1].principal is not None and seen[-1].principal.team == "research"


async def test_always_and_never() -> None:
    keys = Keys()
    app = keys.add("app")
    async with in_process(_cfg({"required": "always"}), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        _openai_401(await _chat(h), "missing_api_key")  # no snapshot, still required
        _publish(gw, keys.snapshot())
        assert (await _chat(h, _bearer(app))).status_code == 200
    async with in_process(_cfg({"required": "never"}), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        _publish(gw, keys.snapshot())
        assert (await _chat(h)).status_code == 200
        assert (await _chat(h, _bearer("garbage"))).status_code == 200
        hooks = (*gw.generation.plugins.on_request, *gw.generation.plugins.on_route)
        assert not [p.name for _, p in hooks if p.name == "auth"]  # nothing per request


def test_settings_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match=r"\$\.plugins\[0\]\.settings\.required"):
        decode_config(_cfg({"required": "sometimes"}))
    with pytest.raises(ConfigError, match=r"public_route"):
        decode_config(_cfg({"public_route": ["demo"]}))


async def test_public_routes_need_no_key_but_a_bad_key_is_still_refused() -> None:
    keys = Keys()
    app = keys.add("app", allowed_routes=["private"])

    class Redirect:  # an A/B plug-in after auth that sends "demo" traffic elsewhere
        def on_request(self, ctx: RequestContext) -> None:
            if ctx.body.get("user") == "arm-b":
                ctx.route_name = "private"

    cfg = _cfg({"public_routes": ["demo"]}, routes=(("demo", "m0"), ("private", "m0")))
    async with in_process(cfg, upstreams={"fn": FunctionUpstream(_answer)}, plugins=[Redirect()]) as (gw, h):
        seen = capture_usage(gw)
        _publish(gw, keys.snapshot())
        assert (await _chat(h, model="demo")).status_code == 200
        _openai_401(await _chat(h, model="private"), "missing_api_key")
        _openai_401(await _chat(h, _bearer("sk-wrong"), model="demo"), "invalid_api_key")
        assert (await _chat(h, _bearer(app), model="demo")).status_code == 200  # its route list does not apply
        _openai_401(await _chat(h, model="demo", user="arm-b"), "missing_api_key")  # checked on the route used
        await gw.usage.drain()
        assert seen[3].principal is not None and seen[3].principal.team == "research"


async def test_embedded_default_keeps_demo_open_once_keys_exist() -> None:
    keys = Keys()
    app = keys.add("app")
    env = {"OPENAI_API_KEY": "sk-operator", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    cfg = default_config(env=env)
    assert [(p.name, p.settings) for p in cfg.plugins] == [("auth", {"public_routes": ["demo"]})]
    async with in_process(cfg, default_config=lambda: default_config(env=env)) as (gw, h):
        _publish(gw, keys.snapshot())
        assert (await _chat(h, model="demo")).status_code == 200
        _openai_401(await _chat(h, model="openai"), "missing_api_key")  # refused before any upstream call
        _openai_401(await _chat(h, _bearer("sk-operator"), model="demo"), "invalid_api_key")
        assert (await _chat(h, _bearer(app), model="demo")).status_code == 200


async def test_denials_are_counted_and_the_key_appears_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    keys = Keys()
    app = keys.add("app", allowed_routes=["other"])
    dev = keys.add("dev", roles=("developer",))
    gone = keys.add("gone")
    async with in_process(_cfg(), upstreams={"fn": FunctionUpstream(_answer)}) as (gw, h):
        caplog.set_level(logging.DEBUG)
        seen = capture_usage(gw)
        _publish(gw, keys.snapshot(without=("gone",)))
        texts = [(await _chat(h, _bearer(t))).text for t in (app, dev, gone, gone + "x")]
        texts.append((await _chat(h)).text)
        plugin = next(p.instance for p in gw.generation.plugins.plugins if p.name == "auth")
        await plugin.audit.flush(close_all=True)
        await gw.usage.drain()
        scrape = generate_latest(gw.metrics.registry).decode()
        denials = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                   if line.startswith("llmops_policy_denials_total{")}
        assert denials == {'reason="authentication"': 3.0, 'reason="permission"': 2.0}
        records = msgspec.json.encode([msgspec.to_builtins(r) for r in seen]).decode()
        for secret in (app, dev, gone):
            tail = secret.split("_", 2)[2]
            for where in (*texts, caplog.text, scrape, records):
                assert tail not in where
        assert "data-plane request denied" in caplog.text  # the audit writer logs without a store


async def test_the_idle_path_touches_no_header() -> None:
    """auto without keys: on_request returns before reading anything but the snapshot reference."""

    class Trap(list[tuple[bytes, bytes]]):
        def __iter__(self) -> Any:
            raise AssertionError("headers read")

    plugin = AuthPlugin(AuthSettings())
    ctx = RequestContext(request_id="r", model="r", body={}, stream=False, raw_headers=Trap(),
                         control=ControlSnapshots())
    plugin.on_request(ctx)
    plugin.on_route(ctx)
    ctx.control = ControlSnapshots(keys=KeysSnapshot(generation=1, published_at=NOW))
    plugin.on_request(ctx)
    assert ctx.principal is None
