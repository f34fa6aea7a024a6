"""What files a model of each format may hold, which it must hold, and cheap content checks.

The rules are deliberately about names and magic bytes only: enough to stop a
wrong or truncated upload early (a ``.gguf`` that is really HTML, weights with
no ``config.json``) without parsing multi-gigabyte tensors.

    format       required                          weights               content check
    safetensors  config.json + *.safetensors       .safetensors          header length, header, offsets
    pytorch      config.json + *.bin/.pt/.pth      .bin .pt .pth         -
    gguf         *.gguf                            .gguf                 'GGUF'
    onnx         *.onnx                            .onnx .onnx_data      -

Every format may also carry the usual side files: ``.json`` (tokenizer, generation
config, shard index), ``tokenizer.model``, ``.txt`` (merges, vocab), ``.tiktoken``, ``.md``.

Safetensors is checked further, since its loaders trust the header: the declared
header length (at most ``MAX_SAFETENSORS_HEADER_BYTES``, buffered while it streams)
must fit the file, the header must be JSON naming each tensor's dtype, shape and
``data_offsets``, and every tensor's bytes must lie inside the file (and match its
shape for the usual dtypes). A file whose first bytes are wrong is ``BadMagic``
(400); one whose header contradicts the file is ``InvalidSafetensors`` (422).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

__all__ = [
    "FORMATS",
    "MAX_SAFETENSORS_HEADER_BYTES",
    "BadMagic",
    "FileRules",
    "InvalidSafetensors",
    "ModelFormat",
    "check_magic",
    "missing_files",
]

ModelFormat = Literal["safetensors", "pytorch", "gguf", "onnx"]
_SIDE_FILES = (".json", ".model", ".txt", ".tiktoken", ".md")


@dataclass(frozen=True)
class FileRules:
    extensions: tuple[str, ...]
    required: tuple[tuple[str, ...], ...]  # each entry: glob patterns, at least one file must match one

    def allows(self, filename: str) -> bool:
        return filename.lower().endswith(self.extensions)


FORMATS: dict[str, FileRules] = {
    "safetensors": FileRules((".safetensors", *_SIDE_FILES), (("config.json",), ("*.safetensors",))),
    "pytorch": FileRules((".bin", ".pt", ".pth", *_SIDE_FILES), (("config.json",), ("*.bin", "*.pt", "*.pth"))),
    "gguf": FileRules((".gguf", *_SIDE_FILES), (("*.gguf",),)),
    "onnx": FileRules((".onnx", ".onnx_data", *_SIDE_FILES), (("*.onnx",),)),
}


def missing_files(fmt: str, filenames: list[str]) -> list[str]:
    """Required entries (as glob text, e.g. ``*.safetensors``) no file satisfies; empty means complete."""
    lowered = [name.lower() for name in filenames]
    return [
        " or ".join(patterns)
        for patterns in FORMATS[fmt].required
        if not any(fnmatch.fnmatchcase(name, p) for name in lowered for p in patterns)
    ]


class BadMagic(ValueError):
    """A file's first bytes contradict its extension."""


class InvalidSafetensors(BadMagic):
    """A safetensors header that contradicts the file: too long, not JSON, or offsets past the end."""


MAX_SAFETENSORS_HEADER_BYTES = 16 << 20  # real headers are KiBs; the format's own cap is 100 MB
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


async def check_magic(filename: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, raising ``BadMagic`` early if the head contradicts the extension."""
    lower = filename.lower()
    if lower.endswith(".safetensors"):
        check = _SafetensorsCheck(lower)
        async for chunk in chunks:
            check.feed(chunk)
            yield chunk
        check.finish()
        return
    expect = _expectation(lower)
    head = b""
    checked = expect is None
    async for chunk in chunks:
        if expect is not None and not checked:
            head += chunk[: 16 - len(head)]
            if len(head) >= 9:
                expect(head)
                checked = True
        yield chunk
    if expect is not None and not checked:
        expect(head)


def _expectation(lower: str) -> Callable[[bytes], None] | None:
    if lower.endswith(".gguf"):
        def gguf(head: bytes) -> None:
            if not head.startswith(b"GGUF"):
                raise BadMagic(f"{lower!r} does not start with the GGUF magic bytes")
        return gguf
    return None


class _SafetensorsCheck:
    """Streaming check of a safetensors file: ``feed`` every chunk, then ``finish`` once the size is known."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._head = bytearray()  # the length prefix and the header; freed once parsed
        self._header_bytes: int | None = None
        self._data_end: int | None = None  # the furthest tensor byte the header points at
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        view = memoryview(chunk)
        while self._data_end is None:
            target = 9 if self._header_bytes is None else 8 + self._header_bytes
            take = max(0, target - len(self._head))
            self._head += view[:take]
            view = view[take:]
            if len(self._head) < target:
                return
            if self._header_bytes is None:
                self._header_bytes = self._read_length()
            else:
                self._data_end = self._read_header()
                self._head = bytearray()

    def finish(self) -> None:
        if self._header_bytes is None:
            raise BadMagic(f"{self._name!r} is not a safetensors file (expected an 8-byte header length, then JSON)")
        if self._data_end is None:
            raise InvalidSafetensors(f"{self._name!r}: the header claims {self._header_bytes} bytes but the file "
                                     f"has only {self._size - 8} after the length")
        data_bytes = self._size - 8 - self._header_bytes
        if self._data_end > data_bytes:
            raise InvalidSafetensors(f"{self._name!r}: tensor data ends at byte {self._data_end} of the data "
                                     f"section, but the file holds only {data_bytes} bytes of tensor data")

    def _read_length(self) -> int:
        length = int.from_bytes(self._head[:8], "little")
        if length == 0 or self._head[8:9] != b"{":
            raise BadMagic(f"{self._name!r} is not a safetensors file (expected an 8-byte header length, then JSON)")
        if length > MAX_SAFETENSORS_HEADER_BYTES:
            raise InvalidSafetensors(f"{self._name!r}: the header claims {length} bytes; the limit is "
                                     f"{MAX_SAFETENSORS_HEADER_BYTES}")
        return length

    def _read_header(self) -> int:
        try:
            header = msgspec.json.decode(bytes(self._head[8:]))
        except (msgspec.DecodeError, RecursionError):
            raise InvalidSafetensors(f"{self._name!r}: the header is not valid JSON") from None
        if not isinstance(header, dict):
            raise InvalidSafetensors(f"{self._name!r}: the header is not a JSON object")
        return max((self._tensor_end(key, info) for key, info in header.items() if key != "__metadata__"),
                   default=0)

    def _tensor_end(self, key: str, info: Any) -> int:
        bad = InvalidSafetensors(f"{self._name!r}: tensor {key[:100]!r} needs dtype, shape and "
                                 "data_offsets [begin, end] with 0 <= begin <= end")
        if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
            raise bad
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise bad
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise bad
        itemsize = _DTYPE_BYTES.get(info["dtype"])
        if itemsize is not None and offsets[1] - offsets[0] != math.prod(shape) * itemsize:
            raise InvalidSafetensors(f"{self._name!r}: tensor {key[:100]!r} is {info['dtype']} {shape}, which "
                                     f"takes {math.prod(shape) * itemsize} bytes, not {offsets[1] - offsets[0]}")
        return int(offsets[1])
