"""Required files per model format and the magic-byte checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from control.catalog.models.formats import FORMATS, BadMagic, check_magic, missing_files


def test_required_files_per_format() -> None:
    assert missing_files("safetensors", []) == ["config.json", "*.safetensors"]
    assert missing_files("safetensors", ["config.json", "model-00001-of-00002.safetensors"]) == []
    assert missing_files("pytorch", ["config.json", "pytorch_model.bin"]) == []
    assert missing_files("pytorch", ["CONFIG.JSON"]) == ["*.bin or *.pt or *.pth"]
    assert missing_files("gguf", ["README.md"]) == ["*.gguf"]
    assert missing_files("onnx", ["model.onnx", "model.onnx_data"]) == []
    assert FORMATS["gguf"].allows("Model.GGUF") and not FORMATS["gguf"].allows("model.safetensors")
    assert FORMATS["safetensors"].allows("tokenizer.model") and not FORMATS["onnx"].allows("x.exe")


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _drain(name: str, *parts: bytes) -> bytes:
    return b"".join([c async for c in check_magic(name, _chunks(*parts))])


async def test_magic_bytes_are_checked_across_chunk_boundaries() -> None:
    header = b'{"w":{}}'
    good = len(header).to_bytes(8, "little") + header
    assert await _drain("m.safetensors", good[:3], good[3:]) == good
    assert await _drain("m.gguf", b"GG", b"UF\x03", b"rest") == b"GGUF\x03rest"
    assert await _drain("config.json", b"anything") == b"anything"
    with pytest.raises(BadMagic):
        await _drain("m.gguf", b"<html>")
    with pytest.raises(BadMagic):
        await _drain("m.safetensors", b"\x00" * 8 + b"{}")  # zero-length header
    with pytest.raises(BadMagic):
        await _drain("m.gguf", b"GG")  # too short to be anything
