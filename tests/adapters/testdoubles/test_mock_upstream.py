"""The mock upstream over real loopback sockets: protocol shapes, pacing, faults, control, CLI."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.testdoubles import Fault, MockConfig, MockServer, start_mock_upstream
from adapters.testdoubles.mock_upstream import HELP_TEXT, add_cli_arguments

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to me"}]
PROMPT_TOKENS = 2 + 1 + 4 + 1  # words + one per message


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with await start_mock_upstream(MockConfig(faults=True)) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m1", "messages": MSGS, **extra}


async def post(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any, Any]:
    async with http.post(url, json=body, **kw) as resp:
        raw = await resp.read()
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            data = raw
        return resp.status, data, resp.headers


async def sse(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> list[Any]:
    """Every `data:` payload of a stream, decoded; `[DONE]` kept as the string."""
    async with http.post(url, json=body, **kw) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = (await resp.read()).decode()
    frames = [f for f in text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[6:] if f[6:] == "[DONE]" else msgspec.json.decode(f[6:]) for f in frames]


async def test_non_stream_body_schema_and_counts(server: MockServer, http: aiohttp.ClientSession) -> None:
    status, body, headers = await post(http, server.url + "/chat/completions", chat(n=2))
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "m1" and body["system_fingerprint"] == "mock"
    assert isinstance(body["created"], int)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 16
    assert choice["message"]["content"].startswith("mock token reply")
    assert body["usage"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 32,
                             "total_tokens": PROMPT_TOKENS + 32}


async def test_max_tokens_caps_with_length(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.config = msgspec.structs.replace(server.config, model_name="served", usage=False)
    _, body, _ = await post(http, server.url + "/chat/completions", chat(max_tokens=5))
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "mock token reply from the"
    assert body["model"] == "served" and "usage" not in body
    url = server.url + "/chat/completions"
    _, body, _ = await post(http, url, chat(max_tokens=9, max_completion_tokens=3))
    assert len(body["choices"][0]["message"]["content"].split()) == 3
    _, body, _ = await post(http, server.url + "/chat/completions", chat(max_tokens=16))
    assert body["choices"][0]["finish_reason"] == "stop"


BAD_BODIES = [b"{not json", b"[1, 2]", b'{"messages": []}', b'{"model": "m", "messages": 3}']


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_bad_requests_get_400(server: MockServer, http: aiohttp.ClientSession, body: bytes) -> None:
    async with http.post(server.url + "/chat/completions", data=body) as resp:
        assert resp.status == 400
        err = (await resp.json())["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert set(err) == {"message", "type", "param", "code"}
    assert len(server.requests) == 1


async def test_stream_framing_without_usage(server: MockServer, http: aiohttp.ClientSession) -> None:
    _, plain, _ = await post(http, server.url + "/chat/completions", chat())
    frames = await sse(http, server.url + "/chat/completions", chat(stream=True))
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    content = chunks[1:-1]
    assert len(content) == 16 and all(c["choices"][0]["finish_reason"] is None for c in content)
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert text == plain["choices"][0]["message"]["content"]


async def test_stream_usage_chunk_on_request(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.config = msgspec.structs.replace(server.config, chunk_tokens=3, completion_tokens=7)
    body = chat(stream=True, stream_options={"include_usage": True})
    frames = await sse(http, server.url + "/chat/completions", body)
    usage_chunk = frames[-2]
    assert frames[-1] == "[DONE]" and usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 7,
                                    "total_tokens": PROMPT_TOKENS + 7}
    deltas = [f["choices"][0]["delta"].get("content") for f in frames[1:-3]]
    assert deltas == ["mock token reply", " from the test", " double"]
    assert all(f["usage"] is None for f in frames[:-2])  # OpenAI's `"usage": null` on the other chunks
    server.config = msgspec.structs.replace(server.config, usage=False)
    frames = await sse(http, server.url + "/chat/completions", body)
    assert frames[-2]["choices"][0]["finish_reason"] == "stop"


async def test_stream_pacing(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.config = msgspec.structs.replace(server.config, completion_tokens=10, tokens_per_s=50)
    t0 = time.perf_counter()
    frames = await sse(http, server.url + "/chat/completions", chat(stream=True))
    assert time.perf_counter() - t0 >= 0.17  # 9 gaps of 20 ms
    assert len(frames) == 1 + 10 + 1 + 1


async def test_latency_and_slow_model(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.config = msgspec.structs.replace(server.config, latency_s=0.1)
    t0 = time.perf_counter()
    status, _, _ = await post(http, server.url + "/chat/completions", chat(model="slow:0.1"))
    assert status == 200 and time.perf_counter() - t0 >= 0.19


async def test_queued_status_faults_are_fifo(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.push_faults(Fault(kind="status", status=429), Fault(kind="status"))
    status, body, headers = await post(http, server.url + "/chat/completions", chat())
    assert status == 429 and headers["retry-after"] == "1"
    assert body["error"]["type"] == "requests" and body["error"]["code"] == "rate_limit_exceeded"
    status, body, _ = await post(http, server.url + "/chat/completions", chat())
    assert status == 503 and body["error"]["type"] == "server_error"
    status, _, _ = await post(http, server.url + "/chat/completions", chat())
    assert status == 200


async def test_timeout_fault_counts_disconnect(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.push_faults(Fault(kind="timeout", delay_s=5))
    with pytest.raises(TimeoutError):
        await post(http, server.url + "/chat/completions", chat(), timeout=aiohttp.ClientTimeout(total=0.2))
    await _until(lambda: server.disconnects == 1 and server.active == 0)


async def test_drop_and_malformed_faults(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.push_faults(Fault(kind="drop"), Fault(kind="malformed"), Fault(kind="drop_mid_stream"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, server.url + "/chat/completions", chat())
    async with http.post(server.url + "/chat/completions", json=chat()) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(await resp.read())
    with pytest.raises(aiohttp.ServerDisconnectedError):  # non-stream drop_mid_stream is a plain drop
        await post(http, server.url + "/chat/completions", chat())
    assert server.disconnects == 0  # our own drops are not the client's doing


async def test_drop_mid_stream(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.push_faults(Fault(kind="drop_mid_stream", after_chunks=3))
    got = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(server.url + "/chat/completions", json=chat(stream=True)) as resp:
            assert resp.status == 200
            async for piece in resp.content.iter_any():
                got += piece
    frames = [msgspec.json.decode(f[6:]) for f in got.decode().split("\n\n") if f]
    assert len(frames) == 1 + 3 and b"[DONE]" not in got


async def test_error_mid_stream(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.push_faults(Fault(kind="error_mid_stream", after_chunks=2))
    frames = await sse(http, server.url + "/chat/completions", chat(stream=True))
    assert len(frames) == 1 + 2 + 2 and frames[-1] == "[DONE]"
    assert frames[-2] == {"error": {"message": "mock mid-stream failure", "type": "server_error",
                                    "param": None, "code": None}}


@pytest.mark.parametrize("via", ["header", "model"])
async def test_per_request_faults(server: MockServer, http: aiohttp.ClientSession, via: str) -> None:
    def send(spec: str, **extra: Any) -> dict[str, Any]:
        if via == "header":
            return {"json": chat(**extra), "headers": {"x-mock-fault": spec}}
        return {"json": chat(model=f"fault:{spec}", **extra)}

    url = server.url + "/chat/completions"
    async with http.post(url, **send("status=418")) as resp:
        assert resp.status == 418
    async with http.post(url, **send("malformed")) as resp:
        assert resp.status == 200 and (await resp.read()).startswith(b'{"id": "chatcmpl-x"')
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(url, **send("drop")) as resp:
            await resp.read()
    async with http.post(url, **send("error_mid_stream=1", stream=True)) as resp:
        assert (await resp.read()).count(b'"content":') == 2  # role chunk + one content chunk
    with pytest.raises(TimeoutError):
        async with http.post(url, **send("timeout=3"), timeout=aiohttp.ClientTimeout(total=0.1)) as resp:
            await resp.read()
    async with http.post(url, **send("nonsense=1")) as resp:
        assert resp.status == 400
    async with http.post(url, json=chat()) as resp:
        assert resp.status == 200  # per-request faults never leak into the next request


async def test_control_endpoints(server: MockServer, http: aiohttp.ClientSession) -> None:
    root = server.root_url
    status, body, _ = await post(http, root + "/_mock/faults", [{"kind": "status", "status": 500}])
    assert status == 200 and body == {"queued": 1}
    status, body, _ = await post(http, root + "/_mock/config", {"completion_tokens": 2, "model_name": "x"})
    assert status == 200 and body["completion_tokens"] == 2 and body["latency_s"] == 0.0
    assert (await post(http, root + "/_mock/config", {"completion_tokenz": 2}))[0] == 400
    assert (await post(http, root + "/_mock/config", {"chunk_tokens": "x"}))[0] == 400
    assert (await post(http, root + "/_mock/faults", [{"kind": "bogus"}]))[0] == 400
    assert (await post(http, server.url + "/chat/completions", chat()))[0] == 500
    _, body, _ = await post(http, server.url + "/chat/completions", chat(extra_field={"a": 1}),
                            headers={"X-Trace": "t1"})
    assert body["choices"][0]["message"]["content"] == "mock token" and body["model"] == "x"
    async with http.get(root + "/_mock/requests") as resp:
        recorded = await resp.json()
    assert [r["path"] for r in recorded] == ["/v1/chat/completions"] * 2
    assert recorded[1]["body"]["extra_field"] == {"a": 1} and recorded[1]["headers"]["x-trace"] == "t1"
    assert server.requests[1].method == "POST"
    async with http.get(root + "/_mock/stats") as resp:
        assert (await resp.json())["requests"] == 2
    assert (await post(http, root + "/_mock/reset", None))[0] == 200
    assert server.requests == [] and server.config == MockConfig(faults=True)


async def test_http_fault_switches_are_off_by_default(http: aiohttp.ClientSession) -> None:
    """The gateway's embedded default runs this double: anyone who can name a model must not be
    able to make it fail (and so open its circuit for everyone)."""
    async with await start_mock_upstream() as srv:
        url = srv.url + "/chat/completions"
        status, body, _ = await post(http, url, chat(model="fault:status=500"))
        assert status == 200 and body["model"] == "fault:status=500"  # just a model name
        assert (await post(http, url, chat(), headers={"x-mock-fault": "status=500"}))[0] == 200
        t0 = time.perf_counter()
        assert (await post(http, url, chat(model="slow:5")))[0] == 200
        assert time.perf_counter() - t0 < 4
        for path, body in [("/_mock/faults", [{"kind": "status", "status": 500}]), ("/_mock/config", {"api_key": "x"}),
                           ("/_mock/reset", None)]:
            status, answer, _ = await post(http, srv.root_url + path, body)
            assert status == 403 and answer["error"]["type"] == "permission_error", path
        async with http.get(srv.root_url + "/_mock/requests") as resp:
            assert resp.status == 403
        assert srv.faults == deque() and srv.config == MockConfig()
        srv.push_faults(Fault(kind="status", status=503))  # in-process tests may always queue faults
        assert (await post(http, url, chat()))[0] == 503


async def test_bodies_up_to_the_gateway_limit_are_accepted(server: MockServer, http: aiohttp.ClientSession) -> None:
    big = "x" * (3 * 1024 * 1024)  # between aiohttp's 1 MiB default and the gateway's 4 MiB default
    status, _, _ = await post(http, server.url + "/chat/completions", chat(messages=[{"role": "user", "content": big}]))
    assert status == 200


async def test_ollama_non_stream_and_stream(server: MockServer, http: aiohttp.ClientSession) -> None:
    url = server.root_url + "/api/chat"
    status, body, _ = await post(http, url, {"model": "llama3", "messages": MSGS, "stream": False,
                                             "options": {"num_predict": 4, "temperature": 0}})
    assert status == 200 and body["done"] is True and body["done_reason"] == "length"
    assert body["message"] == {"role": "assistant", "content": "mock token reply from"}
    assert body["model"] == "llama3" and body["created_at"].endswith("Z")
    assert body["prompt_eval_count"] == PROMPT_TOKENS and body["eval_count"] == 4
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(body[key], int)
    async with http.post(url, json={"model": "llama3", "messages": MSGS}) as resp:  # stream defaults to true
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        lines = [msgspec.json.decode(line) async for line in resp.content if line.strip()]
    assert len(lines) == 17 and all(not x["done"] for x in lines[:-1])
    words = ["mock", "token", "reply", "from", "the", "test", "double", "upstream"] * 2
    assert "".join(x["message"]["content"] for x in lines) == " ".join(words)
    assert lines[-1]["done"] and lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] == 16


async def test_ollama_faults(server: MockServer, http: aiohttp.ClientSession) -> None:
    url = server.root_url + "/api/chat"
    server.push_faults(Fault(kind="status", status=500), Fault(kind="error_mid_stream", after_chunks=1))
    status, body, _ = await post(http, url, {"model": "m", "messages": MSGS, "stream": False})
    assert status == 500 and isinstance(body["error"], str)
    async with http.post(url, json={"model": "m", "messages": MSGS}) as resp:
        lines = [msgspec.json.decode(line) async for line in resp.content if line.strip()]
    assert len(lines) == 2 and lines[-1] == {"error": "mock mid-stream failure"}


async def test_api_key(http: aiohttp.ClientSession) -> None:
    async with await start_mock_upstream(MockConfig(api_key="sk-test")) as srv:
        status, body, _ = await post(http, srv.url + "/chat/completions", chat())
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        async with http.get(srv.url + "/models") as resp:
            assert resp.status == 401
        auth = {"Authorization": "Bearer sk-test"}
        assert (await post(http, srv.url + "/chat/completions", chat(), headers=auth))[0] == 200
        assert len(srv.requests) == 2 and srv.requests[1].headers["authorization"] == "Bearer sk-test"


async def test_disconnect_while_streaming(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.config = msgspec.structs.replace(server.config, completion_tokens=200, tokens_per_s=100)
    async with http.post(server.url + "/chat/completions", json=chat(stream=True)) as resp:
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")
        assert server.active == 1
        resp.close()  # the client goes away mid-stream
    await _until(lambda: server.disconnects == 1 and server.active == 0)
    server.clear()
    assert server.disconnects == 0 and server.requests == []


async def test_metrics_models_tags_health(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.config = msgspec.structs.replace(server.config, vllm_waiting=7, latency_s=0.3)
    pending = asyncio.ensure_future(post(http, server.url + "/chat/completions", chat()))
    await _until(lambda: server.active == 1)
    async with http.get(server.root_url + "/metrics") as resp:
        text = await resp.text()
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["vllm:num_requests_waiting"].value == 7
    assert samples["vllm:num_requests_running"].value == 1
    assert samples["vllm:num_requests_running"].labels == {"model_name": "mock-model"}
    assert "# TYPE vllm:num_requests_waiting gauge" in text
    assert (await pending)[0] == 200
    async with http.get(server.url + "/models") as resp:
        assert (await resp.json())["data"][0]["id"] == "mock-model"
    async with http.get(server.root_url + "/api/tags") as resp:
        assert (await resp.json())["models"][0]["name"] == "mock-model"
    async with http.get(server.root_url + "/health") as resp:
        assert resp.status == 200
    assert [r.path for r in server.requests] == ["/v1/chat/completions"]  # only chat requests are recorded


async def test_record_limit_keeps_newest(http: aiohttp.ClientSession) -> None:
    async with await start_mock_upstream(MockConfig(record_limit=4)) as srv:
        for i in range(7):
            await post(http, srv.url + "/chat/completions", chat(seq=i))
        assert len(srv.requests) <= 4 and srv.requests[-1].body["seq"] == 6


async def test_openai_sdk(server: MockServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0)
    try:
        out = await client.chat.completions.create(model="gpt-x", messages=MSGS, max_tokens=3)
        assert out.choices[0].message.content == "mock token reply"
        assert out.choices[0].finish_reason == "length" and out.usage and out.usage.completion_tokens == 3
        stream = await client.chat.completions.create(
            model="gpt-x", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
        parts, usage = [], None
        async for chunk in stream:
            parts += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
        assert len("".join(parts).split()) == 16 and usage and usage.total_tokens == PROMPT_TOKENS + 16
        server.push_faults(Fault(kind="status", status=503))
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="gpt-x", messages=MSGS)
    finally:
        await client.close()


def test_cli_serves_until_sigterm() -> None:
    parser = argparse.ArgumentParser(description=HELP_TEXT)
    add_cli_arguments(parser)
    args = parser.parse_args(["--port", "0", "--no-usage", "--tokens-per-s", "5"])
    assert (args.host, args.no_usage, args.tokens_per_s, args.faults) == ("127.0.0.1", True, 5, False)
    assert parser.parse_args(["--faults"]).faults is True
    assert parser.parse_args([]).port == 8100 and "TEST DOUBLE" in HELP_TEXT
    code = (
        "import argparse, sys\n"
        "from adapters.testdoubles.mock_upstream import add_cli_arguments, run_from_args\n"
        "p = argparse.ArgumentParser(); add_cli_arguments(p); run_from_args(p.parse_args(sys.argv[1:]))"
    )
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-c", code, "--port", "0"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.startswith("mock upstream (TEST DOUBLE) listening on http://127.0.0.1:")
            assert line.rstrip().endswith("/v1")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def _until(cond: Any, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)
