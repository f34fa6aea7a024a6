"""``POST /v1/feedback``: outcomes attached to requests and episodes (see ``service``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.handlers import asgi

from gateway.asgi import Receive, Scope, Send
from gateway.feedback.protocol import FeedbackBody, parse_feedback
from gateway.feedback.service import FeedbackService

if TYPE_CHECKING:
    from gateway.state import Gateway

__all__ = ["FeedbackBody", "FeedbackService", "feedback_handlers", "parse_feedback"]


def feedback_handlers(gateway: Gateway) -> list[Any]:
    """The Litestar handler of ``/v1/feedback``: raw ASGI (the body is read and checked as the chat
    endpoint's is), counted and logged by ``gateway.access`` like every non-chat response."""
    service = FeedbackService(gateway)

    @asgi("/v1/feedback", include_in_schema=False, copy_scope=False, name="feedback")
    async def feedback(scope: Scope, receive: Receive, send: Send) -> None:
        await service.handle(scope, receive, send)

    return [feedback]
