"""Typed settings read from environment variables, one documented name per field.

A settings class is a frozen ``msgspec.Struct``; each field reads ``<PREFIX><FIELD IN UPPER CASE>``
(``cpu_request`` with prefix ``SERVING_`` reads ``SERVING_CPU_REQUEST``). The rules are the same for
every module, so operators learn them once:

* the empty string is unset: the field keeps its default;
* booleans are lowercase ``true`` or ``false``, nothing else (``1``, ``yes``, ``True`` are refused: a
  typo must not silently mean false);
* numbers parse strictly; ``list[str]`` fields are comma-separated;
* a bad value raises ``SettingsError`` naming the variable, which fails start-up.

``describe(cls, prefix)`` lists every variable with its default and help (the field's docstring-like
``msgspec.Meta(description=...)``), which ``env.example`` and the docs are checked against.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import msgspec

__all__ = ["KubeQuantity", "SettingsError", "describe", "env_name", "from_env", "help_text"]

S = TypeVar("S", bound=msgspec.Struct)

# A Kubernetes resource quantity ("4", "500m", "16Gi"), as the serving and training settings take them.
KubeQuantity = Annotated[str, msgspec.Meta(min_length=1, max_length=20,
                                           pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")]


def help_text(text: str) -> msgspec.Meta:
    """A field's help, which ``describe`` lists (``Annotated[bool, help_text("...")]``)."""
    return msgspec.Meta(description=text)


class SettingsError(ValueError):
    """A variable's value is not valid for its field; the message names the variable."""


def env_name(prefix: str, field: str) -> str:
    return f"{prefix}{field.upper()}"


def _base(tp: Any) -> tuple[Any, Any]:
    """The field's plain type, and its ``msgspec.Meta`` when annotated; optional unwrapped."""
    meta = None
    if get_origin(tp) is typing.Annotated:
        tp, *extras = get_args(tp)
        metas = [e for e in extras if isinstance(e, msgspec.Meta)]  # nested Annotated: the constraint's and the help's
        meta = next((m for m in metas if m.description), metas[0] if metas else None)
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _base(args[0])[0], meta
    return tp, meta


def _parse(name: str, raw: str, tp: Any) -> Any:
    if tp is bool:
        if raw not in ("true", "false"):
            raise SettingsError(f"{name}: expected lowercase true or false, got {raw!r}")
        return raw == "true"
    if get_origin(tp) is list:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name}: expected a number, got {raw!r}") from None
    return raw


def from_env(cls: type[S], prefix: str, env: Mapping[str, str] | None = None, **overrides: Any) -> S:
    """``cls`` from the environment (``os.environ`` by default); ``overrides`` win over both."""
    env = os.environ if env is None else env
    hints = get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    for field in cls.__struct_fields__:
        name = env_name(prefix, field)
        raw = env.get(name, "")
        if raw == "":
            continue
        values[field] = _parse(name, raw, _base(hints[field])[0])
    values.update(overrides)
    try:
        return msgspec.convert(values, cls)
    except msgspec.ValidationError as err:
        message, _, path = str(err).partition(" - at `$.")
        field = path.rstrip("`").split(".")[0].split("[")[0]
        raise SettingsError(f"{env_name(prefix, field) if field else prefix + '*'}: {message}") from None


def describe(cls: type[msgspec.Struct], prefix: str) -> list[tuple[str, str, str]]:
    """``(variable, default as env text, description)`` for every field, in declaration order."""
    hints = get_type_hints(cls, include_extras=True)
    out = []
    defaults = dict(zip(cls.__struct_fields__, _defaults(cls), strict=True))
    for field in cls.__struct_fields__:
        _tp, meta = _base(hints[field])
        default = defaults[field]
        if default is None:
            text = ""
        elif isinstance(default, bool):
            text = "true" if default else "false"
        elif isinstance(default, list):
            text = ",".join(default)
        else:
            text = str(default)
        out.append((env_name(prefix, field), text, (meta.description if meta and meta.description else "")))
    return out


def _defaults(cls: type[msgspec.Struct]) -> list[Any]:
    fields = cls.__struct_fields__
    defaults = cls.__struct_defaults__
    padded: list[Any] = [msgspec.NODEFAULT] * (len(fields) - len(defaults)) + list(defaults)
    out = []
    for d in padded:
        if isinstance(d, msgspec._core.Factory):
            out.append(d.factory())
        else:
            out.append(None if d is msgspec.NODEFAULT else d)
    return out
