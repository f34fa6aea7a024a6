"""Wire types of `/v1/completions`: the gateway checks `model`, `prompt` and `stream`; every
other field (`echo`, `logprobs`, `max_tokens`, `suffix`, …) is relayed untouched."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.chat.protocol import StreamOptions, body_parser

__all__ = ["CompletionsHead", "parse_completions_body"]


class CompletionsHead(msgspec.Struct):
    prompt: str | list[Any]  # a string, strings, token ids, or lists of token ids
    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None


parse_completions_body = body_parser(CompletionsHead)
