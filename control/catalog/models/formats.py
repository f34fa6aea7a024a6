"""What files a model of each format may hold, which it must hold, and cheap content checks.

The rules are deliberately about names and magic bytes only: enough to stop a
wrong or truncated upload early (a ``.gguf`` that is really HTML, weights with
no ``config.json``) without parsing multi-gigabyte tensors.

    format       required                          weights               magic check
    safetensors  config.json + *.safetensors       .safetensors          8-byte header length, then '{'
    pytorch      config.json + *.bin/.pt/.pth      .bin .pt .pth         -
    gguf         *.gguf                            .gguf                 'GGUF'
    onnx         *.onnx                            .onnx .onnx_data      -

Every format may also carry the usual side files: ``.json`` (tokenizer, generation
config, shard index), ``tokenizer.model``, ``.txt`` (merges, vocab), ``.tiktoken``, ``.md``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["FORMATS", "BadMagic", "FileRules", "ModelFormat", "check_magic", "missing_files"]

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


async def check_magic(filename: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, raising ``BadMagic`` early if the head contradicts the extension."""
    lower = filename.lower()
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
    if lower.endswith(".safetensors"):
        def safetensors(head: bytes) -> None:
            if len(head) < 9 or head[8:9] != b"{" or int.from_bytes(head[:8], "little") == 0:
                raise BadMagic(f"{lower!r} is not a safetensors file (expected an 8-byte header length, then JSON)")
        return safetensors
    return None
