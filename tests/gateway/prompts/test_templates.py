"""Route templates on the request path: rendered before the request's messages, variables in layers,
a 400 naming a missing or ill-typed variable, ``llmops`` never sent upstream, published versions (latest
and pinned) and the YAML winning by name. What the upstream received is what the mock recorded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from adapters.snapshots import ControlSnapshots, RouteSpec, RoutesSnapshot, TargetSpec, TemplateSpec
from adapters.store import publish
from adapters.testdoubles.mock_upstream import MockServer
from gateway.config import ConfigError, decode_config
from gateway.prompts import PromptsPlugin
from tests.conftest import capture_usage
from tests.gateway.inprocess import in_process
from tests.gateway.prompts.support import MSG, SUPPORT, config, template, templates

URL = "/v1/chat/completions"


def _system(mock: MockServer) -> str:
    messages = mock.requests[-1].body["messages"]
    assert messages[1:] == MSG  # the request's own messages follow the template's
    assert messages[0]["role"] == "system"
    content: str = messages[0]["content"]
    return content


async def test_a_route_template_renders_before_the_request_messages(mock: MockServer) -> None:
    async with in_process(config(mock.url)) as (gw, client):
        seen = capture_usage(gw)
        r = await client.post(URL, json={"model": "support", "messages": MSG, "user": "u1",
                                         "llmops": {"variables": {"customer": "ACME"}, "episode_id": "ep-1"}})
        assert r.status_code == 200, r.text
        assert r.headers["x-llmops-template-version"] == "support@1"
        assert r.headers["x-llmops-route"] == "support"
        sent = mock.requests[-1].body
        assert "llmops" not in sent and sent["user"] == "u1"
        assert _system(mock) == "You support llmops for ACME, in English."  # default < route < request
        variables = {"customer": "Initech", "product": "x", "tone": "Dutch"}
        r = await client.post(URL, json={"model": "support", "messages": MSG, "stream": True,
                                         "llmops": {"variables": variables}})
        assert r.status_code == 200 and r.headers["x-llmops-template-version"] == "support@1"
        assert "data: [DONE]" in r.text
        assert _system(mock) == "You support x for Initech, in Dutch."  # the request's variables win
        await gw.usage.drain()
        # built in, in the order that lets guardrails see the rendered prompt and limits the redirected route
        assert [p.name for p in gw.generation.plugins.plugins] == ["auth", "prompts", "guardrails", "limits"]
    assert [rec.episode_id for rec in seen] == ["ep-1", None]


async def test_metadata_strings_the_template_declares_are_variables(mock: MockServer) -> None:
    async with in_process(config(mock.url)) as (_, client):
        metadata = {"customer": "Globex", "tone": "French", "unrelated": "kept"}
        r = await client.post(URL, json={"model": "support", "messages": MSG, "metadata": metadata})
        assert r.status_code == 200, r.text
        assert _system(mock) == "You support llmops for Globex, in French."
        assert mock.requests[-1].body["metadata"] == metadata  # passed on as the client sent it
        r = await client.post(URL, json={"model": "support", "messages": MSG, "metadata": metadata,
                                         "llmops": {"variables": {"customer": "Umbrella"}}})
        assert r.status_code == 200
        assert _system(mock) == "You support llmops for Umbrella, in French."  # llmops over metadata


@pytest.mark.parametrize(("llmops", "param", "words"), [
    ({}, "customer", "is required"),
    ({"variables": {"customer": "A", "tier": "3"}}, "tier", "must be an integer"),
    ({"variables": {"customer": 7}}, "customer", "must be a string"),
    ({"variables": ["customer"]}, "llmops.variables", "must be an object"),
    ({"variables": {"customer": "A"}, "episode_id": 3}, "llmops.episode_id", "string"),
    ({"variables": {"customer": "A"}, "session_id": "s" * 129}, "llmops.session_id", "128"),
])
async def test_a_bad_variable_is_a_400_naming_it(mock: MockServer, llmops: dict[str, Any], param: str,
                                                 words: str) -> None:
    async with in_process(config(mock.url)) as (_, client):
        r = await client.post(URL, json={"model": "support", "messages": MSG, "llmops": llmops})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param
        assert words in error["message"]
        assert not mock.requests  # nothing went upstream


async def test_the_idle_plugin_leaves_bodies_untouched_but_strips_llmops(mock: MockServer) -> None:
    body = {"model": "plain", "messages": MSG, "temperature": 0.3, "metadata": {"customer": "x"},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "user": "u"}
    async with in_process(config(mock.url)) as (gw, client):
        seen = capture_usage(gw)
        r = await client.post(URL, json=body)
        assert r.status_code == 200 and "x-llmops-template-version" not in r.headers
        assert mock.requests[-1].body == {**body, "model": "m-plain"}
        r = await client.post(URL, json={**body, "llmops": {"variables": {"a": 1}}},
                              headers={"x-llmops-session-id": "s-9"})
        assert r.status_code == 200
        assert mock.requests[-1].body == {**body, "model": "m-plain"}
        for path, extra in (("/v1/completions", {"prompt": "hi"}), ("/v1/embeddings", {"input": "hi"}),
                            ("/v1/responses", {"input": "hi"})):
            r = await client.post(path, json={"model": "support", "llmops": {"episode_id": "e"}, **extra})
            assert r.status_code == 200, (path, r.text)
            assert r.headers["x-llmops-route"] == "support" and "x-llmops-template-version" not in r.headers
            assert mock.requests[-1].body == {"model": "m-support", **extra}  # templates are chat messages
        await gw.usage.drain()
    assert [rec.episode_id for rec in seen] == [None, "s-9", "e", "e", "e"]


async def test_published_templates_latest_and_pinned(mock: MockServer) -> None:
    routes = [{"name": n, "targets": [{"provider": "p", "model": "m"}], "template": t}
              for n, t in (("faq", "faq"), ("faq-v1", "faq@1"), ("support", "support"), ("ghost", "nope"))]
    async with in_process(config(mock.url, routes=routes)) as (gw, client):
        faq = [template("faq", 1, "FAQ one", latest=False), template("faq", 2, "FAQ two")]
        gw.generation.control = ControlSnapshots(templates=templates(
            *faq, template("support", 3, "the API's support")))  # as a snapshot change swaps it in
        for route, header, text in (("faq", "faq@2", "FAQ two"), ("faq-v1", "faq@1", "FAQ one")):
            r = await client.post(URL, json={"model": route, "messages": MSG})
            assert r.status_code == 200, r.text
            assert r.headers["x-llmops-template-version"] == header and _system(mock) == text
        # the YAML declares "support": its document wins by name; unpublished yet, so the next version
        r = await client.post(URL, json={"model": "support", "messages": MSG, "llmops": {"variables": {
            "product": "p", "customer": "c"}}})
        assert r.status_code == 200, r.text
        assert r.headers["x-llmops-template-version"] == "support@4"
        assert _system(mock) == "You support p for c, in English."
        # once the prompts module has published the YAML's document, its version is the published one
        doc = decode_config(config(mock.url)).prompts.templates[0]
        gw.generation.control = ControlSnapshots(templates=templates(
            *faq, TemplateSpec(name="support", version=5, document=doc, source="config"), generation=2))
        r = await client.post(URL, json={"model": "support", "messages": MSG, "llmops": {"variables": {
            "product": "p", "customer": "c"}}})
        assert r.headers["x-llmops-template-version"] == "support@5"
        r = await client.post(URL, json={"model": "ghost", "messages": MSG})
        assert r.status_code == 500 and r.json()["error"]["code"] == "template_not_found"
        assert "nope" in r.json()["error"]["message"]


async def test_a_served_endpoint_template_applies_on_its_serve_path(mock: MockServer, tmp_path: Any) -> None:
    cfg = config(mock.url, routes=[], control={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
                                               "data_dir": str(tmp_path), "modules": ["governance"]})
    async with in_process(cfg) as (gw, client):
        async def build(generation: int, at: Any) -> RoutesSnapshot:
            return RoutesSnapshot(generation=generation, published_at=at, routes=[RouteSpec(
                name="ep-chat", targets=[TargetSpec(provider="p", model="served")], source="endpoint:ep1",
                template="support", template_variables={"product": "the endpoint", "customer": "all"})])

        store = gw.store
        assert store is not None
        async with store.begin() as conn:
            await publish(conn, store.changes, "routes", build)
        start = time.monotonic()
        while "ep-chat" not in gw.generation.table.routes:  # the change feed rebuilds the generation
            assert time.monotonic() - start < 2.0
            await asyncio.sleep(0.01)
        r = await client.post("/serve/ep-chat/chat", json={"messages": MSG})
        assert r.status_code == 200, r.text
        assert r.headers["x-llmops-template-version"] == "support@1"
        assert _system(mock) == "You support the endpoint for all, in English."


def test_a_broken_yaml_template_fails_the_load_naming_its_key() -> None:
    bad = {**SUPPORT, "messages": [{"role": "system", "content": "{{ customer "}]}
    with pytest.raises(ConfigError, match=r"\$\.prompts\.templates\[0\]\.messages\[0\]\.content: line 1"):
        PromptsPlugin(config=decode_config(config("http://127.0.0.1:1", prompts={"templates": [bad]})))
    undeclared = {**SUPPORT, "messages": [{"role": "system", "content": "{{ who }}"}]}
    with pytest.raises(ConfigError, match=r"undeclared variable\(s\) 'who'"):
        PromptsPlugin(config=decode_config(config("http://127.0.0.1:1", prompts={"templates": [undeclared]})))
