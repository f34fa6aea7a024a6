"""The admin API's wire conventions: the envelope, pages, and the one exception handler.

Every admin response is ``{"status": "success"|"fail"|"error", "message": str, "data": ...}``:
``fail`` for client errors (4xx), ``error`` for server errors (5xx), with the
matching HTTP status. Handlers return ``ok(data)``; errors are raised and shaped
here, including Litestar's own (validation, unknown route, 405, 413), so clients
never see two error formats. 5xx bodies never carry exception text or traces:
the log has them, keyed by the ``x-request-id`` the response also carries.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import Parameter

from adapters.adminapi.errors import AdminError, FieldError, ValidationFailed
from adapters.request_id import REQUEST_ID_HEADER, SAFE_REQUEST_ID
from adapters.store.errors import (
    ConstraintViolation,
    DuplicateKey,
    InvalidValue,
    SchemaError,
    StoreUnavailable,
)

__all__ = [
    "MAX_VERSION",
    "REQUEST_ID_HEADER",
    "Envelope",
    "Page",
    "PageParams",
    "VersionNumber",
    "envelope_exception_handler",
    "ok",
    "paging",
    "request_id",
    "strict_json_body",
]

log = logging.getLogger("llmops.adminapi")

T = TypeVar("T")
MAX_PAGE_SIZE = 200
MAX_PAGE = 1_000_000  # keeps offsets far from integer overflow, whatever a client sends
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
MAX_VERSION = 2**31 - 1  # versions are INTEGER columns: larger numbers would overflow SQLite's driver

# Every integer in an admin path is a version number; bounding it here gives 400 (not a database
# overflow) for 2**63 and says so in the OpenAPI document.
VersionNumber = Annotated[int, Parameter(ge=1, le=MAX_VERSION, description=f"version number, 1 to {MAX_VERSION}")]


class Envelope(msgspec.Struct, Generic[T]):
    status: Literal["success", "fail", "error"]
    message: str
    data: T


class Page(msgspec.Struct, Generic[T], rename="camel"):
    items: list[T]
    page: int
    page_size: int
    total: int


class PageParams(msgspec.Struct, frozen=True):
    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def wrap(self, items: list[T], total: int) -> Page[T]:
        return Page(items=items, page=self.page, page_size=self.page_size, total=total)


def paging(
    page_number: int = Parameter(query="page", ge=1, le=MAX_PAGE, default=1, description="1-based page number"),
    page_size: int = Parameter(
        query="pageSize", ge=1, le=MAX_PAGE_SIZE, default=50, description=f"items per page, max {MAX_PAGE_SIZE}"
    ),
) -> PageParams:
    """Dependency for list endpoints: ``page`` and ``pageSize`` query parameters, bounded."""
    # The argument is not called ``page``: that is this dependency's own name in handlers.
    return PageParams(page=page_number, page_size=page_size)


def ok(data: T, message: str = "OK") -> Envelope[T]:
    return Envelope(status="success", message=message, data=data)


def request_id(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The request's id: the client's ``x-request-id`` when sane (``adapters.request_id``), else a new one;
    stable per request."""
    existing = connection.scope.get("state", {}).get("request_id")
    if existing:
        return str(existing)
    given = connection.headers.get(REQUEST_ID_HEADER, "")  # the first header, as adapters.request_id says
    rid = given if SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    connection.scope.setdefault("state", {})["request_id"] = rid
    return rid


async def strict_json_body(request: Request[Any, Any, Any]) -> None:
    """``before_request``: decode a JSON body strictly against the handler's struct, as the document says.

    Litestar converts bodies leniently (``0`` for ``false``, ``"1"`` for ``1``), which makes the
    OpenAPI types a lie; msgspec's strict decode refuses them, naming the field. Empty and malformed
    bodies are left to Litestar's own parse, which reports them.
    """
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    body_type = getattr(data, "annotation", None)
    if not (isinstance(body_type, type) and issubclass(body_type, msgspec.Struct)):
        return
    body = await request.body()
    if not body.strip():
        return
    try:
        msgspec.json.decode(body, type=body_type)
    except msgspec.ValidationError as err:
        if "got `float`" in str(err) and _valid_with_integral_floats(body, body_type):
            return  # JSON Schema counts 1.0 as an integer; Litestar's decode then takes it as 1
        message, _, path = str(err).partition(" - at `$")
        key = path.rstrip("`").lstrip(".")
        raise ValidationException(detail="Validation failed",
                                  extra=[{"key": key, "message": message, "source": "body"}]) from None
    except msgspec.DecodeError:
        return


def _valid_with_integral_floats(body: bytes, body_type: type[msgspec.Struct]) -> bool:
    """Whether the body passes the strict decode once integral floats (``1.0``) count as integers."""
    try:
        msgspec.convert(_integral_floats_as_ints(msgspec.json.decode(body)), type=body_type, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return False
    return True


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    return value


def envelope_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Shape any exception raised on an admin path into the envelope with the right status."""
    status, message, data = _describe(request, exc)
    rid = request_id(request)
    if status >= 500:
        log.error("admin request %s %s failed (request id %s)", request.method, request.url.path, rid,
                  exc_info=exc if status == 500 else None)
    body = Envelope(status="fail" if status < 500 else "error", message=message, data=data)
    # Litestar's own exceptions may carry headers the status needs (405: Allow).
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) and status < 500 else {}
    return Response(body, status_code=status, headers={**headers, REQUEST_ID_HEADER: rid})


def _describe(request: Request[Any, Any, Any], exc: Exception) -> tuple[int, str, Any]:
    if isinstance(exc, AdminError):
        return exc.status, exc.message, exc.data
    if isinstance(exc, ValidationException):
        if _body_missing(exc.extra):
            message = _empty_body_message(request)
            return 400, message, ValidationFailed([FieldError(field="", message=message)], message).data
        failed = ValidationFailed(_field_errors(exc.extra, _param_aliases(request)))
        return 400, failed.message, failed.data
    if isinstance(exc, InternalServerException) and exc.detail == "client disconnected prematurely":
        # Litestar's words for an http.disconnect while reading the body (the client left, or the
        # server's body deadline cut it off): a client event, not a server error; nobody reads this.
        return 400, "The client disconnected before sending the whole request", None
    if isinstance(exc, RecursionError) and "deserializing" in str(exc):  # msgspec's depth guard
        return 400, "Request body is nested too deeply to decode", None
    if isinstance(exc, NotFoundException):
        return 404, f"No route for {request.method} {request.url.path}", None
    if isinstance(exc, MethodNotAllowedException):
        return 405, f"Method {request.method} is not allowed on {request.url.path}", None
    if isinstance(exc, RequestEntityTooLarge):
        return 413, "Request body is too large", None
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        detail = exc.detail
        if "JSON is malformed" in detail or "msgpack" in detail.lower():
            detail = f"Request body is not valid JSON: {detail.split(':', 1)[-1].strip()}"
        return exc.status_code, detail, None
    if isinstance(exc, StoreUnavailable):
        return 503, "The control-plane database is unavailable; retry later", None
    if isinstance(exc, SchemaError):
        return 503, "The control-plane database schema is not ready", None
    if isinstance(exc, DuplicateKey):
        return 409, "A resource with the same unique value already exists", None
    if isinstance(exc, ConstraintViolation):
        return 409, "The change conflicts with related resources", None
    if isinstance(exc, InvalidValue):
        return 400, "A value in the request cannot be stored (e.g. NUL characters)", None
    if isinstance(exc, HTTPException) and exc.status_code == 503:
        return 503, "Service unavailable; retry later", None
    return 500, "Internal server error", None


def _body_missing(extra: Any) -> bool:
    """Litestar reports an empty body as the ``data`` argument missing: a KeyError rendered ``'data'``."""
    return isinstance(extra, list) and any(
        isinstance(item, dict) and item.get("key") == "data" and item.get("message") == "'data'" for item in extra)


def _empty_body_message(request: Request[Any, Any, Any]) -> str:
    expected = "a JSON object"
    try:
        body_type = request.route_handler.parsed_fn_signature.parameters["data"].annotation
        info = msgspec.inspect.type_info(body_type)
    except (AttributeError, KeyError, TypeError):
        return f"Request body is empty; expected {expected}"
    if isinstance(info, msgspec.inspect.StructType):
        required = [f.encode_name for f in info.fields if f.required]
        expected += f" with {', '.join(required)}" if required else ""
    return f"Request body is empty; expected {expected}"


def _param_aliases(request: Request[Any, Any, Any]) -> dict[str, str]:
    """Python parameter name -> the query/header name clients use (``page_size`` -> ``pageSize``).

    Litestar reports parameter errors under the Python name; clients only know
    the alias. The aliases live on the handler's and its dependencies' signature models.
    """
    aliases: dict[str, str] = {}
    try:
        handler = request.route_handler
        models = [handler.signature_model, *(p.signature_model for p in handler.resolve_dependencies().values())]
    except (AttributeError, KeyError, TypeError):  # no matched handler (e.g. 404) or an unusual provider
        return aliases
    for model in models:
        for name, definition in getattr(model, "_fields", {}).items():
            kwarg = getattr(definition, "kwarg_definition", None)
            alias = getattr(kwarg, "query", None) or getattr(kwarg, "header", None)
            if alias:
                aliases[name] = alias
    return aliases


def _field_errors(extra: Any, aliases: dict[str, str]) -> list[FieldError]:
    """Litestar reports msgspec/param failures as ``[{"key", "message", "source"}]``; name the field."""
    errors: list[FieldError] = []
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict):
            continue
        key, message = str(item.get("key") or ""), str(item.get("message") or "invalid value")
        if item.get("source") != "body":
            key = aliases.get(key, key)
        unknown = _UNKNOWN_FIELD.search(message)
        if unknown:  # msgspec reports these on the enclosing object; point at the field itself
            parent = "" if key in ("", "data") else key
            key = f"{parent}.{unknown.group(1)}" if parent else unknown.group(1)
        elif key == "data":
            key = ""
        errors.append(FieldError(field=key, message=message))
    return errors or [FieldError(field="", message="invalid request")]
