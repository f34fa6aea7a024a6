"""The admin API as the console's pages see it: the envelope unwrapped, failures as `ApiError` with field errors.

Every call carries the signed-in person's key, so the admin API's own permission table decides what they
may do: a page that shows a button to someone the API would refuse is a bug, but never a hole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from adapters.adminapi import ADMIN_PREFIX
from gateway.console.inprocess import Body, InProcess, Reply, StreamedReply

__all__ = ["Api", "ApiError", "Listing"]

Query = Mapping[str, Any] | Sequence[tuple[str, Any]]


class ApiError(Exception):
    """A refused or failed admin call: its status, its message, and per-field messages when it named fields."""

    def __init__(self, status: int, message: str, errors: Mapping[str, str] | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = dict(errors or {})
        self.data = data


@dataclass(frozen=True)
class Listing:
    """One page of a list endpoint (`Page` in the admin API)."""

    items: list[Any]
    page: int
    page_size: int
    total: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size)) if self.page_size else 1


class Api:
    """The admin API (paths relative to `/llm-ops/v1`) and the data plane (absolute paths), as one key."""

    def __init__(self, caller: InProcess, key: str, *, request_id: str | None = None,
                 client: tuple[str, int] | None = None) -> None:
        self._caller = caller
        self._key = key
        self._request_id = request_id
        self._client = client

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self._key}", "accept": "application/json"}
        if self._request_id:
            headers["x-request-id"] = self._request_id
        return {**headers, **(extra or {})}

    async def get(self, path: str, query: Query = ()) -> Any:
        """The `data` of a GET."""
        return _data(await self.raw("GET", path, query=query))

    async def list(self, path: str, query: Query = ()) -> Listing:
        """One page of a list endpoint; `query` carries `page`/`pageSize` and the filters."""
        data = await self.get(path, query)
        if isinstance(data, list):  # a few lists are not paged
            return Listing(items=data, page=1, page_size=max(len(data), 1), total=len(data))
        extra = {k: v for k, v in data.items() if k not in {"items", "page", "pageSize", "total"}}
        return Listing(items=list(data.get("items", [])), page=int(data.get("page", 1)),
                       page_size=int(data.get("pageSize", 50)), total=int(data.get("total", 0)), extra=extra)

    async def send(self, method: str, path: str, payload: Any = None, query: Query = ()) -> Any:
        """The `data` of a write; `payload` goes as JSON (none: an empty body)."""
        body = b"" if payload is None else msgspec.json.encode(payload)
        headers = {"content-type": "application/json"} if payload is not None else {}
        return _data(await self.raw(method, path, query=query, body=body, headers=headers))

    async def raw(self, method: str, path: str, *, query: Query = (), body: Body = b"",
                  headers: Mapping[str, str] | None = None) -> Reply:
        """The whole answer of an admin call, unchecked (exports, files)."""
        return await self._caller.request(method, ADMIN_PREFIX + path, query=query, headers=self.headers(headers),
                                          body=body, client=self._client)

    def stream(self, method: str, path: str, *, body: Body = b"", headers: Mapping[str, str] | None = None,
               query: Query = (), admin: bool = True) -> Any:
        """An answer as it streams (`async with api.stream(...) as reply`); `admin=False`: a data-plane path."""
        return self._caller.stream(method, (ADMIN_PREFIX if admin else "") + path, query=query,
                                   headers=self.headers(headers), body=body, client=self._client)


async def read_all(reply: StreamedReply) -> bytes:
    parts = [chunk async for chunk in reply.chunks]
    return b"".join(parts)


def error_of(status: int, body: bytes) -> ApiError:
    """The `ApiError` an envelope (or an OpenAI error body) describes."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return ApiError(status, body.decode("utf-8", "replace")[:300] or f"HTTP {status}")
    if not isinstance(doc, dict):
        return ApiError(status, f"HTTP {status}")
    if isinstance(doc.get("error"), dict):  # the data plane's OpenAI-shaped error
        err = doc["error"]
        return ApiError(status, str(err.get("message") or f"HTTP {status}"),
                        {str(err["param"]): str(err.get("message"))} if err.get("param") else None)
    data = doc.get("data")
    errors: dict[str, str] = {}
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        for item in data["errors"]:
            if isinstance(item, dict) and "message" in item:
                errors.setdefault(str(item.get("field") or ""), str(item["message"]))
    return ApiError(status, str(doc.get("message") or f"HTTP {status}"), errors, data)


def _data(reply: Reply) -> Any:
    if reply.status >= 400:
        raise error_of(reply.status, reply.body)
    if not reply.body:
        return None
    doc = msgspec.json.decode(reply.body)
    return doc.get("data") if isinstance(doc, dict) and "status" in doc and "data" in doc else doc
