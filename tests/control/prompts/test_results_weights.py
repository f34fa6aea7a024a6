"""The results' ``effectiveWeights`` (and what the supervisor compares new weights with) is the split the
gateway's assigner actually makes, for every kind of runtime."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec
import pytest

from control.prompts.results import effective_weights
from policies.prompts.assignment import Assigner
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime

DOC = msgspec.convert({"id": "e", "route": "r", "control": "b", "variants": [
    {"name": "a", "weight": 1}, {"name": "b", "weight": 3}, {"name": "c", "weight": 0}]}, ExperimentDoc)


@dataclass
class Spec:
    document: ExperimentDoc
    runtime: ExperimentRuntime


@pytest.mark.parametrize("runtime", [
    ExperimentRuntime(state="running"),
    ExperimentRuntime(state="running", weights={"a": 0.7, "c": 0.3}),  # b omitted: 0
    ExperimentRuntime(state="running", stopped_variants=["b"]),
    ExperimentRuntime(state="running", stopped_variants=["a", "b"]),  # nothing left: control
    ExperimentRuntime(state="running", winner="a"),
    ExperimentRuntime(state="running", winner="a", rolled_back=True),  # rollback overrides the winner
    ExperimentRuntime(state="paused"),
    ExperimentRuntime(state="stopped", winner="c"),
], ids=str)
def test_effective_weights_are_the_assigners_split(runtime: ExperimentRuntime) -> None:
    assigner = Assigner(Spec(DOC, runtime))
    n = 20_000
    seen = Counter(a.variant.name for i in range(n) if (a := assigner.assign(f"u{i}", 0.0)) is not None)
    expected = effective_weights(DOC, runtime)
    assert sum(expected.values()) == pytest.approx(1.0)
    for name, share in expected.items():
        assert seen[name] / n == pytest.approx(share, abs=0.015), (name, seen)
