"""policies/prompts/assignment.py: sticky, deterministic assignment; weights, ramps and runtime states."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.snapshots import ExperimentSpec
from policies.prompts.assignment import Assigner, Assignment, unit_of, unit_point
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime

ROOT = Path(__file__).resolve().parents[3]
N = 10_000
NOW = 1_700_000_000.0


def experiment(weights: tuple[float, ...] = (1, 1), **fields: Any) -> ExperimentDoc:
    variants = [{"name": name, "weight": w} for name, w in zip("abcdefgh", weights, strict=False)]
    return msgspec.convert({"id": "exp-1", "route": "chat", "variants": variants, **fields}, ExperimentDoc)


def assigner(doc: ExperimentDoc, **runtime: Any) -> Assigner:
    return Assigner(ExperimentSpec(document=doc, runtime=ExperimentRuntime(**{"state": "running", **runtime})))


def names(a: Assigner, units: list[str]) -> list[str | None]:
    return [None if (x := a.assign(u, NOW)) is None else x.variant.name for u in units]


def counts(a: Assigner, now: float = NOW) -> Counter[str | None]:
    got = (a.assign(f"user-{i}", now) for i in range(N))
    return Counter(None if x is None else x.variant.name for x in got)


def distinct(items: Iterable[Assignment | None]) -> list[Assignment | None]:
    """The different assignments, in order (a VariantDoc holds dicts, so no set)."""
    out: list[Assignment | None] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


# -- the hash ------------------------------------------------------------------------------------

def test_unit_point_is_two_uniforms_in_range_and_independent_of_each_other() -> None:
    points = [unit_point("exp-1", f"u{i}") for i in range(N)]
    assert all(0 <= u1 < 1 and 0 <= u2 < 1 for u1, u2 in points)
    for k in (0, 1):  # each coordinate is uniform: every decile holds about a tenth
        deciles = Counter(int(p[k] * 10) for p in points)
        assert all(within_4_sigma(deciles[d], N, 0.1) for d in range(10)), deciles
    # independent: u1 in the lower half says nothing about u2 being in the lower half
    both = sum(1 for u1, u2 in points if u1 < 0.5 and u2 < 0.5)
    assert within_4_sigma(both, N, 0.25)
    # and the experiment is part of the key: another experiment places units elsewhere
    assert unit_point("exp-2", "u1") != unit_point("exp-1", "u1")


def test_unit_point_is_pinned() -> None:
    # Changing the hash reassigns every unit of every running experiment on upgrade: keep these values.
    assert unit_point("exp-1", "alice") == (0.738340473663, 0.3028812850066914)


def test_same_unit_same_variant_in_another_process() -> None:
    doc = experiment((1, 2, 3, 4), allocation=0.7)
    units = [f"user-{i}" for i in range(500)] + ["ünïcode", "a\x00b", "\ud800lone-surrogate"]
    here = names(assigner(doc), units)
    assert names(assigner(doc), units) == here  # a second Assigner, as after a new snapshot
    script = (
        "import json, sys, msgspec\n"
        "from adapters.snapshots import ExperimentSpec\n"
        "from policies.prompts.assignment import Assigner\n"
        "from policies.prompts.documents import ExperimentDoc, ExperimentRuntime\n"
        "doc, units = json.loads(sys.stdin.read())\n"
        "a = Assigner(ExperimentSpec(document=msgspec.convert(doc, ExperimentDoc),"
        " runtime=ExperimentRuntime(state='running')))\n"
        "print(json.dumps([None if (x := a.assign(u, 0.0)) is None else x.variant.name for u in units]))\n"
    )
    # a fresh interpreter with a different hash seed: Python's own hash() would disagree here
    child = subprocess.run([sys.executable, "-c", script], input=json.dumps([msgspec.to_builtins(doc), units]),
                           capture_output=True, text=True, cwd=ROOT, timeout=60,
                           env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}, check=True)
    assert json.loads(child.stdout) == here
    assert len(set(here)) == 5  # every variant and "not in the experiment" occur: the comparison says something


# -- weights and allocation ----------------------------------------------------------------------

def test_weights_are_honoured_over_10000_units() -> None:
    got = counts(assigner(experiment((1, 2, 7))))
    assert got[None] == 0
    for name, p in (("a", 0.1), ("b", 0.2), ("c", 0.7)):
        assert within_4_sigma(got[name], N, p), (name, got)


def test_allocation_keeps_the_rest_out() -> None:
    got = counts(assigner(experiment((1, 1), allocation=0.3)))
    assert within_4_sigma(got[None], N, 0.7), got
    assert within_4_sigma(got["a"], N, 0.15) and within_4_sigma(got["b"], N, 0.15), got
    assert counts(assigner(experiment((1, 1), allocation=0.0)))[None] == N


def test_runtime_weights_replace_the_documents() -> None:
    doc = experiment((1, 1, 1))
    got = counts(assigner(doc, weights={"a": 1.0, "b": 3.0}))  # c omitted: 0
    assert got["c"] == 0
    assert within_4_sigma(got["a"], N, 0.25) and within_4_sigma(got["b"], N, 0.75), got
    # negative or non-finite weights count as 0
    assert counts(assigner(doc, weights={"a": -1.0, "b": float("nan"), "c": 1.0})) == Counter({"c": N})


def test_stopped_variants_get_nothing_and_the_rest_share() -> None:
    got = counts(assigner(experiment((1, 1, 1)), stopped_variants=["b"]))
    assert got["b"] == 0
    assert within_4_sigma(got["a"], N, 0.5) and within_4_sigma(got["c"], N, 0.5), got


def test_all_weights_zero_sends_the_experiment_to_control() -> None:
    doc = experiment((1, 1, 1), control="b")
    assert counts(assigner(doc, stopped_variants=["a", "b", "c"])) == Counter({"b": N})
    got = assigner(doc, weights={"a": 0.0}).assign("u", NOW)
    assert got == Assignment(doc.variants[1], True)


def test_sticky_while_weights_unchanged() -> None:
    a = assigner(experiment((1, 1, 1)))
    first = [a.assign(f"u{i}", NOW) for i in range(200)]
    # a new Assigner (a new snapshot, another replica) and a later time change nothing
    again = assigner(experiment((1, 1, 1)))
    assert [again.assign(f"u{i}", NOW + 86400) for i in range(200)] == first


def test_ramp_grows_allocation_and_units_stay_in_their_variant() -> None:
    doc = experiment((1, 1), allocation=0.5, ramp={"start_allocation": 0.1, "duration_s": 100})
    a = assigner(doc, started_at=NOW)
    assert a.allocation(NOW - 50) == pytest.approx(0.1)
    assert a.allocation(NOW + 50) == pytest.approx(0.3)
    assert a.allocation(NOW + 500) == pytest.approx(0.5)
    previous: dict[str, str] = {}
    for t in range(0, 121, 10):
        now_in = {u: x.variant.name for i in range(N) if (x := a.assign(u := f"user-{i}", NOW + t)) is not None}
        assert previous.items() <= now_in.items(), f"a unit left or changed variant at t={t}"
        assert within_4_sigma(len(now_in), N, a.allocation(NOW + t))
        previous = now_in
    assert within_4_sigma(len(previous), N, 0.5)
    # running but never started: the ramp holds at its start
    assert assigner(doc).allocation(NOW + 1e6) == pytest.approx(0.1)


def test_ramp_start_above_the_allocation_does_not_ramp_down() -> None:
    a = assigner(experiment(allocation=0.02, ramp={"start_allocation": 0.05}), started_at=NOW)
    assert a.allocation(NOW) == pytest.approx(0.02)


def test_random_assignment_without_a_unit() -> None:
    a = assigner(experiment((1, 3), allocation=0.8))
    rng = random.Random(20260202)
    got = Counter(None if (x := a.assign(None, NOW, rng.random)) is None else x.variant.name for _ in range(N))
    assert within_4_sigma(got[None], N, 0.2)
    assert within_4_sigma(got["a"], N, 0.2) and within_4_sigma(got["b"], N, 0.6), got
    # not sticky: it follows the draws, not a hash
    draws = iter([0.1, 0.1, 0.1, 0.9, 0.95, 0.0])
    assert [a.assign(None, NOW, lambda: next(draws)) for _ in range(3)] == \
        [Assignment(a.document.variants[0], True), Assignment(a.document.variants[1], True), None]


# -- runtime states ------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["running", "paused", "stopped", "draft"])
def test_winner_takes_everyone_in_any_state(state: str) -> None:
    doc = experiment((1, 1, 1), allocation=0.1)
    a = assigner(doc, state=state, winner="c")
    assert distinct(a.assign(f"u{i}", NOW) for i in range(100)) == [Assignment(doc.variants[2], True)]


def test_unknown_winner_falls_back_to_control() -> None:
    doc = experiment((1, 1))
    assert assigner(doc, winner="gone").assign("u", NOW) == Assignment(doc.variants[0], True)


@pytest.mark.parametrize("winner", [None, "c"])
def test_rollback_sends_everyone_to_control_even_over_a_winner(winner: str | None) -> None:
    doc = experiment((1, 1, 1), control="b", allocation=0.1)
    a = assigner(doc, rolled_back=True, winner=winner)
    assert distinct([*(a.assign(f"u{i}", NOW) for i in range(100)), a.assign(None, NOW)]) == \
        [Assignment(doc.variants[1], True)]


@pytest.mark.parametrize("state", ["paused", "stopped"])
def test_paused_and_stopped_send_control_untagged(state: str) -> None:
    doc = experiment((1, 1), allocation=0.1)
    a = assigner(doc, state=state)
    assert distinct(a.assign(f"u{i}", NOW) for i in range(100)) == [Assignment(doc.variants[0], False)]


def test_draft_is_not_in_effect() -> None:
    a = assigner(experiment((1, 1)), state="draft")
    assert distinct([*(a.assign(f"u{i}", NOW) for i in range(100)), a.assign(None, NOW)]) == [None]


# -- units ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("unit", "body", "headers", "key_id", "expected"), [
    ("user", {"user": "alice"}, {}, "k1", "alice"),
    ("user", {"user": ""}, {}, "k1", None),
    ("user", {"user": 42}, {}, "k1", None),
    ("user", {}, {}, "k1", None),
    ("session", {"llmops": {"session_id": "s1"}}, {"x-llmops-session-id": "h1"}, None, "s1"),
    ("session", {"llmops": {"session_id": 7}}, {"x-llmops-session-id": "h1"}, None, "h1"),
    ("session", {"llmops": "not an object"}, {"x-llmops-session-id": "h1"}, None, "h1"),
    ("session", {}, {}, None, None),
    ("episode", {"llmops": {"episode_id": "e1", "session_id": "s1"}}, {}, None, "e1"),
    ("episode", {"llmops": {"session_id": "s1"}}, {"x-llmops-episode-id": "h2"}, None, "h2"),
    ("key", {"user": "alice"}, {}, "key-9", "key-9"),
    ("key", {"user": "alice"}, {}, None, None),
    ("header:X-Tenant-Id", {"user": "alice"}, {"x-tenant-id": "acme"}, "k1", "acme"),
    ("header:X-Tenant-Id", {"user": "alice"}, {"x-tenant-id": ""}, "k1", None),
    ("header:X-Tenant-Id", {"user": "alice"}, {}, "k1", None),
])
def test_unit_of(unit: str, body: dict[str, Any], headers: dict[str, str], key_id: str | None,
                 expected: str | None) -> None:
    assert unit_of(experiment(unit=unit), body, headers, key_id) == expected
