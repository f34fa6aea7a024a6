"""One named section of docs/benchmarks.md, rewritten in place by the benchmark that owns it.

A section runs from ``<!-- NAME:start ... -->`` to ``<!-- NAME:end -->``; ``loadtests.bench`` keeps
every such section when it rewrites the rest of the file."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_section"]


def write_section(doc: Path, name: str, section: str) -> None:
    """Replace section ``name`` of ``doc`` with ``section`` (which carries its own markers), or append it."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    start, end_marker = text.find(f"<!-- {name}:start"), f"<!-- {name}:end -->"
    end = text.find(end_marker)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(end_marker):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text, encoding="utf-8")
