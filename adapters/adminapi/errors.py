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
    └── ServiceUnavailable     503 error

Store errors need no wrapping: the envelope handler maps ``StoreUnavailable`` to
503, ``DuplicateKey``/``ConstraintViolation`` to 409 and ``InvalidValue`` to 400.
Services should still catch ``DuplicateKey`` where they can say *which* name clashed.

Each class also carries Litestar's ``status_code``, so a handler can list what it raises beyond the
standard set (``@get(..., raises=[Conflict])``) and the OpenAPI document declares it (adminapi.openapi).
"""

from __future__ import annotations

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
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "ValidationFailed",
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


class ValidationFailed(BadRequest):
    def __init__(self, errors: list[FieldError], message: str | None = None) -> None:
        if message is None:
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            message = f"Invalid {first.field or 'request body'}: {first.message}{more}"
        super().__init__(message, {"errors": [msgspec.to_builtins(e) for e in errors]})
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


class ServiceUnavailable(AdminError):
    status = 503
