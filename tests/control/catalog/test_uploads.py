"""A client that disconnects mid-upload: logged quietly, and nothing of its upload is left behind."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.adminapi.testing import AdminTestApp
from tests.control.catalog._helpers import API, data, multipart, stored_objects


async def _post_then_disconnect(app: AdminTestApp, path: str, body: bytes, headers: dict[str, str]) -> list[Any]:
    """Send the first half of ``body`` through the raw ASGI interface, then ``http.disconnect``."""
    events = [{"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
              {"type": "http.disconnect"}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0) if len(events) > 1 else events[0]

    async def send(message: Any) -> None:
        sent.append(message)

    all_headers = {**headers, "authorization": f"Bearer {app.bootstrap_key}", "content-length": str(len(body))}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": f"{API}/{path}", "raw_path": f"{API}/{path}".encode(), "query_string": b"", "root_path": "",
             "headers": [(k.encode(), v.encode()) for k, v in all_headers.items()],
             "client": ("127.0.0.1", 5000), "server": ("admin.test", 80), "state": {}}
    await app.app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_client_gone_mid_dataset_upload(catalog: AdminTestApp, caplog: pytest.LogCaptureFixture) -> None:
    ds = data(await catalog.client.post(f"{API}/datasets", json={"name": "d", "ownerTeam": "ml"}), 201)
    body, headers = multipart(("file", "big.csv", b"question,answer\n" + b"q,a\n" * 20_000))
    with caplog.at_level(logging.INFO):
        sent = await _post_then_disconnect(catalog, f"datasets/{ds['id']}/upload", body, headers)
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert any("client disconnected" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert data(await catalog.client.get(f"{API}/datasets/{ds['id']}/versions"))["total"] == 0
    assert stored_objects(catalog) == []
    # The number was not used up: the next upload is version 1.
    body, headers = multipart(("file", "qa.csv", b"question,answer\nq,a\n"))
    done = await catalog.client.post(f"{API}/datasets/{ds['id']}/upload", content=body, headers=headers)
    assert data(done, 201)["version"] == 1


async def test_client_gone_mid_model_upload(catalog: AdminTestApp, caplog: pytest.LogCaptureFixture) -> None:
    model = data(await catalog.client.post(f"{API}/models", json={
        "name": "m", "ownerTeam": "ml", "type": "base", "format": "gguf"}), 201)
    body, headers = multipart(("file", "w.gguf", b"GGUF" + b"\x00" * 100_000))
    with caplog.at_level(logging.INFO):
        sent = await _post_then_disconnect(catalog, f"models/{model['id']}/upload", body, headers)
    assert sent[0]["status"] == 400  # reached the handler: not a 404 or an auth failure
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert stored_objects(catalog) == []
