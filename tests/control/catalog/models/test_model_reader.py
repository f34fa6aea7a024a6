"""The MODEL_CATALOG seam: what serving and training read of a model, in their own transaction."""

from __future__ import annotations

import pytest

from adapters.adminapi import NotFound
from adapters.adminapi.seams import MODEL_CATALOG
from adapters.adminapi.testing import AdminTestApp
from tests.control.catalog._helpers import API, data, upload
from tests.control.catalog.models.test_models_api import base, create, external

GGUF = b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 100


async def test_reads_live_models_with_files_and_never_a_key(catalog: AdminTestApp) -> None:
    ext = await create(catalog, external("gpt-mini", tags=["chat"]))
    local = await create(catalog, base("smol", labels={"hf.repo": "HuggingFaceTB/SmolLM2-135M"}))
    data(await upload(catalog, f"models/{local['id']}/upload", ("files", "smol.gguf", GGUF)), 201)
    ctx = catalog.plane._require_running().contexts["catalog"]
    reader = ctx.services[MODEL_CATALOG]
    async with ctx.store.begin() as conn:
        got_ext = await reader.get(conn, ext["id"])
        got_local = await reader.get(conn, local["id"], lock=True)
    assert (got_ext.type, got_ext.status, got_ext.version, got_ext.tags) == ("external", "draft", 1, ["chat"])
    assert got_ext.provider == {"kind": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                                "apiKeyRef": "env:OPENAI_API_KEY"}
    assert got_local.format == "gguf" and got_local.labels == {"hf.repo": "HuggingFaceTB/SmolLM2-135M"}
    assert len(got_local.files) == 1 and got_local.files[0].endswith("smol.gguf")

    data(await catalog.client.delete(f"{API}/models/{ext['id']}"))
    with pytest.raises(NotFound):
        async with ctx.store.begin() as conn:
            await reader.get(conn, ext["id"])
    with pytest.raises(NotFound):
        async with ctx.store.begin() as conn:
            await reader.get(conn, "mdl_unknown")
