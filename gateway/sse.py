"""Server-sent event framing for OpenAI-style streams.

A failure after the headers went out is framed like any chunk (its payload is
OpenAI's error object), then the caller ends the stream with DONE.
"""

from __future__ import annotations

__all__ = ["DONE", "frame"]

DONE = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
