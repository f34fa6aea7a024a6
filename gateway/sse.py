"""Server-sent event framing for OpenAI-style streams."""

from __future__ import annotations

__all__ = ["DONE", "error_frame", "frame"]

DONE = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_frame(error_json: bytes) -> bytes:
    """A failure after headers went out: one error event, then the caller sends DONE."""
    return b"data: " + error_json + b"\n\n"
