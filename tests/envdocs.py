"""What env.example and docs/configuration.md say about a family of settings variables (``SERVING_``,
``TRAINING_``…), for the tests that keep them in step with the settings objects."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["documented_defaults", "env_example"]

ROOT = Path(__file__).resolve().parents[1]


def env_example(prefix: str) -> list[tuple[str, str, str]]:
    """``(variable, default, the comment line above it)`` for each ``<prefix>…=`` line of env.example, in order."""
    pattern = re.compile(rf"^({re.escape(prefix)}[A-Z0-9_]+)=(.*)$")
    lines = (ROOT / "env.example").read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            comment = lines[i - 1].removeprefix("# ") if i and lines[i - 1].startswith("# ") else ""
            found.append((match.group(1), match.group(2), comment))
    return found


def documented_defaults(heading: str) -> str:
    """The section of docs/configuration.md under ``heading`` (a whole ``## …`` line), up to the next one."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text[text.index(heading + "\n"):]
    end = section.find("\n## ", 1)
    return section if end < 0 else section[:end]
