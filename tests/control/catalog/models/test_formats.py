"""Required files per model format and the magic-byte checks."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator

import pytest

from control.catalog.models.formats import FORMATS, BadMagic, InvalidSafetensors, check_magic, missing_files


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
    good = _safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\x00" * 8)
    assert await _drain("m.safetensors", good[:3], good[3:]) == good
    assert await _drain("m.safetensors", *[good[i:i + 1] for i in range(len(good))]) == good
    assert await _drain("m.gguf", b"GG", b"UF\x03", b"rest") == b"GGUF\x03rest"
    assert await _drain("config.json", b"anything") == b"anything"
    with pytest.raises(BadMagic):
        await _drain("m.gguf", b"<html>")
    with pytest.raises(BadMagic):
        await _drain("m.safetensors", b"\x00" * 8 + b"{}")  # zero-length header
    with pytest.raises(BadMagic):
        await _drain("m.gguf", b"GG")  # too short to be anything


def _safetensors(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("content", [
    struct.pack("<Q", 2**62) + b'{"a": 1}' + b"\x00" * 11,  # 27 bytes claiming a 2^62-byte header
    struct.pack("<Q", 100) + b'{"w": {}}',  # header longer than the file
    _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\x00" * 8),  # past the end
    _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 2**62]}}, b"\x00" * 16),
    _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 4]}}, b"\x00" * 16),  # begin > end
    _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\x00" * 16),  # shape says 16
    _safetensors({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}),
    _safetensors({"w": {"shape": [1], "data_offsets": [0, 4]}}, b"\x00" * 4),  # no dtype
    struct.pack("<Q", 5) + b"{oops",  # not JSON
    struct.pack("<Q", 2000) + b"{" + b"[" * 1999,  # nested past msgspec's depth guard
])
async def test_safetensors_header_must_fit_the_file(content: bytes) -> None:
    with pytest.raises(InvalidSafetensors):
        await _drain("m.safetensors", content[:5], content[5:])


async def test_safetensors_accepts_metadata_unknown_dtypes_and_padding() -> None:
    header = {"__metadata__": {"format": "pt"}, "a": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},
              "b": {"dtype": "F4_NEW", "shape": [8], "data_offsets": [12, 16]}}
    raw = json.dumps(header).encode() + b"    "
    content = struct.pack("<Q", len(raw)) + raw + b"\x01" * 16
    assert await _drain("m.safetensors", content) == content
