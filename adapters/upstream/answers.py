"""Reading the non-chat endpoints' answers for accounting: `/completions`, `/embeddings`, `/responses`.

Like `parse_completion` for chat: check the body is a JSON object, lift out usage, and
only when usage is missing, the generated text so the gateway can count tokens.
Usage objects are read by `usage_wire` (the Responses API's `input_tokens`/`output_tokens`
and their details included). Embeddings report prompt tokens only.
"""

from __future__ import annotations

import msgspec

from adapters.errors import UpstreamError
from adapters.upstream.base import Completion
from adapters.upstream.usage_wire import WireUsage, to_usage

__all__ = ["parse_answer"]


class _TextChoice(msgspec.Struct):
    text: str | None = None


class _CompletionsHead(msgspec.Struct):
    choices: list[_TextChoice] = []
    usage: WireUsage | None = None


class _EmbeddingsHead(msgspec.Struct):
    usage: WireUsage | None = None


class _Part(msgspec.Struct):
    type: str = ""
    text: str | None = None


class _Item(msgspec.Struct):
    content: list[_Part] | None = None


class _ResponsesHead(msgspec.Struct):
    usage: WireUsage | None = None
    output: list[_Item] = []


_completions = msgspec.json.Decoder(_CompletionsHead)
_embeddings = msgspec.json.Decoder(_EmbeddingsHead)
_responses = msgspec.json.Decoder(_ResponsesHead)


def parse_answer(endpoint: str, raw: bytes, provider: str) -> Completion:
    """`endpoint` is "completions", "embeddings" or "responses" (chat: `parse_completion`)."""
    try:
        if endpoint == "completions":
            c = _completions.decode(raw)
            if c.usage is not None:
                return Completion(raw=raw, usage=to_usage(c.usage))
            return Completion(raw=raw, usage=None, content="".join(ch.text or "" for ch in c.choices))
        if endpoint == "embeddings":
            u = _embeddings.decode(raw).usage
            return Completion(raw=raw, usage=None if u is None else to_usage(u))
        r = _responses.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError(f"upstream {provider} returned a malformed {endpoint} body") from None
    if r.usage is not None:
        return Completion(raw=raw, usage=to_usage(r.usage))
    text = "".join(p.text or "" for item in r.output for p in item.content or () if p.type == "output_text")
    return Completion(raw=raw, usage=None, content=text)
