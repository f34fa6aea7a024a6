"""Wire types of `/v1/responses`: `model` and `stream` are checked; `input`, `instructions`,
`tools`, `previous_response_id`, … are relayed untouched. Usage always arrives (in the body,
or the stream's `response.completed` event), so there are no `stream_options`."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from gateway.chat.protocol import StreamOptions, body_parser

__all__ = ["ResponsesHead", "parse_responses_body"]


class ResponsesHead(msgspec.Struct):
    model: str | None = None
    stream: bool | None = False
    stream_options: ClassVar[StreamOptions | None] = None


parse_responses_body = body_parser(ResponsesHead)
