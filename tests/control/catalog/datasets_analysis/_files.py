"""Type of the file-writing fixtures in conftest (kept here so tests never import conftest)."""

from collections.abc import Callable
from pathlib import Path

Writer = Callable[..., Path]
