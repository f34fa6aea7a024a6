"""Errors admin handlers raise; one handler turns each into the ``{status, message, data}`` envelope.

    AdminError                 500 error
    ├── BadRequest             400 fail
    │   └── ValidationFailed   400 fail   data: {"errors": [{"field", "message"}]}
    ├── Unauthorized           401 fail
    ├── Forbidden              403 fail
    ├── NotFound               404 fail
    ├── Conflict               409 fail   data: whatever explains it (e.g. dependents)
    ├── PayloadTooLarge        413 fail
    ├── UnsupportedMediaType   415 fail
    ├── Unprocessable          422 fail   well-formed, but the current state or content rules it out
    │   └── SemanticError      422 fail   data: {"errors": [{"field", "message"}]}
    └── ServiceUnavailable     503 error

The split between the two field-error classes is the HTTP contract (docs/admin-api.md): a request that
breaks its documented schema (types, required fields, bounds, patterns, unknown fields, and the rules the
OpenAPI document states, such as ``uniqueItems``) is a ``ValidationFailed`` 400; one the schema accepts but
the server refuses on meaning (cross-field rules the document cannot state, names this deployment did not
configure, references to resources that do not exist, a raw secret where a reference is required) is a
``SemanticError`` 422. A body with both kinds of problem is a 400: ``refuse`` picks.

Store errors need no wrapping: the envelope handler maps ``StoreUnavailable`` to
503, ``DuplicateKey``/``ConstraintViolation`` to 409 and ``InvalidValue`` to 400.
Services should still catch ``DuplicateKey`` where they can say *which* name clashed.

Each class also carries Litestar's ``status_code``, so a handler can list what it raises beyond the
standard set (``@get(..., raises=[Conflict])``) and the OpenAPI document declares it (adminapi.openapi).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

__all__ = [
    "AdminError",
    "BadRequest",
    "Conflict",
    "FieldError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "SemanticError",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "refuse",
]


class FieldError(msgspec.Struct, frozen=True):
    """One rejected input: ``field`` is a dotted camelCase path (``document.limits.tokensPerMinute``)."""

    field: str
    message: str


class AdminError(Exception):
    status: ClassVar[int] = 500
    status_code: ClassVar[int] = 500  # Litestar's name, read by ``raises=[...]``; always equal to ``status``
    detail: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status_code = cls.status

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class BadRequest(AdminError):
    status = 400


def _summary(errors: list[FieldError]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"Invalid {first.field or 'request body'}: {first.message}{more}"


class ValidationFailed(BadRequest):
    """400: the request does not match its documented schema."""

    def __init__(self, errors: list[FieldError], message: str | None = None) -> None:
        super().__init__(message or _summary(errors), {"errors": [msgspec.to_builtins(e) for e in errors]})
        self.errors = errors


class Unauthorized(AdminError):
    status = 401


class Forbidden(AdminError):
    status = 403


class NotFound(AdminError):
    status = 404


class Conflict(AdminError):
    status = 409


class PayloadTooLarge(AdminError):
    status = 413


class UnsupportedMediaType(AdminError):
    status = 415


class Unprocessable(AdminError):
    status = 422


class SemanticError(Unprocessable):
    """422: the request matches its schema, but its content is refused (same ``data.errors`` as a 400)."""

    def __init__(self, errors: list[FieldError], message: str | None = None) -> None:
        super().__init__(message or _summary(errors), {"errors": [msgspec.to_builtins(e) for e in errors]})
        self.errors = errors


def refuse(schema_errors: Sequence[FieldError], semantic_errors: Sequence[FieldError] = ()) -> None:
    """Raise ``ValidationFailed`` if there are schema errors, else ``SemanticError`` if there are semantic ones."""
    if schema_errors:
        raise ValidationFailed(list(schema_errors))
    if semantic_errors:
        raise SemanticError(list(semantic_errors))


class ServiceUnavailable(AdminError):
    status = 503
