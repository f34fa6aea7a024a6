"""From a dataset row to what the gateway is asked: the chat body, the perplexity body, the item's fields.

``mapping.input``: the column's text is one user message. ``mapping.messages``: the column is the chat
itself (a list of ``{role, content}``; a JSON string of one is accepted, as CSV files carry them).
``mapping.context``: its text goes first, as a system message (``Context:\\n…``), so a grounded answer can
be judged for faithfulness against what the model saw. The run's ``params`` (temperature, max_tokens, …)
are added to the body as given.

Perplexity scores the reference as the continuation of the prompt: ``/v1/completions`` with
``prompt = <prompt text>\\n<reference>``, ``echo`` and ``logprobs: 1`` and ``max_tokens: 1`` (some servers
refuse 0). The answer's ``text_offset`` says which tokens cover the reference: every token that ends after
the prompt text and starts before the end of the echoed text (a token across the boundary counts).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["RowError", "RowItem", "chat_body", "from_row", "perplexity_body", "read_perplexity"]


class RowError(Exception):
    """The row cannot be sent (e.g. its messages column is not a chat): the item fails without a call."""


class RowItem(msgspec.Struct, frozen=True, kw_only=True):
    input: Any  # the prompt text, or the messages list
    reference: str | None
    context: str | None
    messages: list[dict[str, Any]]  # what is sent

    @property
    def prompt_text(self) -> str:
        if isinstance(self.input, str):
            return self.input
        return "\n".join(str(m.get("content", "")) for m in self.input if isinstance(m, dict))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _chat(value: Any, column: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise RowError(f"column {column!r} is not a JSON list of messages") from None
    if not (isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in value)):
        raise RowError(f"column {column!r} is not a list of messages with a role each")
    return value


def from_row(row: dict[str, Any], mapping: dict[str, Any]) -> RowItem:
    """The row as an item (``mapping`` as stored: camelCase keys of ``ColumnMapping``)."""
    reference = _text(row.get(mapping["reference"])) if mapping.get("reference") else None
    context = _text(row.get(mapping["context"])) if mapping.get("context") else None
    if mapping.get("messages"):
        chat = _chat(row.get(mapping["messages"]), mapping["messages"])
        given: Any = chat
    else:
        text = _text(row.get(mapping["input"]))
        if text is None:
            raise RowError(f"column {mapping['input']!r} is empty")
        chat, given = [{"role": "user", "content": text}], text
    if context:
        chat = [{"role": "system", "content": f"Context:\n{context}"}, *chat]
    return RowItem(input=given, reference=reference, context=context, messages=chat)


def chat_body(route: str, item: RowItem, params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "model": route, "messages": item.messages}


def perplexity_body(route: str, item: RowItem) -> dict[str, Any]:
    return {"model": route, "prompt": f"{item.prompt_text}\n{item.reference or ''}", "echo": True, "logprobs": 1,
            "max_tokens": 1, "temperature": 0}


def read_perplexity(answer: Any, item: RowItem) -> float | None:
    """The reference's perplexity from the completions answer; ``None`` when it has no usable logprobs."""
    from policies.evaluation.metrics import perplexity_from_completion  # sacrebleu, numpy: not at start-up

    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    logprobs = choice.get("logprobs")
    offsets = logprobs.get("text_offset") if isinstance(logprobs, dict) else None
    tokens = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    if not (isinstance(offsets, list) and isinstance(tokens, list) and len(offsets) == len(tokens)):
        return perplexity_from_completion(choice, None) if isinstance(logprobs, dict) else None
    start = len(item.prompt_text) + 1  # the reference begins after "<prompt>\n"
    end = start + len(item.reference or "")
    ends = [o + len(t) if isinstance(o, int) and isinstance(t, str) else 0 for o, t in zip(offsets, tokens,
                                                                                             strict=True)]
    skip = sum(1 for e in ends if e <= start)
    echoed = sum(1 for o in offsets if isinstance(o, int) and o < end)
    return perplexity_from_completion(choice, skip, echoed_tokens=echoed)
