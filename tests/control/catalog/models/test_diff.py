"""Field-by-field version diff."""

from __future__ import annotations

from control.catalog.models.diff import diff_definitions


def test_nested_fields_are_dotted_and_lists_compared_whole() -> None:
    old = {"name": "m", "provider": {"kind": "openai", "baseUrl": "https://a"}, "tags": ["x"], "labels": {}}
    new = {"name": "m", "provider": {"kind": "openai", "baseUrl": "https://b"}, "tags": ["x", "y"],
           "labels": {"env": "prod"}}
    changes = [(c.field, c.old, c.new) for c in diff_definitions(old, new)]
    assert changes == [("labels.env", None, "prod"), ("provider.baseUrl", "https://a", "https://b"),
                       ("tags", ["x"], ["x", "y"])]
    assert diff_definitions(new, new) == []
    appeared = [(c.field, c.old, c.new) for c in diff_definitions({"provider": None}, {"provider": {"kind": "x"}})]
    assert appeared == [("provider.kind", None, "x")]
