"""Placeholder: filled in by its owner (see the training task files)."""

from __future__ import annotations

from typing import Any

CONTROLLERS: list[Any] = []
