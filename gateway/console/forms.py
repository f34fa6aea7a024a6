"""Form values in, admin API errors out next to the field they concern.

A page reads its form into a `Form`, converts fields with the typed readers (which record a message for
a value that does not parse, instead of raising), and sends the API call. When the API refuses, `fail`
puts each of its field errors beside the form field of that name (the API names fields in camelCase
dotted paths; the form uses the same names), and the rest in the form's message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Request

from gateway.console.api import ApiError

__all__ = ["Form"]


@dataclass
class Form:
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    lists: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Mapping[str, Any] | None = None) -> Form:
        """A form showing `values` (defaults, or a filter form's query)."""
        return cls(values=dict(values or {}))

    @classmethod
    async def read(cls, request: Request[Any, Any, Any]) -> Form:
        """The posted form (url-encoded or multipart): text values, last one wins; `many()` has them all."""
        data = await request.form()
        values: dict[str, Any] = {}
        lists: dict[str, list[str]] = {}
        for key, value in data.multi_items():
            if isinstance(value, str):
                values[key] = value
                lists.setdefault(key, []).append(value)
        values.pop("csrf", None)
        return cls(values=values, lists=lists)

    @property
    def ok(self) -> bool:
        return not self.errors and self.message is None

    def get(self, name: str, default: Any = "") -> Any:
        return self.values.get(name, default)

    def text(self, name: str, *, required: bool = False, max_chars: int = 10_000) -> str | None:
        value = str(self.values.get(name, "")).strip()
        if not value:
            if required:
                self.errors[name] = "Required"
            return None
        if len(value) > max_chars:
            self.errors[name] = f"At most {max_chars} characters"
            return None
        return value

    def integer(self, name: str, *, required: bool = False, minimum: int | None = None) -> int | None:
        raw = self.text(name, required=required)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            self.errors[name] = "Must be a whole number"
            return None
        if minimum is not None and value < minimum:
            self.errors[name] = f"Must be at least {minimum}"
            return None
        return value

    def number(self, name: str, *, required: bool = False) -> float | None:
        raw = self.text(name, required=required)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            self.errors[name] = "Must be a number"
            return None
        return value

    def checked(self, name: str) -> bool:
        """A checkbox: present and not "false"/"off"/"0"."""
        return str(self.values.get(name, "")).strip().lower() not in ("", "false", "off", "0", "no")

    def many(self, name: str) -> list[str]:
        """Every value of a repeated field (checkboxes, multi-selects), blanks dropped."""
        return [v.strip() for v in self.lists.get(name, []) if v.strip()]

    def words(self, name: str) -> list[str]:
        """A field of comma- or newline-separated words."""
        raw = str(self.values.get(name, ""))
        return [w.strip() for w in raw.replace("\n", ",").split(",") if w.strip()]

    def json(self, name: str, *, required: bool = False, kind: type | None = None) -> Any:
        """A JSON text field; `kind` (dict or list) is what it must hold."""
        raw = self.text(name, required=required, max_chars=1_000_000)
        if raw is None:
            return None
        try:
            value = msgspec.json.decode(raw)
        except msgspec.DecodeError as err:
            self.errors[name] = f"Not valid JSON: {err}"
            return None
        if kind is not None and not isinstance(value, kind):
            noun = "object" if kind is dict else "array" if kind is list else kind.__name__
            self.errors[name] = f"Must be a JSON {noun}"
            return None
        return value

    def fail(self, err: ApiError, fields: Iterable[str] = ()) -> Form:
        """Show the API's refusal: field errors beside their fields, the rest as the form's message."""
        known = set(fields) | set(self.values)
        leftover: list[str] = []
        for path, message in err.errors.items():
            target = _field_for(path, known)
            if target is None:
                leftover.append(f"{path}: {message}" if path else message)
            else:
                self.errors.setdefault(target, message)
        if leftover or not err.errors:
            self.message = "; ".join(leftover) if leftover else err.message
        return self


def _field_for(path: str, known: set[str]) -> str | None:
    """The form field an API error path belongs to: itself, or its longest dotted prefix that is a field."""
    if not path:
        return None
    parts = path.replace("[", ".").replace("]", "").split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None
