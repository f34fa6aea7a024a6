"""Hostile credential headers, sent as raw ASGI bytes (no client library would send most of them):
each is a 401 in OpenAI's schema, never a 500, and nothing of it comes back or reaches a log line."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from adapters.adminapi.auth import generate_key
from adapters.snapshots import ControlSnapshots, KeySpec, KeysSnapshot
from adapters.testdoubles import FunctionUpstream, chat_completion
from tests.gateway.inprocess import fn_config, in_process
from tests.gateway.policy.test_auth import NOW

BODY = json.dumps({"model": "r", "messages": [{"role": "user", "content": "hi"}]}).encode()


async def _post(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes], bytes]:
    sent = False
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"], out["headers"] = msg["status"], dict(msg["headers"])
        else:
            out["body"] += msg.get("body", b"")

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": "",
             "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2), "asgi": {"version": "3.0"},
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
                         *headers]}
    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


async def test_hostile_credential_headers_are_401s_and_echo_nothing(caplog: pytest.LogCaptureFixture) -> None:
    key_id, token, digest = generate_key()
    snap = KeysSnapshot(generation=1, published_at=NOW,
                        keys=[KeySpec(id=key_id, team_id="t", secret_sha256=digest, roles=["inference"])])
    good = token.encode()
    hostile = {
        "two Authorization headers": [(b"authorization", b"Bearer " + good), (b"authorization", b"Bearer " + good)],
        "two api-key headers": [(b"api-key", good), (b"api-key", good)],
        "CR LF after the key": [(b"authorization", b"Bearer " + good + b"\r\nx-injected: 1")],
        "LF inside the key": [(b"authorization", b"Bearer " + good[:20] + b"\n" + good[20:])],
        "NUL after the key": [(b"authorization", b"Bearer " + good + b"\x00")],
        "UTF-8 (not latin-1) key": [(b"authorization", "Bearer llmops_ключ".encode())],
        "latin-1 high bytes": [(b"api-key", good[:-1] + b"\xe9")],
        "1 MB header": [(b"authorization", b"Bearer " + b"A" * 1_000_000)],
        "key after a tab": [(b"authorization", b"Bearer\t" + good)],
    }
    async with in_process(fn_config(("r", "m0"), plugins=[{"name": "auth"}]),
                          upstreams={"fn": FunctionUpstream(lambda call: chat_completion("ok"))}) as (gw, h):
        gw.generation.control = ControlSnapshots(keys=snap)
        app = h._transport.app  # type: ignore[attr-defined]
        caplog.set_level(logging.DEBUG)
        assert (await _post(app, [(b"authorization", b"Bearer " + good)]))[0] == 200
        for what, headers in hostile.items():
            status, out_headers, body = await _post(app, headers)
            assert status == 401, what
            error = json.loads(body)["error"]
            assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key", what
            assert b"x-injected" not in out_headers and good[20:] not in body and "ключ".encode() not in body, what
    assert token[20:] not in caplog.text and "x-injected" not in caplog.text
