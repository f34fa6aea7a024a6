"""The ``serving`` entry point loads the module object whatever was imported before it."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import control.serving.module  # binds the package attribute 'module' to the submodule, unless __init__ rebinds it
from importlib.metadata import entry_points
(ep,) = [e for e in entry_points(group="llmops.control") if e.name == "serving"]
loaded = ep.load()
print(type(loaded).__name__, loaded.name)
"""


def test_the_entry_point_is_the_module_object_even_after_its_submodule_was_imported() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["ServingModule", "serving"]
