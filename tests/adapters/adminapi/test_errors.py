"""The 400/422 split: a schema error is a ``ValidationFailed``, a schema-valid refusal a ``SemanticError``."""

from __future__ import annotations

import pytest

from adapters.adminapi import FieldError, SemanticError, Unprocessable, ValidationFailed, refuse

SCHEMA = [FieldError(field="tags", message="duplicate tags")]
MEANING = [FieldError(field="piiRules", message="unknown rules ['dna']"),
           FieldError(field="provider.apiKey", message="send apiKeyRef")]


def test_semantic_errors_are_422_with_the_same_body_as_400() -> None:
    with pytest.raises(SemanticError) as raised:
        refuse([], MEANING)
    err = raised.value
    assert isinstance(err, Unprocessable) and err.status == err.status_code == 422
    assert err.message == "Invalid piiRules: unknown rules ['dna'] (and 1 more)"
    assert err.data == {"errors": [{"field": "piiRules", "message": "unknown rules ['dna']"},
                                   {"field": "provider.apiKey", "message": "send apiKeyRef"}]}


def test_a_schema_error_wins_over_a_semantic_one() -> None:
    with pytest.raises(ValidationFailed) as raised:
        refuse(SCHEMA, MEANING)
    assert raised.value.status == 400 and raised.value.errors == SCHEMA


def test_nothing_to_refuse() -> None:
    refuse([], [])
