"""Policy documents: what the inline policy engine will enforce, typed and validated here.

A policy applies to teams (``scope.teams``; empty means every team) and sets any of:

* ``models``: which models may be used (``allow``/``deny`` glob patterns, deny wins);
* ``limits``: request and token rates, per-request token cap, concurrency;
* ``budget``: spend cap per period, block or alert on exceeding;
* ``guardrails``: PII detection, blocked terms, regexes, input size caps.

Shape errors (wrong types, unknown fields, out-of-range numbers) are rejected by
msgspec while decoding, naming the field. ``validate_document`` adds the checks
msgspec cannot make, with the same dotted field paths: ``schema_rule_errors`` for
rules the JSON Schema states (no duplicates, at least one section) and
``semantic_errors`` for those it cannot (regexes compile, no pattern both allowed
and denied, no terms equal ignoring case).

These types only depend on msgspec and live in ``policies/`` so both sides use
one definition: the governance module validates and stores them, and the
gateway's policy engine decodes the same documents from the policy snapshot.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

import msgspec

__all__ = [
    "BlockedTermsGuardrail",
    "Budget",
    "Direction",
    "Guardrail",
    "Limits",
    "MaxInputGuardrail",
    "ModelAccess",
    "PiiEntity",
    "PiiGuardrail",
    "PolicyDocument",
    "RegexGuardrail",
    "Scope",
    "schema_rule_errors",
    "semantic_errors",
    "validate_document",
]

TeamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ModelPattern = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9*?._:/@+-]+$",
                      description="model name or glob (* and ?), e.g. gpt-4o*, ollama/llama3")
]
Direction = Literal["input", "output", "both"]
PiiEntity = Literal["email", "phone", "credit_card", "iban", "ip_address", "national_id"]
_Rate = Annotated[int, msgspec.Meta(ge=1, le=10**12)]


def _unique(**extra: Any) -> dict[str, Any]:
    """``extra_json_schema`` stating a list's items are distinct (Litestar spells the keys snake_case)."""
    return {"extra": {"unique_items": True, **extra}}


class _Doc(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel", frozen=True):
    pass


class Scope(_Doc, frozen=True):
    teams: Annotated[list[TeamName], msgspec.Meta(max_length=500, extra_json_schema=_unique())] = []


class ModelAccess(_Doc, frozen=True):
    allow: Annotated[list[ModelPattern], msgspec.Meta(min_length=1, max_length=500, extra_json_schema=_unique())] = (
        msgspec.field(
            default_factory=lambda: ["*"])
    )
    deny: Annotated[list[ModelPattern], msgspec.Meta(max_length=500, extra_json_schema=_unique())] = []


class Limits(_Doc, frozen=True):
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": [
        {"required": [name], "properties": {name: {"type": "integer"}}}
        for name in ("requestsPerMinute", "tokensPerMinute", "tokensPerDay", "maxTokensPerRequest",
                     "maxConcurrentRequests")
    ], "description": "at least one limit set"}

    requests_per_minute: _Rate | None = None
    tokens_per_minute: _Rate | None = None
    tokens_per_day: _Rate | None = None
    max_tokens_per_request: Annotated[int, msgspec.Meta(ge=1, le=10**8)] | None = None
    max_concurrent_requests: Annotated[int, msgspec.Meta(ge=1, le=10**6)] | None = None


class Budget(_Doc, frozen=True):
    limit_usd: Annotated[float, msgspec.Meta(gt=0, le=1e12)]
    period: Literal["daily", "weekly", "monthly"]
    on_exceed: Literal["block", "alert"] = "block"
    alert_at_percent: Annotated[
        list[Annotated[int, msgspec.Meta(ge=1, le=100)]],
        msgspec.Meta(max_length=10, extra_json_schema=_unique()),
    ] = msgspec.field(default_factory=lambda: [80])


class PiiGuardrail(_Doc, frozen=True, tag="pii", tag_field="kind"):
    entities: Annotated[list[PiiEntity], msgspec.Meta(min_length=1, max_length=6, extra_json_schema=_unique())]
    action: Literal["redact", "block", "log"] = "redact"
    apply_to: Direction = "both"


class BlockedTermsGuardrail(_Doc, frozen=True, tag="blocked_terms", tag_field="kind"):
    terms: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]],
                     msgspec.Meta(min_length=1, max_length=1000, extra_json_schema=_unique())]
    case_sensitive: bool = False
    action: Literal["block", "log"] = "block"
    apply_to: Direction = "input"


class RegexGuardrail(_Doc, frozen=True, tag="regex", tag_field="kind"):
    pattern: Annotated[str, msgspec.Meta(min_length=1, max_length=1000,
                                         extra_json_schema={"extra": {"format": "regex"}})]
    action: Literal["block", "redact", "log"] = "block"
    apply_to: Direction = "both"


class MaxInputGuardrail(_Doc, frozen=True, tag="max_input", tag_field="kind"):
    max_chars: Annotated[int, msgspec.Meta(ge=1, le=10**8)]


Guardrail = PiiGuardrail | BlockedTermsGuardrail | RegexGuardrail | MaxInputGuardrail


class PolicyDocument(_Doc, frozen=True):
    __schema_extra__: ClassVar[dict[str, Any]] = {"anyOf": [
        {"required": ["models"], "properties": {"models": {"type": "object"}}},
        {"required": ["limits"], "properties": {"limits": {"type": "object"}}},
        {"required": ["budget"], "properties": {"budget": {"type": "object"}}},
        {"required": ["guardrails"], "properties": {"guardrails": {"minItems": 1}}},
    ], "description": "sets at least one of models, limits, budget, guardrails"}

    scope: Scope = msgspec.field(default_factory=Scope)
    models: ModelAccess | None = None
    limits: Limits | None = None
    budget: Budget | None = None
    guardrails: Annotated[list[Guardrail], msgspec.Meta(max_length=50)] = []


def _duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    repeated: set[str] = set()
    for value in values:
        (repeated if value in seen else seen).add(value)
    return sorted(repeated)


def validate_document(doc: PolicyDocument, prefix: str = "document") -> list[tuple[str, str]]:
    """Every check beyond decoding; returns ``(field path, message)`` pairs, empty when the document is sound.

    ``schema_rule_errors`` plus ``semantic_errors``: the admin API answers the first with a 400 (the
    request breaks its documented schema) and the second with a 422 (schema-valid, refused on meaning).
    """
    return schema_rule_errors(doc, prefix) + semantic_errors(doc, prefix)


def schema_rule_errors(doc: PolicyDocument, prefix: str = "document") -> list[tuple[str, str]]:
    """Rules the JSON Schema states (``uniqueItems``, the ``anyOf`` of at least one) but msgspec does not enforce."""
    errors: list[tuple[str, str]] = []
    if doc.models is None and doc.limits is None and doc.budget is None and not doc.guardrails:
        errors.append((prefix, "a policy must set at least one of models, limits, budget, guardrails"))
    if dup := _duplicates(doc.scope.teams):
        errors.append((f"{prefix}.scope.teams", f"duplicate teams: {dup}"))
    if doc.models is not None:
        for side in ("allow", "deny"):
            if dup := _duplicates(getattr(doc.models, side)):
                errors.append((f"{prefix}.models.{side}", f"duplicate patterns: {dup}"))
    if doc.limits is not None and not any(msgspec.structs.astuple(doc.limits)):
        errors.append((f"{prefix}.limits", "set at least one limit, or leave limits out"))
    if doc.budget is not None and (dup := _duplicates([str(t) for t in doc.budget.alert_at_percent])):
        errors.append((f"{prefix}.budget.alertAtPercent", f"duplicate thresholds: {dup}"))
    for i, rule in enumerate(doc.guardrails):
        path = f"{prefix}.guardrails[{i}]"
        if isinstance(rule, PiiGuardrail) and (dup := _duplicates(list(rule.entities))):
            errors.append((f"{path}.entities", f"duplicate entities: {dup}"))
        elif isinstance(rule, BlockedTermsGuardrail) and (dup := _duplicates(rule.terms)):
            errors.append((f"{path}.terms", f"duplicate terms: {dup}"))
    return errors


def semantic_errors(doc: PolicyDocument, prefix: str = "document") -> list[tuple[str, str]]:
    """What no schema states: contradictory model patterns, terms equal ignoring case, regexes that Python's
    ``re`` and RE2 (what the gateway's guardrails run them with, ``policies.re2``) both compile."""
    errors: list[tuple[str, str]] = []
    if doc.models is not None and (both := sorted(set(doc.models.allow) & set(doc.models.deny))):
        errors.append((f"{prefix}.models.deny", f"patterns both allowed and denied: {both}"))
    for i, rule in enumerate(doc.guardrails):
        path = f"{prefix}.guardrails[{i}]"
        if isinstance(rule, RegexGuardrail):
            try:
                re.compile(rule.pattern)
            except re.error as err:
                errors.append((f"{path}.pattern", f"not a valid regular expression: {err}"))
            else:
                from policies.re2 import Re2  # the gateway's engine for these; pyarrow loads on first use

                try:
                    Re2(rule.pattern)
                except ValueError as err:
                    errors.append((f"{path}.pattern", f"{err} (guardrail regexes run on RE2: no lookarounds or "
                                                      "backreferences)"))
        elif (isinstance(rule, BlockedTermsGuardrail) and not rule.case_sensitive and not _duplicates(rule.terms)
              and (dup := _duplicates([t.casefold() for t in rule.terms]))):
            errors.append((f"{path}.terms", f"duplicate terms ignoring case: {dup}"))
    return errors
