"""Wire types of `/v1/embeddings`: `model` and `input` are checked, the rest relayed.
Never streamed: `stream` and `stream_options` are constants, not fields."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from gateway.chat.protocol import StreamOptions, body_parser

__all__ = ["EmbeddingsHead", "parse_embeddings_body"]


class EmbeddingsHead(msgspec.Struct):
    input: str | list[Any]  # a string, strings, token ids, or lists of token ids
    model: str | None = None
    stream: ClassVar[bool] = False
    stream_options: ClassVar[StreamOptions | None] = None


parse_embeddings_body = body_parser(EmbeddingsHead)
