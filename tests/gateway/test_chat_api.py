"""The gateway through the unmodified `openai` SDK and raw HTTP: happy paths and every error status."""

from __future__ import annotations

import httpx
import msgspec
import openai
import pytest

from adapters.testdoubles.mock_upstream import Fault
from gateway.defaults import default_config
from tests.conftest import run_gateway, simple_config

MSG = [{"role": "user", "content": "hello there"}]


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=10)


async def test_chat_stream_and_models_via_sdk(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g:
        c = client(g.base_url)
        resp = await c.chat.completions.create(model="r", messages=MSG, seed=7, logprobs=False, n=1)
        assert resp.choices[0].message.content.startswith("mock")
        assert resp.usage.completion_tokens == 16
        # Fields the gateway does not use are relayed untouched; the route's model is substituted.
        sent = mock.requests[-1].body
        assert sent["model"] == "m0" and sent["seed"] == 7 and sent["logprobs"] is False

        text = []
        stream = await c.chat.completions.create(model="r", messages=MSG, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
        assert "".join(text) == resp.choices[0].message.content

        models = await c.models.list()
        assert [m.id for m in models.data] == ["r"]


async def test_serve_path_and_direct_provider_model(mock) -> None:
    cfg = simple_config(mock.url)
    cfg["server"]["allow_direct"] = True  # opt-in: direct names spend the provider's key on any model
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post("/serve/r/chat", json={"messages": MSG})
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        assert r.headers["x-llmops-route"] == "r"
        for bad in ("/serve/chat", "/serve//chat", "/serve/r/chatx", "/serve/r"):
            r = await h.post(bad, json={"messages": MSG})
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", bad
        cfg_slash = await h.post("/serve/p0/some/model/chat", json={"messages": MSG})  # direct provider/model
        assert cfg_slash.status_code == 200 and mock.requests[-1].body["model"] == "some/model"
        r = await h.post("/v1/chat/completions", json={"model": "p0/some-model", "messages": MSG})
        assert r.status_code == 200
        assert mock.requests[-1].body["model"] == "some-model"


async def test_direct_provider_names_are_refused_by_default(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post("/v1/chat/completions", json={"model": "p0/any-model", "messages": MSG})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert mock.requests == []


async def test_embedded_default_cannot_be_made_to_fail_by_clients() -> None:
    """Fault names used to reach the built-in mock and open its circuit for route `demo`."""
    async with run_gateway(default_config(env={}), default_config=lambda: default_config(env={})) as g, \
            httpx.AsyncClient(base_url=g.url) as h:
        for _ in range(6):
            r = await h.post("/v1/chat/completions", json={"model": "mock/fault:status=500", "messages": MSG})
            assert r.status_code == 404
        cfg = msgspec.structs.replace(default_config(env={}), server=msgspec.structs.replace(
            default_config(env={}).server, allow_direct=True))
        await g.gateway.reload(cfg)  # even where an operator opts in to direct names
        for _ in range(6):
            r = await h.post("/v1/chat/completions", json={"model": "mock/fault:status=500", "messages": MSG})
            assert r.status_code == 200
        r = await h.post("/v1/chat/completions", json={"model": "demo", "messages": MSG})
        assert r.status_code == 200


async def test_stream_usage_chunk_only_when_asked(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g:
        c = client(g.base_url)
        chunks = [ch async for ch in await c.chat.completions.create(model="r", messages=MSG, stream=True)]
        assert all(ch.usage is None for ch in chunks)
        # ...although the gateway asked the upstream for usage, so it can meter the stream.
        assert mock.requests[-1].body["stream_options"] == {"include_usage": True}
        chunks = [ch async for ch in await c.chat.completions.create(
            model="r", messages=MSG, stream=True, stream_options={"include_usage": True})]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "r", "messages": []}', "messages"),
        (b'{"model": "r", "messages": [{"content": "x"}]}', "messages[0]"),
        (b'{"model": "r", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b"", None),
        # These used to escape as 500s: deep nesting (RecursionError), invalid UTF-8 in a field the
        # typed decode skips, and a number out of range in an untyped field.
        (b'{"model": "r", "messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
         None),
        (b"[" * 5000 + b"]" * 5000, None),
        (b'{"model": "r", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None),
        (b'{"model": "r", "messages": [{"role": "user", "content": "x"}], "metadata": {"n": 1e999}}', None),
    ],
)
async def test_bad_requests_answer_400_in_openai_schema(mock, body: bytes, param: str | None) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["type"] == "invalid_request_error"
        if param is not None:
            assert err["param"] is not None and err["param"].startswith(param)
        assert "Traceback" not in r.text
        assert mock.requests == []


async def test_sdk_raises_matching_exceptions(mock) -> None:
    cfg = simple_config(mock.url)
    cfg["server"]["max_body_bytes"] = 2000
    async with run_gateway(cfg) as g:
        c = client(g.base_url)
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model="r", messages=[{"content": "no role"}])  # type: ignore[list-item]
        with pytest.raises(openai.NotFoundError) as nf:
            await c.chat.completions.create(model="no-such-route", messages=MSG)
        assert nf.value.code == "model_not_found"
        with pytest.raises(openai.APIStatusError) as big:
            await c.chat.completions.create(model="r", messages=[{"role": "user", "content": "x" * 5000}])
        assert big.value.status_code == 413
        mock.push_faults(Fault(kind="status", status=401))
        # The upstream rejected the operator's key, not the client's: a 502 naming the provider.
        with pytest.raises(openai.InternalServerError) as auth:
            await c.chat.completions.create(model="r", messages=MSG)
        assert auth.value.status_code == 502 and auth.value.code == "upstream_auth_failed"
        assert "p0" in auth.value.message and "127.0.0.1" not in auth.value.message
        mock.push_faults(Fault(kind="status", status=429), Fault(kind="status", status=429))
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model="r", messages=MSG)
        mock.push_faults(Fault(kind="status", status=503), Fault(kind="status", status=503))
        with pytest.raises(openai.InternalServerError) as unavailable:
            await c.chat.completions.create(model="r", messages=MSG)
        assert unavailable.value.status_code == 503


async def test_upstream_failures_map_to_502_503_504(mock) -> None:
    cfg = simple_config(mock.url, retries=0, timeouts={"connect_s": 1, "first_byte_s": 0.3, "total_s": 2})
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        for fault, status in [
            (Fault(kind="malformed"), 502),
            (Fault(kind="drop"), 502),
            (Fault(kind="status", status=500), 502),
            (Fault(kind="status", status=503), 503),
            (Fault(kind="timeout", delay_s=5), 504),
        ]:
            mock.push_faults(fault)
            r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
            assert r.status_code == status, (fault, r.text)
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_upstream_down_is_502_and_server_survives(mock) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    async with run_gateway(simple_config(dead)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.status_code == 502
        message = r.json()["error"]["message"]
        assert "cannot connect (Connection refused)" in message
        # The upstream's address is nobody's business but the operator's.
        assert "127.0.0.1" not in message and dead.split(":")[-1].split("/")[0] not in message
        assert (await h.get("/healthz")).status_code == 200


async def test_unknown_path_and_method(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = await h.get("/v1/chat/completions")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"


async def test_request_id_accepted_generated_returned_and_forwarded(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG},
                         headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        assert mock.requests[-1].headers["x-request-id"] == "abc-123"
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG},
                         headers={"x-request-id": "bad id\xe9<script>".encode("latin-1")})
        rid = r.headers["x-request-id"]
        assert rid != "bad id" and len(rid) == 24
        assert mock.requests[-1].headers["x-request-id"] == rid


async def test_hostile_strings_are_relayed_not_interpreted(mock) -> None:
    nasty = "'; DROP TABLE x; -- \u0000 \ud7ff <script>alert(1)</script> ${HOME} %s %n"
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": [{"role": "user", "content": nasty}]})
        assert r.status_code == 200
        assert mock.requests[-1].body["messages"][0]["content"] == nasty
        r = await h.post("/v1/chat/completions", json={"model": nasty, "messages": MSG})
        assert r.status_code == 404
        msgspec.json.decode(r.content)


def _closed_port() -> int:
    from tests.conftest import free_port

    return free_port()
