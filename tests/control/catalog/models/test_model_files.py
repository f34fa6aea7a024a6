"""Model file uploads over HTTP: multipart, checksums, completeness, and rejected uploads leaving no trace."""

from __future__ import annotations

import hashlib
import json
import struct

from adapters.adminapi.testing import AdminTestApp
from tests.control.catalog._helpers import API, BOUNDARY, data, fail, file_at, multipart, stored_objects, upload
from tests.control.catalog.conftest import MAX_UPLOAD_BYTES

CONFIG = json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64}).encode()


def safetensors(payload: bytes = b"\x00" * 64) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}).encode()
    return struct.pack("<Q", len(header)) + header + payload


async def new_model(app: AdminTestApp, fmt: str = "safetensors", name: str = "weights") -> str:
    resp = await app.client.post(f"{API}/models", json={"name": name, "type": "base", "ownerTeam": "ml",
                                                        "format": fmt})
    return data(resp, 201)["id"]  # type: ignore[no-any-return]


async def test_multipart_upload_checksums_and_completeness(catalog: AdminTestApp) -> None:
    model_id = await new_model(catalog)
    first = data(await upload(catalog, f"models/{model_id}/upload", ("files", "config.json", CONFIG)), 201)
    assert first["complete"] is False and first["missingFiles"] == ["*.safetensors"]
    fail(await catalog.client.patch(f"{API}/models/{model_id}/status", json={"status": "under_review"}), 409)

    weights, tokenizer = safetensors(b"\x01" * 5000), b'{"version": "1.0"}'
    second = data(await upload(catalog, f"models/{model_id}/upload", ("files", "model.safetensors", weights),
                               ("files", "tokenizer.json", tokenizer)), 201)
    assert second["complete"] is True and second["missingFiles"] == [] and second["uploaded"] == [
        "model.safetensors", "tokenizer.json"]
    by_name = {f["filename"]: f for f in second["files"]}
    assert sorted(by_name) == ["config.json", "model.safetensors", "tokenizer.json"]
    for name, content in (("config.json", CONFIG), ("model.safetensors", weights), ("tokenizer.json", tokenizer)):
        entry = by_name[name]
        assert entry["sha256"] == hashlib.sha256(content).hexdigest() and entry["sizeBytes"] == len(content)
        assert file_at(entry["storageUri"]) == content and entry["storageUri"].endswith(f"/{name}")

    # Re-uploading a name replaces it: the row points at the new object and the old object is gone.
    new_config = CONFIG.replace(b"64", b"128")
    old_uri = by_name["config.json"]["storageUri"]
    third = data(await upload(catalog, f"models/{model_id}/upload", ("files", "config.json", new_config)), 201)
    config = next(f for f in third["files"] if f["filename"] == "config.json")
    assert config["sha256"] == hashlib.sha256(new_config).hexdigest() and file_at(old_uri) is None
    assert len(stored_objects(catalog)) == 3
    assert data(await catalog.client.get(f"{API}/models/{model_id}/files")) == {**third, "uploaded": []}

    data(await catalog.client.patch(f"{API}/models/{model_id}/status", json={"status": "under_review"}))
    frozen = fail(await upload(catalog, f"models/{model_id}/upload", ("files", "config.json", CONFIG)), 409)
    assert frozen["data"] == {"status": "under_review"}
    audit = data(await catalog.client.get("/llm-ops/v1/audit/logs?action=catalog.model.upload"))
    assert audit["total"] == 3 and audit["items"][0]["after"]["uploaded"] == ["config.json"]


async def test_rejected_uploads_leave_earlier_files_untouched(catalog: AdminTestApp) -> None:
    model_id = await new_model(catalog, fmt="gguf")
    path = f"models/{model_id}/upload"
    gguf = b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 100
    good = data(await upload(catalog, path, ("file", "model.gguf", gguf)), 201)
    assert good["complete"] is True
    before = stored_objects(catalog)

    for hostile in ("../../etc/passwd.json", "sub/dir.json", "..", ".hidden.json", "con.json", "a\\b.json"):
        body = fail(await upload(catalog, path, ("file", hostile, b"{}")), 400)
        assert body["data"] == {"filename": hostile} and "Rejected file name" in body["message"], hostile
    wrong_type = fail(await upload(catalog, path, ("file", "run.exe", b"MZ")), 415)
    assert wrong_type["data"]["filename"] == "run.exe" and ".gguf" in wrong_type["data"]["allowed"]
    assert "GGUF magic" in fail(await upload(catalog, path, ("file", "fake.gguf", b"<html>nope</html>")), 400)[
        "message"]
    fail(await upload(catalog, path, ("field", None, b"plain value")), 400)
    fail(await upload(catalog, path), 400)  # no parts at all
    fail(await upload(catalog, path, ("f", "a.json", b"{}"), ("f", "a.json", b"{}")), 400)
    fail(await catalog.client.post(f"{API}/{path}", json={"files": []}), 415)
    truncated, headers = multipart(("file", "notes.md", b"# hello " * 100))
    assert "truncated" in fail(await catalog.client.post(f"{API}/{path}", content=truncated[:-40],
                                                         headers=headers), 400)["message"]
    garbage = b"--" + BOUNDARY.encode() + b"\r\nno-colon-header\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--\r\n"
    fail(await catalog.client.post(f"{API}/{path}", content=garbage, headers=headers), 400)

    # Size limits: streamed past the limit (a good file first: it must be discarded too), and announced too big.
    big = b"GGUF" + b"\x00" * MAX_UPLOAD_BYTES
    over = fail(await upload(catalog, path, ("file", "README.md", b"ok"), ("file", "big.gguf", big)), 413)
    assert over["data"]["maxUploadBytes"] == MAX_UPLOAD_BYTES
    huge = b"GGUF" + b"\x00" * (MAX_UPLOAD_BYTES + (2 << 20))
    fail(await upload(catalog, path, ("file", "huge.gguf", huge)), 413)

    assert stored_objects(catalog) == before
    assert data(await catalog.client.get(f"{API}/models/{model_id}/files")) == {**good, "uploaded": []}
    fail(await upload(catalog, "models/mdl_missing/upload", ("file", "model.gguf", gguf)), 404)
    ext = data(await catalog.client.post(f"{API}/models", json={
        "name": "ext", "type": "external", "ownerTeam": "ml",
        "provider": {"kind": "ollama", "baseUrl": "http://localhost:11434", "model": "llama3"}}), 201)
    assert "no files" in fail(await upload(catalog, f"models/{ext['id']}/upload", ("file", "model.gguf", gguf)),
                              409)["message"]

    # Deleting the model removes its files from the object store.
    data(await catalog.client.delete(f"{API}/models/{model_id}"))
    assert stored_objects(catalog) == []


async def test_safetensors_header_claiming_more_than_the_file_is_422(catalog: AdminTestApp) -> None:
    model_id = await new_model(catalog)
    path = f"models/{model_id}/upload"
    liar = struct.pack("<Q", 2**62) + b'{"a": 1}' + b"\x00" * 11  # 27 bytes
    body = fail(await upload(catalog, path, ("files", "config.json", CONFIG), ("files", "model.safetensors", liar)),
                422)
    assert body["data"] == {"filename": "model.safetensors"} and str(2**62) in body["message"]
    past_end = safetensors(b"\x00" * 64)[:-8]  # the header's offsets reach 8 bytes past the end
    assert "tensor data" in fail(await upload(catalog, path, ("files", "model.safetensors", past_end)), 422)["message"]
    assert stored_objects(catalog) == []
    assert data(await catalog.client.get(f"{API}/models/{model_id}/files"))["files"] == []
