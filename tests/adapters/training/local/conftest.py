"""Every local training test must leave no supervisor or rank running: checked (and cleaned up) after each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adapters.training.local.helpers import alive, kill_all, recorded_pids


@pytest.fixture(autouse=True)
def no_process_left(tmp_path: Path) -> Iterator[None]:
    yield
    pids = recorded_pids(tmp_path)
    deadline = time.monotonic() + 5.0  # a supervisor exits a moment after it records the end
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        kill_all(left)
        pytest.fail(f"the test left processes running: {left}")
