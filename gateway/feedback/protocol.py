"""Wire types of ``POST /v1/feedback``: the body, checked strictly, and the answer.

Parsing is the chat endpoint's (``gateway.chat.protocol.body_parser``): the same 400s, in OpenAI's
error schema, for an empty body, malformed JSON, nesting too deep, a wrong type or an unknown field.
The rules no type can state (exactly one id, something to record, no NUL characters, finite scores)
are checked here with the same error and the field as ``param``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec

from adapters.errors import InvalidRequest
from adapters.request_id import SAFE_REQUEST_ID
from gateway.chat.protocol import body_parser

__all__ = ["MAX_COMMENT_CHARS", "MAX_LABEL_CHARS", "FeedbackBody", "parse_feedback"]

MAX_LABEL_CHARS = 100
MAX_COMMENT_CHARS = 4000
_MAX_ID_CHARS = 128  # usage_records.request_id / episode_id


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One outcome for one request (``request_id``, its ``x-request-id``) or one episode (``episode_id``)."""

    request_id: Annotated[str, msgspec.Meta(max_length=_MAX_ID_CHARS)] | None = None
    episode_id: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_ID_CHARS)] | None = None
    score: float | None = None
    label: bool | Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_CHARS)] | None = None
    comment: Annotated[str, msgspec.Meta(max_length=MAX_COMMENT_CHARS)] | None = None


_parse = body_parser(FeedbackBody)


def parse_feedback(raw: bytes) -> FeedbackBody:
    """The body, or ``InvalidRequest`` (400) naming what is wrong."""
    body, _ = _parse(raw)
    if (body.request_id is None) == (body.episode_id is None):
        raise InvalidRequest("Give exactly one of request_id (one request) or episode_id (every request of an "
                             "episode)", param="episode_id" if body.request_id is not None else "request_id")
    if body.request_id is not None and not SAFE_REQUEST_ID.fullmatch(body.request_id):
        raise InvalidRequest("request_id is not a request id this gateway answers with: 1 to 128 characters "
                             "of A-Z, a-z, 0-9, '.', '_', ':' and '-' (the response's x-request-id)",
                             param="request_id")
    if body.score is None and body.label is None and not body.comment:
        raise InvalidRequest("Nothing to record: give a score, a label or a comment", param="score")
    if body.score is not None and not math.isfinite(body.score):  # msgspec already refuses 1e999; kept as a guard
        raise InvalidRequest("score must be a finite number", param="score")
    for field in ("episode_id", "label", "comment"):
        _no_nul(field, getattr(body, field))
    return body


def _no_nul(field: str, value: Any) -> None:
    """PostgreSQL stores no NUL character: refuse it here rather than fail the insert."""
    if isinstance(value, str) and "\x00" in value:
        raise InvalidRequest(f"{field} must not contain NUL characters", param=field)
