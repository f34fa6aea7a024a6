"""Wire types of keys and teams (camelCase JSON; unknown fields rejected): the one key model's API shape.

Served by governance under ``/governance/keys`` and ``/governance/teams``; ``/admin/keys`` shows a
narrower view of the same keys. Money is exact: ``budgetUsd`` is accepted as a JSON number or a decimal
string and always answered as a decimal string (``"12.5"``), stored in whole nano-dollars.
The secret appears in exactly one type, ``CreatedKey`` (create and rotate answers).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from adapters.adminapi.errors import FieldError
from adapters.adminapi.rbac import ROLE_NAMES

__all__ = [
    "BudgetPeriod",
    "CreatedKey",
    "Key",
    "KeyCreate",
    "KeyStatus",
    "KeyUpdate",
    "RoleName",
    "Team",
    "TeamCreate",
    "TeamUpdate",
    "schema_rule_errors",
]

RoleName = Literal["admin", "operator", "developer", "viewer", "inference"]
assert set(RoleName.__args__) == set(ROLE_NAMES)  # type: ignore[attr-defined]  # one list of roles
BudgetPeriod = Literal["daily", "weekly", "monthly"]
KeyStatus = Literal["active", "expired", "revoked"]
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")]
TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                                       description="what policies' scope.teams name")]
ResourceId = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")]
Glob = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9*?._:/@+-]+$",
                                   description="a name or a glob (* and ?)")]
_UNIQUE = {"extra": {"unique_items": True}}
Globs = Annotated[list[Glob], msgspec.Meta(max_length=500, extra_json_schema=_UNIQUE)]
Roles = Annotated[list[RoleName], msgspec.Meta(min_length=1, max_length=5, extra_json_schema=_UNIQUE)]
Rate = Annotated[int, msgspec.Meta(ge=1, le=10**12)]
Concurrency = Annotated[int, msgspec.Meta(ge=1, le=10**6)]

# budgetUsd: a positive amount below a billion dollars, at most 9 decimals (nano-dollars). Litestar drops the
# bounds of a union's members from the document, so __schema_extra__ states them (and the period rule).
_USD_PATTERN = r"^(?:[1-9][0-9]{0,8}(?:\.[0-9]{1,9})?|0?\.0{0,8}[1-9][0-9]{0,8})$"
_USD_MIN, _USD_MAX = 1e-9, 999_999_999.0
UsdIn = Annotated[float, msgspec.Meta(ge=_USD_MIN, le=_USD_MAX)] | Annotated[str, msgspec.Meta(pattern=_USD_PATTERN)]
_NULL = {"type": "null"}
_SETTINGS_SCHEMA: dict[str, Any] = {"allOf": [
    {"properties": {"budgetUsd": {"oneOf": [
        {"type": "number", "minimum": _USD_MIN, "maximum": _USD_MAX},
        {"type": "string", "pattern": _USD_PATTERN}, _NULL]}}},
    # budgetUsd and budgetPeriod come together: both set, or neither.
    {"if": {"required": ["budgetUsd"], "properties": {"budgetUsd": {"not": _NULL}}},
     "then": {"required": ["budgetPeriod"], "properties": {"budgetPeriod": {"not": _NULL}}}},
    {"if": {"required": ["budgetPeriod"], "properties": {"budgetPeriod": {"not": _NULL}}},
     "then": {"required": ["budgetUsd"], "properties": {"budgetUsd": {"not": _NULL}}}},
]}


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    pass


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class _Settings(_In, frozen=True, kw_only=True):
    """Limits and budget a team or a key may carry; absent or null: none of its own."""

    __schema_extra__: ClassVar[dict[str, Any]] = _SETTINGS_SCHEMA

    allowed_models: Globs | None = None  # None: every model
    rpm: Rate | None = None
    tpm: Rate | None = None
    max_concurrent: Concurrency | None = None
    budget_usd: UsdIn | None = None
    budget_period: BudgetPeriod | None = None


class TeamCreate(_Settings, frozen=True, kw_only=True):
    name: TeamName
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""


class TeamUpdate(TeamCreate, frozen=True, kw_only=True):
    """Full replacement of the team's name, description, limits, budget and allowed models."""


class Team(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    description: str
    allowed_models: list[str] | None
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    budget_usd: str | None
    budget_period: BudgetPeriod | None
    created_at: datetime
    updated_at: datetime


class KeyCreate(_Settings, frozen=True, kw_only=True):
    __semantic_rules__: ClassVar[str] = (
        "teamId must name a live team; expiresAt must be in the future")

    name: KeyName
    team_id: ResourceId
    roles: Roles
    allowed_routes: Globs | None = None  # None: every route
    expires_at: datetime | None = None  # without an offset: UTC


class KeyUpdate(KeyCreate, frozen=True, kw_only=True):
    """Full replacement of a key's settings (never its secret: rotate for that)."""


class Key(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    team_id: str
    roles: list[str]
    status: KeyStatus
    allowed_routes: list[str] | None
    allowed_models: list[str] | None
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    budget_usd: str | None
    budget_period: BudgetPeriod | None
    expires_at: datetime | None
    created_at: datetime
    created_by: str
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None


class CreatedKey(Key, frozen=True, kw_only=True):
    key: str  # the full secret key: in the create and rotate answers only


def schema_rule_errors(data: TeamCreate | KeyCreate) -> list[FieldError]:
    """Rules the document states and msgspec does not enforce (a 400, like any schema error): ``uniqueItems``,
    and ``budgetUsd`` with ``budgetPeriod``."""
    errors = []
    if (data.budget_usd is None) != (data.budget_period is None):
        missing = "budgetPeriod" if data.budget_period is None else "budgetUsd"
        errors.append(FieldError(field=missing, message="budgetUsd and budgetPeriod are set together"))
    for name in ("roles", "allowed_routes", "allowed_models"):
        values = getattr(data, name, None) or []
        if len(set(values)) != len(values):
            repeated = sorted({v for v in values if values.count(v) > 1})
            field = msgspec.structs.fields(data)[data.__struct_fields__.index(name)].encode_name
            errors.append(FieldError(field=field, message=f"repeated: {repeated}"))
    return errors
