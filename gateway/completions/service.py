"""`/v1/completions`: the chat service's path (routing, resilience, plug-ins, metering) with
`text_completion` bodies and chunks. Usage is `prompt_tokens`/`completion_tokens` as for chat;
without it, the `prompt` and the choices' `text` are counted."""

from __future__ import annotations

import time

import msgspec

from adapters.upstream.usage_wire import WireUsage
from gateway.chat.service import ChatService, EndpointSpec
from gateway.completions.protocol import parse_completions_body
from gateway.metering import StreamMeter

__all__ = ["COMPLETIONS", "CompletionMeter", "CompletionsService"]


class _TextChoice(msgspec.Struct):
    text: str | None = None


class _TextChunk(msgspec.Struct):
    choices: list[_TextChoice] = []
    usage: WireUsage | None = None  # also read on a chunk with choices (StreamMeter)
    error: object = None


_decode_chunk = msgspec.json.Decoder(_TextChunk).decode


class CompletionMeter(StreamMeter):
    """`StreamMeter` over `text_completion` chunks: the text is in `choices[].text`."""

    __slots__ = ()

    def feed(self, payload: bytes) -> bool:
        try:
            chunk = _decode_chunk(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError("malformed stream chunk") from exc
        if chunk.error is not None:
            self.error = chunk.error
        for choice in chunk.choices:
            if choice.text:
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                self._parts.append(choice.text)
        if chunk.usage is not None:
            self._wire = chunk.usage
            if not chunk.choices and not self._keep_usage_chunk:
                return False
        return True


COMPLETIONS = EndpointSpec("completions", parse_completions_body, "prompt", CompletionMeter)


class CompletionsService(ChatService):
    __slots__ = ()
    spec = COMPLETIONS
