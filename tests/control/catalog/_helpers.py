"""Helpers shared by the catalog tests: hand-built multipart bodies, object-store listing, keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from adapters.adminapi.testing import AdminTestApp

API = "/llm-ops/v1/catalog"
BOUNDARY = "catalog-test-boundary-7f3a"


def multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict[str, str]]:
    """``(field, filename, content)`` parts -> (body, headers). Built by hand so hostile names go out verbatim."""
    body = b""
    for field, filename, content in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


async def upload(app: AdminTestApp, path: str, *parts: tuple[str, str | None, bytes], **kwargs: Any) -> Any:
    body, headers = multipart(*parts)
    return await app.client.post(f"{API}/{path}", content=body, headers={**headers, **kwargs.pop("headers", {})},
                                 **kwargs)


def stored_objects(app: AdminTestApp) -> list[str]:
    """Every object in the local object store (staging excluded), as relative keys."""
    root = Path(app.plane.cfg.data_dir) / "objects"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.relative_to(root).as_posix().startswith(".llmops-staging"))


def file_at(uri: str) -> bytes | None:
    """The bytes behind a ``file://`` storage URI, or ``None`` when nothing is there."""
    path = Path(unquote(urlparse(uri).path))
    return path.read_bytes() if path.is_file() else None


async def make_key(app: AdminTestApp, role: str) -> dict[str, str]:
    resp = await app.client.post("/llm-ops/v1/admin/keys", json={"name": f"k-{role}", "role": role})
    assert resp.status_code == 201, resp.text
    return {"authorization": f"Bearer {resp.json()['data']['key']}"}


def fail(resp: Any, status: int) -> dict[str, Any]:
    """Assert an error envelope with ``status``; return the body."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "fail" and body["message"], body
    return body  # type: ignore[no-any-return]


def data(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]
