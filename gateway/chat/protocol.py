"""Wire types of the chat endpoint: just enough typing to validate a request.

Fields the gateway does not use (tools, response_format, logprobs, seed, n, …)
are not declared: the body is kept as a dict and relayed untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar

import msgspec

from adapters.errors import InvalidRequest

__all__ = ["BodyHead", "ChatHead", "StreamOptions", "body_parser", "parse_chat_body"]


class _Message(msgspec.Struct):
    role: str


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class BodyHead(Protocol):
    """What the endpoint service reads of any endpoint's typed head."""

    @property
    def model(self) -> str | None: ...

    @property
    def stream(self) -> bool | None: ...

    @property
    def stream_options(self) -> StreamOptions | None: ...


class ChatHead(msgspec.Struct):
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None


_any = msgspec.json.Decoder(dict[str, Any])


def _param(message: str) -> str | None:
    """`... - at `$.messages[0].role`` -> `messages[0].role` (OpenAI's `param`)."""
    marker = "at `$."
    i = message.rfind(marker)
    if i >= 0:
        return message[i + len(marker):].rstrip("`")
    missing = "Object missing required field `"  # at the top level: no path, the field is the param
    return message[len(missing):].rstrip("`") if message.startswith(missing) else None


H = TypeVar("H")


def body_parser(head_type: type[H]) -> Callable[[bytes], tuple[H, dict[str, Any]]]:
    """A parser for one endpoint's body, validated against `head_type` (a msgspec Struct)."""
    head = msgspec.json.Decoder(head_type)

    def parse(raw: bytes) -> tuple[H, dict[str, Any]]:
        """Validate and return (typed head, full body). Raises InvalidRequest (400).

        Both decodes sit in the `try`: the typed one skips undeclared fields without checking
        their UTF-8 or number range, so only the second sees e.g. invalid UTF-8 in `content`
        or `1e999` in an untyped field. msgspec raises RecursionError for very deep nesting."""
        if not raw:
            raise InvalidRequest("The request body is empty; expected a JSON object")
        try:
            return head.decode(raw), _any.decode(raw)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            raise InvalidRequest(f"Invalid request: {msg}", param=_param(msg)) from None
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"Malformed JSON body: {exc}") from None
        except RecursionError:
            raise InvalidRequest("Malformed JSON body: nested too deeply") from None

    return parse


parse_chat_body = body_parser(ChatHead)
