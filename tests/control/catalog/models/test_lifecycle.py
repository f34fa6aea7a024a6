"""The status transition table."""

from __future__ import annotations

import pytest

from adapters.adminapi import Conflict
from control.catalog.models.lifecycle import TRANSITIONS, check_transition


def test_the_happy_path_and_the_way_back_are_allowed() -> None:
    for current, target in [("draft", "under_review"), ("under_review", "approved"), ("approved", "deprecated"),
                            ("deprecated", "retired"), ("under_review", "draft"), ("deprecated", "approved")]:
        check_transition("m", current, target)


@pytest.mark.parametrize(("current", "target"), [
    ("draft", "approved"), ("draft", "draft"), ("approved", "draft"), ("approved", "retired"),
    ("retired", "approved"), ("under_review", "deprecated"),
])
def test_other_transitions_are_conflicts_listing_the_allowed_ones(current: str, target: str) -> None:
    with pytest.raises(Conflict) as caught:
        check_transition("m", current, target)
    assert caught.value.data == {"from": current, "to": target, "allowed": list(TRANSITIONS[current])}
