"""Field-by-field difference of two model definitions (their API snapshots).

Nested objects are flattened to dotted paths (``provider.baseUrl``,
``labels.env``), so a change deep inside the provider shows up as exactly that
field; lists (tags, training datasets) are compared as whole values, because
"element 2 changed" says less than the old and new list side by side.
"""

from __future__ import annotations

from typing import Any

from control.catalog.models.protocol import FieldChange

__all__ = ["diff_definitions", "flatten"]

def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict):  # an empty object contributes no fields
            out.update(flatten(item, path + "."))
        else:
            out[path] = item
    return out


def diff_definitions(old: dict[str, Any], new: dict[str, Any]) -> list[FieldChange]:
    """Changed fields in path order; a field absent on one side shows as ``null`` there."""
    a, b = flatten(old), flatten(new)
    changes = []
    for path in sorted(a.keys() | b.keys()):
        before, after = a.get(path), b.get(path)
        if before != after:
            changes.append(FieldChange(field=path, old=before, new=after))
    return changes
