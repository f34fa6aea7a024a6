"""Wire types of the governance API (camelCase JSON; unknown fields rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

from control.governance.documents import PolicyDocument

__all__ = ["Policy", "PolicyCreate", "PolicyUpdate", "PolicyVersion"]

PolicyName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:-]*$",
                      description="unique among live policies")
]
Description = Annotated[str, msgspec.Meta(max_length=2000)]
# What validate_document refuses beyond the schema: a 422 (the OpenAPI finisher declares it with this text).
_SEMANTIC_RULES = ("a model pattern both allowed and denied; blocked terms that repeat ignoring case (unless "
                   "caseSensitive); a regex guardrail whose pattern this server's regex engine cannot compile")


class PolicyCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    __semantic_rules__: ClassVar[str] = _SEMANTIC_RULES

    name: PolicyName
    document: PolicyDocument
    description: Description = ""
    enabled: bool = True


class PolicyUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Full replacement; creates the next version. ``expectedVersion`` guards against lost updates."""

    __semantic_rules__: ClassVar[str] = _SEMANTIC_RULES

    name: PolicyName
    document: PolicyDocument
    description: Description = ""
    enabled: bool = True
    expected_version: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None


class Policy(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    name: str
    description: str
    enabled: bool
    version: int
    document: PolicyDocument
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class PolicyVersion(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    policy_id: str
    version: int
    name: str
    description: str
    enabled: bool
    document: PolicyDocument
    created_at: datetime
    created_by: str
