"""The text a trainer learns from each dataset row, whatever shape the dataset has.

With ``textField`` set, only that field counts (a typo must not silently train on another column). Otherwise the
first shape that fits, in this order: ``text``; ``prompt`` + ``completion``; chat ``messages`` (one ``role:
content`` line each); ``instruction``/``input`` + ``output``; else the row's string values joined by newlines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adapters.training.trainer.jobenv import BadInput

__all__ = ["collect_texts", "row_text"]


def _join(*parts: str) -> str:
    """Pieces joined by a newline unless one already brings the whitespace."""
    out = ""
    for part in parts:
        if not part:
            continue
        if out and not (out[-1].isspace() or part[0].isspace()):
            out += "\n"
        out += part
    return out


def _content(value: Any) -> str:
    """A chat message's content: a string, or OpenAI-style parts whose text is kept."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _messages(value: Any) -> str:
    if not isinstance(value, list):
        return ""
    lines = []
    for message in value:
        if isinstance(message, dict):
            content = _content(message.get("content"))
            if content:
                lines.append(f"{message.get('role') or 'user'}: {content}")
    return "\n".join(lines)


def row_text(row: Any, text_field: str | None = None) -> str:
    """The row's training text ("" when it has none)."""
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return ""
    if text_field is not None:
        value = row.get(text_field)
        return value if isinstance(value, str) else _messages(value)

    def text(key: str) -> str:
        value = row.get(key)
        return value if isinstance(value, str) else ""

    if text("text"):
        return text("text")
    if text("prompt") or text("completion"):
        return _join(text("prompt"), text("completion"))
    if isinstance(row.get("messages"), list):
        chat = _messages(row["messages"])
        if chat:
            return chat
    if text("input") or text("output"):
        return _join(text("instruction"), text("input"), text("output"))
    return "\n".join(v for v in row.values() if isinstance(v, str) and v)


def collect_texts(rows: Iterable[Any], text_field: str | None = None) -> list[str]:
    """Every row's non-blank text; ``BadInput`` when none has any."""
    texts: list[str] = []
    seen = 0
    for row in rows:
        seen += 1
        value = row_text(row, text_field)
        if value.strip():
            texts.append(value)
    if not texts:
        where = f"in field {text_field!r} " if text_field else ""
        raise BadInput(f"no usable text {where}in {seen} dataset rows (expected text, prompt/completion, "
                       "messages, input/output, or set the textField hyperparameter)")
    return texts
