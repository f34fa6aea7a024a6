"""gateway/usage_writer/writer.py: record ids that the store's unique index takes at its right edge."""

from __future__ import annotations

import re
import time

from gateway.usage_writer.writer import _mint_ids
from tests.gateway.usage_writer.conftest import record


def test_ids_minted_later_sort_later_and_stay_32_hex_digits() -> None:
    first = [record(i) for i in range(300)]
    _mint_ids(first)
    start = time.monotonic()
    while time.monotonic() - start < 1:  # the next batch is minted in a later millisecond
        later = [record(i) for i in range(300, 600)]
        _mint_ids(later)
        if later[0].record_id[:12] != first[0].record_id[:12]:
            break
    ids = [r.record_id for r in first + later]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == 600
    assert max(r.record_id for r in first) < min(r.record_id for r in later)
    assert int(first[0].record_id[:12], 16) <= time.time_ns() // 1_000_000  # the minting time, in ms


def test_ids_already_set_are_kept() -> None:
    recs = [record(0), record(1)]
    recs[0].record_id = "a" * 32
    _mint_ids(recs)
    assert recs[0].record_id == "a" * 32 and len(recs[1].record_id) == 32
