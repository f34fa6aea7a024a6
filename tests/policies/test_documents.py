"""Policy documents (policies/documents.py): shape errors from msgspec, semantic errors from ``validate_document``."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from policies.documents import PolicyDocument, RegexGuardrail, schema_rule_errors, semantic_errors, validate_document


def decode(doc: dict[str, Any]) -> PolicyDocument:
    return msgspec.convert(doc, PolicyDocument)


def test_a_full_document_round_trips() -> None:
    doc = {
        "scope": {"teams": ["search", "ads"]},
        "models": {"allow": ["gpt-4o*", "ollama/llama3"], "deny": ["gpt-4o-realtime*"]},
        "limits": {"requestsPerMinute": 600, "tokensPerMinute": 100000, "tokensPerDay": 5000000,
                   "maxTokensPerRequest": 4096, "maxConcurrentRequests": 20},
        "budget": {"limitUsd": 500.0, "period": "monthly", "onExceed": "alert", "alertAtPercent": [50, 80, 100]},
        "guardrails": [
            {"kind": "pii", "entities": ["email", "credit_card"], "action": "redact", "applyTo": "both"},
            {"kind": "blocked_terms", "terms": ["project x"], "caseSensitive": False, "action": "block",
             "applyTo": "input"},
            {"kind": "regex", "pattern": r"\bsecret-\d+\b", "action": "redact", "applyTo": "output"},
            {"kind": "max_input", "maxChars": 20000},
        ],
    }
    parsed = decode(doc)
    assert validate_document(parsed) == []
    assert msgspec.to_builtins(parsed) == doc
    assert isinstance(parsed.guardrails[2], RegexGuardrail)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"limits": {"requestsPerMinute": 0}}, "$.limits.requestsPerMinute"),
        ({"limits": {"requestsPerMinute": "60"}}, "$.limits.requestsPerMinute"),
        ({"budget": {"limitUsd": -1, "period": "daily"}}, "$.budget.limitUsd"),
        ({"budget": {"limitUsd": 1, "period": "hourly"}}, "$.budget.period"),
        ({"scope": {"teams": ["bad team!"]}}, "$.scope.teams[0]"),
        ({"models": {"allow": []}}, "$.models.allow"),
        ({"models": {"allow": ["gpt 4"]}}, "$.models.allow[0]"),
        ({"guardrails": [{"kind": "telepathy"}]}, "$.guardrails[0]"),
        ({"guardrails": [{"kind": "pii", "entities": ["dna"]}]}, "$.guardrails[0].entities[0]"),
        ({"guardrails": [{"kind": "max_input"}]}, "$.guardrails[0]"),
        ({"limits": {"rpm": 5}}, "$.limits"),
    ],
)
def test_shape_errors_name_the_field(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        decode(doc)
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({}, "document", "at least one"),
        ({"scope": {"teams": ["a", "a"]}, "limits": {"requestsPerMinute": 1}}, "document.scope.teams", "duplicate"),
        ({"models": {"allow": ["x*"], "deny": ["x*"]}}, "document.models.deny", "both allowed and denied"),
        ({"models": {"allow": ["a", "a"]}}, "document.models.allow", "duplicate"),
        ({"limits": {}}, "document.limits", "at least one limit"),
        ({"budget": {"limitUsd": 5, "period": "daily", "alertAtPercent": [90, 50, 90]}},
         "document.budget.alertAtPercent", "duplicate"),
        ({"guardrails": [{"kind": "max_input", "maxChars": 5}, {"kind": "regex", "pattern": "(unclosed"}]},
         "document.guardrails[1].pattern", "regular expression"),
        ({"guardrails": [{"kind": "pii", "entities": ["email", "email"]}]}, "document.guardrails[0].entities",
         "duplicate"),
        ({"guardrails": [{"kind": "blocked_terms", "terms": ["Foo", "foo"]}]}, "document.guardrails[0].terms",
         "duplicate"),
    ],
)
def test_semantic_errors_name_the_field(doc: dict[str, Any], field: str, words: str) -> None:
    errors = validate_document(decode(doc))
    assert any(f == field and words in m for f, m in errors), errors


def test_case_sensitive_terms_may_differ_only_in_case() -> None:
    doc = decode({"guardrails": [{"kind": "blocked_terms", "terms": ["Foo", "foo"], "caseSensitive": True}]})
    assert validate_document(doc) == []


def test_governance_re_exports_the_shared_types() -> None:
    import control.governance
    import control.governance.documents as old
    import policies.documents as new

    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name), name
    assert control.governance.PolicyDocument is new.PolicyDocument


@pytest.mark.parametrize(("doc", "schema_rule"), [
    ({"models": {"allow": ["a", "a"]}}, True),  # uniqueItems, stated in the schema
    ({"guardrails": [{"kind": "blocked_terms", "terms": ["x", "x"]}]}, True),
    ({}, True),  # the anyOf of at least one section
    ({"models": {"allow": ["a"], "deny": ["a"]}}, False),  # no schema can say "not in the other list"
    ({"guardrails": [{"kind": "blocked_terms", "terms": ["Foo", "foo"]}]}, False),  # distinct to JSON Schema
    ({"guardrails": [{"kind": "regex", "pattern": "(?<=a+)b"}]}, False),  # ECMA-valid, Python refuses
])
def test_schema_rules_and_semantic_rules_are_told_apart(doc: dict[str, Any], schema_rule: bool) -> None:
    """The admin API answers the first kind with a 400 and the second with a 422."""
    parsed = decode(doc)
    found, other = (schema_rule_errors(parsed), semantic_errors(parsed))[:: 1 if schema_rule else -1]
    assert found and not other, (found, other)
    assert validate_document(parsed) == schema_rule_errors(parsed) + semantic_errors(parsed)
