"""Policy documents now live in ``policies.documents`` (shared with the gateway); re-exported here."""

from policies.documents import (
    BlockedTermsGuardrail,
    Budget,
    Direction,
    Guardrail,
    Limits,
    MaxInputGuardrail,
    ModelAccess,
    PiiEntity,
    PiiGuardrail,
    PolicyDocument,
    RegexGuardrail,
    Scope,
    schema_rule_errors,
    semantic_errors,
    validate_document,
)

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
