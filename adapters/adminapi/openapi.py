"""The admin API's OpenAPI document, made to tell the truth in one place.

Litestar generates the document from the handlers, but three things it cannot know:

* **Error responses.** Litestar declares its own 400 body (``{status_code, detail, extra}``), which the
  envelope handler never sends, and nothing else. ``finish_document`` declares, on every operation, the
  statuses it can really answer, each with the ``ErrorEnvelope`` body:

  ======  =====================================================================
  400     the operation takes parameters or a body
  401     the route needs a key (every route not marked public)
  403     like 401: a key below the route's minimum role gets it (a data-plane-only key, role
          ``inference``, ranks below ``viewer``, so even viewer routes can answer it)
  404     the path names a resource (``{id}`` segments)
  409     the operation writes (POST/PUT/PATCH/DELETE), or its handler lists ``Conflict`` in ``raises``
  413     the operation takes a body
  422     the body's struct states ``__semantic_rules__`` (described there), or a handler's ``raises`` says so
  415     the body is ``multipart/form-data`` (uploads refuse anything else)
  429     like 401: repeated failed authentication is throttled
  500     always (a bug; the body never carries exception text)
  503     always (database or object store unavailable, plane not running)
  ======  =====================================================================

  plus whatever a handler adds with Litestar's ``raises=[...]`` (``AdminError`` classes work there).
* **Unknown fields.** Request structs declared with ``forbid_unknown_fields`` refuse extra keys; the document
  says so with ``additionalProperties: false``.
* **Cross-field rules.** A request struct may state rules that involve several fields (``format`` is required
  for base models) as JSON Schema in a ``__schema_extra__`` class attribute; it is merged into its component.
  Breaking them is a 400, like any schema error. Rules no schema can state (names this deployment configured,
  references to existing resources, no raw secrets) go in a ``__semantic_rules__`` class attribute, a sentence
  that becomes the operation's 422 description: schema-valid data refused on meaning is a 422, never a 400.

The roles and request types come from the plane's routes (``describe_routes``), the rest from the document.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import OpenAPI
from litestar.routes import HTTPRoute
from litestar.types import ControllerRouterHandler

from adapters.adminapi.auth import Role, required_role

__all__ = ["ERROR_SCHEMA", "AdminOpenAPIConfig", "RouteFacts", "describe_routes", "finish_document"]

ERROR_SCHEMA = "ErrorEnvelope"
_WRITES = frozenset({"post", "put", "patch", "delete"})
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_DESCRIPTIONS = {
    400: "Bad request: a parameter or the body breaks the schema or a rule stated in the description "
         "(data.errors names each field)",
    401: "Missing, unknown, malformed or revoked key",
    403: "The key's role is below this route's minimum role (data-plane-only keys: every admin route)",
    404: "No such resource",
    409: "Conflicts with the current state (name taken, stale expectedVersion, dependents, wrong status)",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Matches the schema, but its content is refused (see the description)",
    429: "Too many failed authentication attempts; retry after the Retry-After delay",
    500: "Internal error (the log has the details, keyed by x-request-id)",
    503: "The control plane's database or object store is unavailable; retry later",
}
_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["status", "message", "data"],
    "properties": {
        "status": {"type": "string", "enum": ["fail", "error"], "description": "fail: 4xx, error: 5xx"},
        "message": {"type": "string"},
        "data": {"description": "null, or details: validation failures put [{field, message}] in data.errors"},
    },
    "title": ERROR_SCHEMA,
}


@dataclass(frozen=True)
class RouteFacts:
    """What the document cannot show about the routes: each operation's minimum role, the request types."""

    roles: Mapping[tuple[str, str], Role | None] = field(default_factory=dict)
    request_types: tuple[type, ...] = ()


def describe_routes(handlers: Iterable[ControllerRouterHandler]) -> RouteFacts:
    """Facts of every HTTP operation under ``handlers`` (routers, as the plane builds them)."""
    roles: dict[tuple[str, str], Role | None] = {}
    request_types: list[type] = []
    for router in handlers:
        for route in getattr(router, "routes", ()):
            if not isinstance(route, HTTPRoute):
                continue
            for handler in route.route_handlers:
                resolved = copy.copy(handler)
                resolved.resolve_opts()  # what Litestar does at registration: handler opt over its layers'
                for method in handler.http_methods:
                    roles[(route.path_format, method.lower())] = required_role(resolved)
                request_types += _data_types(handler)
    return RouteFacts(roles=roles, request_types=tuple(dict.fromkeys(request_types)))


def _data_types(handler: HTTPRouteHandler) -> list[type]:
    data = handler.parsed_fn_signature.parameters.get("data")
    return [data.annotation] if data is not None and isinstance(data.annotation, type) else []


def finish_document(doc: dict[str, Any], facts: RouteFacts) -> dict[str, Any]:
    """Declare the error responses and request-struct rules described in the module docstring, in place."""
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_SCHEMA] = _ENVELOPE
    semantic = _semantic_rules(components, facts.request_types)
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            if isinstance(op := item.get(method), dict):
                _declare_errors(op, path, method, facts, semantic)
    _state_struct_rules(components, facts.request_types)
    return doc


def _semantic_rules(components: Mapping[str, Any], roots: tuple[type, ...]) -> dict[str, str]:
    """``$ref`` of each request body component whose struct has ``__semantic_rules__`` -> those rules."""
    rules = {}
    for struct in roots:
        text = getattr(struct, "__semantic_rules__", None)
        if text and (name := _component_name(struct, components)) is not None:
            rules[f"#/components/schemas/{name}"] = text
    return rules


def _declare_errors(op: dict[str, Any], path: str, method: str, facts: RouteFacts,
                    semantic: Mapping[str, str]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    descriptions = dict(_DESCRIPTIONS)
    statuses = {int(code) for code in responses if code.isdigit() and int(code) >= 400} | {500, 503}
    if op.get("parameters") or op.get("requestBody") or "{" in path:
        statuses.add(400)
    if (path, method) not in facts.roles or facts.roles[(path, method)] is not None:
        statuses |= {401, 403, 429}
    if "{" in path:
        statuses.add(404)
    if method in _WRITES:
        statuses.add(409)
    if body := op.get("requestBody"):
        statuses.add(413)
        if "multipart/form-data" in body.get("content", {}):
            statuses.add(415)
        ref = body.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
        if ref in semantic:
            statuses.add(422)
            descriptions[422] = f"Matches the schema, but its content is refused (data.errors names each field): " \
                                f"{semantic[ref]}"
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": descriptions.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}},
        }


def _state_struct_rules(components: dict[str, Any], roots: tuple[type, ...]) -> None:
    for struct in _structs(roots):
        name = _component_name(struct, components)
        if name is None:
            continue
        schema = components[name]
        if struct.__struct_config__.forbid_unknown_fields:
            schema["additionalProperties"] = False
        _restore_nested_constraints(struct, schema)
        schema.update(copy.deepcopy(getattr(struct, "__schema_extra__", {})))


def _restore_nested_constraints(struct: type, schema: dict[str, Any]) -> None:
    """Litestar drops the bounds of list items and dict keys/values (``list[Annotated[str, Meta(...)]]``)."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    for fld in info.fields:
        prop = schema.get("properties", {}).get(fld.encode_name)
        if isinstance(prop, dict):
            _restore_container_bounds(fld.type, prop)


def _restore_container_bounds(kind: Any, prop: dict[str, Any]) -> None:
    if isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if isinstance(kind, msgspec.inspect.UnionType):  # ``list[...] | None``: Litestar writes a oneOf of both
        for variant in kind.types:
            for option in prop.get("oneOf", ()):
                if isinstance(option, dict) and option.get("type") == _JSON_TYPES.get(type(_unwrap(variant))):
                    _restore_container_bounds(variant, option)
        scalars = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(scalars) == 1 and "oneOf" in prop:
            # ``Annotated[float, Meta(ge=0)] | None``: Litestar drops a bound of 0 (falsy) there; the
            # keywords sit beside the oneOf, where they apply to the number alone
            prop.update({k: v for k, v in _bounds(scalars[0]).items() if k not in prop})
    elif isinstance(kind, msgspec.inspect.ListType) and isinstance(prop.get("items"), dict):
        prop["items"].update(_bounds(kind.item_type))
    elif isinstance(kind, msgspec.inspect.DictType):
        if isinstance(prop.get("additionalProperties"), dict):
            prop["additionalProperties"].update(_bounds(kind.value_type))
        if names := _bounds(kind.key_type):
            prop["propertyNames"] = {**prop.get("propertyNames", {}), **names}


_JSON_TYPES: dict[type, str] = {msgspec.inspect.ListType: "array", msgspec.inspect.DictType: "object"}


def _unwrap(info: Any) -> Any:
    return info.type if isinstance(info, msgspec.inspect.Metadata) else info


_BOUNDS = {"min_length": "minLength", "max_length": "maxLength", "pattern": "pattern", "ge": "minimum",
           "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _bounds(info: Any) -> dict[str, Any]:
    if isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if not isinstance(info, (msgspec.inspect.StrType, msgspec.inspect.IntType, msgspec.inspect.FloatType)):
        return {}
    return {key: getattr(info, attr) for attr, key in _BOUNDS.items() if getattr(info, attr, None) is not None}


def _component_name(struct: type, components: Mapping[str, Any]) -> str | None:
    """Litestar names a component by the shortest dotted-path suffix that is unique: match it the same way."""
    full = "_".join([*struct.__module__.split("."), struct.__qualname__.replace(".", "_")])
    matches = [name for name in components if full == name or full.endswith("_" + name)]
    return max(matches, key=len) if matches else None


def _structs(roots: tuple[type, ...]) -> list[type[msgspec.Struct]]:
    """Every Struct type reachable from ``roots`` through fields, lists, dicts, unions and constraints."""
    found: dict[type, None] = {}
    pending: list[Any] = list(msgspec.inspect.multi_type_info(roots))
    while pending:
        info = pending.pop()
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in found:
                continue
            found[info.cls] = None
            pending += [f.type for f in info.fields]
        elif isinstance(info, msgspec.inspect.UnionType):
            pending += info.types
        elif isinstance(info, msgspec.inspect.Metadata):
            pending.append(info.type)
        elif isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.FrozenSetType,
                               msgspec.inspect.VarTupleType)):
            pending.append(info.item_type)
        elif isinstance(info, msgspec.inspect.DictType):
            pending += [info.key_type, info.value_type]
    return list(found)


@dataclass
class _FinishedOpenAPI(OpenAPI):
    """Litestar's document object; ``to_schema`` (both ``app.openapi_schema`` and the served JSON) finishes it."""

    finisher: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def _exclude_fields(self) -> set[str]:
        return {*super()._exclude_fields, "finisher"}

    def to_schema(self) -> dict[str, Any]:
        doc = super().to_schema()
        return self.finisher(doc) if self.finisher is not None else doc


@dataclass
class AdminOpenAPIConfig(OpenAPIConfig):
    """``OpenAPIConfig`` whose document goes through ``finish_document`` with the plane's route facts."""

    facts: RouteFacts = field(default_factory=RouteFacts)

    def to_openapi_schema(self) -> OpenAPI:
        base = super().to_openapi_schema()
        finished = _FinishedOpenAPI(**{name: getattr(base, name) for name in base.__dataclass_fields__})
        finished.finisher = lambda doc: finish_document(doc, self.facts)
        return finished
