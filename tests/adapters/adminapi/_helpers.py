"""Helpers shared by the admin API tests."""

from __future__ import annotations

from adapters.adminapi.testing import AdminTestApp


async def make_key(admin: AdminTestApp, role: str, name: str | None = None) -> tuple[str, str]:
    """Create a key over HTTP with the bootstrap key; returns ``(key_id, token)``."""
    resp = await admin.client.post("/llm-ops/v1/admin/keys", json={"name": name or f"k-{role}", "role": role})
    assert resp.status_code == 201, resp.text
    data = resp.json()["data"]
    return data["id"], data["key"]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
