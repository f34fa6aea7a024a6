"""The guardrails plug-in's response filters: each choice's text through the output rules.

``ChoicesFilter`` serves chat (``message.content``, ``delta.content``) and completions
(``text``); ``ResponsesFilter`` the Responses API (``output[].content[].text``, and the
``response.output_text.delta`` events). Streams go through one ``policies.guardrails.StreamGuard``
per choice (or per output text): it releases all but the few characters a match still in
progress may occupy. Only the text changes: ids, roles, indexes, finish reasons and
sequence numbers stay as the upstream sent them. A chunk whose text is all held back is
dropped when it carries nothing else (its text goes out with a later chunk); a Responses
delta event is sent one event late instead, with the text released by then, so the event
count and sequence numbers stay intact. While a redact or block rule applies, ``logprobs``
are removed: they repeat the raw tokens the redaction hides.

Filters never change what they are given (``changes_in_place = False``): a rewrite is a new
object, so an untouched chunk still goes out as the upstream's own bytes.
"""

from __future__ import annotations

from typing import Any, NoReturn, Protocol

from policies.guardrails import Blocked, Hit, RuleSet, StreamGuard

__all__ = ["ChoicesFilter", "Observer", "ResponsesFilter"]


class Observer(Protocol):
    """What a filter reports to: hits that changed or were logged, and a block (which raises)."""

    def observe(self, hits: list[Hit]) -> None: ...

    def deny(self, blocked: Blocked) -> NoReturn:
        """Count and audit the block, then raise the ``GatewayError`` the client gets."""


class ChoicesFilter:
    """chat.completion / text_completion bodies and their chunks."""

    changes_in_place = False
    __slots__ = ("_chat", "_guards", "_key", "_meta", "_rules", "_strip", "_to")

    def __init__(self, rules: RuleSet, to: Observer, *, chat: bool) -> None:
        self._rules = rules
        self._to = to
        self._chat = chat
        self._key = "content" if chat else "text"
        self._strip = bool(rules.gate)  # redact/block: logprobs would leak what they hide
        self._guards: dict[Any, StreamGuard] = {}
        self._meta: dict[str, Any] | None = None  # the last chunk, for a chunk that flush must make

    def _apply(self, text: str) -> str:
        try:
            new, hits = self._rules.apply(text)
        except Blocked as b:
            self._to.deny(b)
        if hits:
            self._to.observe(hits)
        return new

    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        choices = completion.get("choices")
        if not isinstance(choices, list):
            return completion
        out: list[Any] | None = None
        for i, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            holder = choice.get("message") if self._chat else choice
            text = holder.get(self._key) if isinstance(holder, dict) else None
            strip = self._strip and choice.get("logprobs") is not None
            new = self._apply(text) if isinstance(text, str) else text
            if new is text and not strip:
                continue
            changed = dict(choice)
            if new is not text:
                if self._chat:
                    changed["message"] = {**holder, self._key: new}  # type: ignore[dict-item]
                else:
                    changed[self._key] = new
            if strip:
                changed["logprobs"] = None
            if out is None:
                out = list(choices)
            out[i] = changed
        return completion if out is None else {**completion, "choices": out}

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return [chunk]
        self._meta = chunk
        out: list[Any] | None = None
        dropped = 0
        for i, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            holder = choice.get("delta") if self._chat else choice
            text = holder.get(self._key) if isinstance(holder, dict) else None
            finish = choice.get("finish_reason")
            strip = self._strip and choice.get("logprobs") is not None
            if not (isinstance(text, str) and text) and finish is None and not strip:
                continue  # no text: a role, a tool call, an empty delta
            sent = self._guard(choice.get("index", i), text if isinstance(text, str) else "", finish is not None)
            if sent == (text or "") and not strip:
                continue
            changed = dict(choice)
            if self._chat:
                delta = dict(holder) if isinstance(holder, dict) else {}
                if sent or self._key in delta:
                    delta[self._key] = sent
                changed["delta"] = delta
                spare = not sent and finish is None and delta.keys() <= {self._key}
            else:
                changed[self._key] = sent
                spare = not sent and finish is None
            if strip:
                changed["logprobs"] = None
            if out is None:
                out = list(choices)
            if spare:  # all of it held back, and nothing else in it: leave it out
                out[i] = None
                dropped += 1
            else:
                out[i] = changed
        if out is None:
            return [chunk]
        if dropped:
            out = [c for c in out if c is not None]
            if not out and chunk.get("usage") is None:
                return []
        return [{**chunk, "choices": out}]

    def _guard(self, index: Any, text: str, final: bool) -> str:
        guard = self._guards.get(index)
        if guard is None:
            guard = self._guards[index] = StreamGuard(self._rules)
        try:
            sent = guard.feed(text, final)
        except Blocked as b:
            self._to.deny(b)
        if guard.hits:
            self._to.observe(guard.hits)
            guard.hits = []
        return sent

    def flush(self) -> list[dict[str, Any]]:
        """Text still held when the upstream ended without a finish reason: one chunk per choice."""
        out = []
        for index, guard in self._guards.items():
            if not guard.held:
                continue
            rest = self._guard(index, "", True)
            if not rest or self._meta is None:
                continue
            meta = {k: v for k, v in self._meta.items() if k not in ("choices", "usage")}
            choice: dict[str, Any] = ({"index": index, "delta": {"content": rest}} if self._chat
                                      else {"index": index, "text": rest})
            out.append({**meta, "choices": [{**choice, "logprobs": None, "finish_reason": None}]})
        return out


_FINAL_TYPES = ("response.completed", "response.incomplete", "response.failed")


class ResponsesFilter:
    """Responses API bodies and events: ``output_text`` parts, and their delta events."""

    changes_in_place = False
    __slots__ = ("_guards", "_pending", "_rules", "_strip", "_to")

    def __init__(self, rules: RuleSet, to: Observer) -> None:
        self._rules = rules
        self._to = to
        self._strip = bool(rules.gate)
        self._guards: dict[tuple[Any, Any], StreamGuard] = {}
        self._pending: dict[tuple[Any, Any], tuple[dict[str, Any], str]] = {}  # one delta event, sent late

    def _redact(self, text: str, count: bool) -> str:
        try:
            new, hits = self._rules.apply(text)
        except Blocked as b:
            self._to.deny(b)
        if hits and count:
            self._to.observe(hits)
        return new

    def _output(self, output: Any, count: bool) -> Any:
        """``output`` items with each ``output_text`` part's text redacted (a copy, if any changed)."""
        if not isinstance(output, list):
            return output
        items: list[Any] | None = None
        for i, item in enumerate(output):
            new = self._item(item, count)
            if new is not item:
                if items is None:
                    items = list(output)
                items[i] = new
        return output if items is None else items

    def _item(self, item: Any, count: bool) -> Any:
        content = item.get("content") if isinstance(item, dict) else None
        if not isinstance(content, list):
            return item
        parts: list[Any] | None = None
        for j, part in enumerate(content):
            new = self._part(part, count)
            if new is not part:
                if parts is None:
                    parts = list(content)
                parts[j] = new
        return item if parts is None else {**item, "content": parts}

    def _part(self, part: Any, count: bool) -> Any:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            return part
        new = self._redact(part["text"], count)
        strip = self._strip and bool(part.get("logprobs"))
        if new is part["text"] and not strip:
            return part
        return {**part, "text": new, **({"logprobs": []} if strip else {})}

    def body(self, response: dict[str, Any]) -> dict[str, Any]:
        output = self._output(response.get("output"), True)
        return response if output is response.get("output") else {**response, "output": output}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "response.output_text.delta":
            return self._delta(event)
        if kind == "response.output_text.done":
            key = (event.get("item_id"), event.get("content_index"))
            out = self._release(key)
            text = event.get("text")
            new = self._redact(text, False) if isinstance(text, str) else text
            strip = self._strip and bool(event.get("logprobs"))
            if new is not text or strip:
                event = {**event, "text": new, **({"logprobs": []} if strip else {})}
            return [*out, event]
        if kind in ("response.content_part.added", "response.content_part.done"):
            part = self._part(event.get("part"), False)
            return [event if part is event.get("part") else {**event, "part": part}]
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = self._item(event.get("item"), False)
            return [event if item is event.get("item") else {**event, "item": item}]
        if kind in _FINAL_TYPES and isinstance(event.get("response"), dict):
            response = event["response"]
            output = self._output(response.get("output"), False)
            if output is not response.get("output"):
                event = {**event, "response": {**response, "output": output}}
        return [event]

    def _delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        key = (event.get("item_id"), event.get("content_index"))
        text = event.get("delta")
        sent = self._guard(key, text if isinstance(text, str) else "", False)
        previous = self._pending.pop(key, None)
        self._pending[key] = (event, sent)
        return [self._event(*previous)] if previous is not None else []

    def _event(self, event: dict[str, Any], text: str) -> dict[str, Any]:
        strip = self._strip and bool(event.get("logprobs"))
        if text == event.get("delta") and not strip:
            return event
        return {**event, "delta": text, **({"logprobs": []} if strip else {})}

    def _release(self, key: tuple[Any, Any]) -> list[dict[str, Any]]:
        """The late delta event of ``key``, with the rest of its text: that text is complete."""
        rest = self._guard(key, "", True) if key in self._guards else ""
        pending = self._pending.pop(key, None)
        return [self._event(pending[0], pending[1] + rest)] if pending is not None else []

    def _guard(self, key: tuple[Any, Any], text: str, final: bool) -> str:
        guard = self._guards.get(key)
        if guard is None:
            guard = self._guards[key] = StreamGuard(self._rules)
        try:
            sent = guard.feed(text, final)
        except Blocked as b:
            self._to.deny(b)
        if guard.hits:
            self._to.observe(guard.hits)
            guard.hits = []
        return sent

    def flush(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for key in list(self._pending):
            out.extend(self._release(key))
        return out
