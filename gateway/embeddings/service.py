"""`/v1/embeddings`: the chat service's path, never streamed. Usage is prompt tokens only
(`completion_tokens` stays 0); without it, the `input` is counted."""

from __future__ import annotations

from gateway.chat.service import ChatService, EndpointSpec
from gateway.embeddings.protocol import parse_embeddings_body
from gateway.metering import StreamMeter

__all__ = ["EMBEDDINGS", "EmbeddingsService"]

EMBEDDINGS = EndpointSpec("embeddings", parse_embeddings_body, "input", StreamMeter)


class EmbeddingsService(ChatService):
    __slots__ = ()
    spec = EMBEDDINGS
