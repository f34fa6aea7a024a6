"""control/prompts/results_data.py: what the results and the supervisor read, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from adapters.store import SqlStore
from adapters.usage_store import write_usage
from control.prompts.results_data import load_variant_data
from tests.control.prompts._results_support import Traffic, store_fixture, usage_row

store = store_fixture


async def test_counts_sums_and_samples_per_variant(store: SqlStore) -> None:
    await write_usage(store, [
        usage_row("exp1", "a", latency_s=1.0, cost_usd=Decimal("0.002"), prompt_tokens=100, completion_tokens=7),
        usage_row("exp1", "a", latency_s=2.0, cost_usd=Decimal("0.004"), prompt_tokens=50, completion_tokens=3,
                  stream=True, ttft_s=0.25),
        usage_row("exp1", "a", status=502, latency_s=9.0),  # an error: counted, no latency, unpriced
        usage_row("exp1", "b", latency_s=3.0),
        usage_row("exp2", "a", latency_s=99.0),  # another experiment
        usage_row("exp1", "gone", latency_s=1.0),  # a variant the document no longer has
    ])
    loaded = await load_variant_data(store, "exp1", ["a", "b", "c"])
    a, b, c = loaded.data["a"], loaded.data["b"], loaded.data["c"]
    assert (a.requests, a.errors, a.fallbacks, a.unpriced) == (3, 1, 0, 1)
    assert sorted(a.latencies) == [1.0, 2.0] and list(a.ttfts) == [0.25]
    assert (a.prompt_tokens, a.completion_tokens) == (160, 15)
    assert sorted(a.costs) == pytest.approx([0.002, 0.004])
    assert sorted(a.prompt_tokens_each) == [10, 50, 100]
    assert loaded.exact["a"].cost_nano_usd == 6_000_000 and loaded.exact["a"].priced == 2
    assert (b.requests, list(b.latencies)) == (1, [3.0])
    assert c.requests == 0 and c.latencies.size == 0
    assert loaded.other_variants == {"gone": 1}
    assert not loaded.sampled


async def test_fallback_rows_are_counted_apart_and_nowhere_else(store: SqlStore) -> None:
    t = Traffic(store, "exp1")
    await t.records("a", 20, latency_s=0.5, latency_sd=0.0, cost_usd=0.001)
    fell = await t.records("a", 5, latency_s=30.0, latency_sd=0.0, error_rate=1.0, cost_usd=1.0, fallback=True,
                           episode_id="ep-fell")
    loaded = await load_variant_data(store, "exp1", ["a", "b"])
    a = loaded.data["a"]
    assert (a.requests, a.errors, a.fallbacks) == (20, 0, 5)
    assert set(a.latencies) == {0.5} and a.costs.max() == pytest.approx(0.001)
    assert loaded.exact["a"].cost_nano_usd == 20 * 1_000_000
    # Feedback on a fell-back request, or on an episode that had one, is excluded too.
    await t.feedback("a", scores=[1.0, 0.0, 0.5, 0.75], labels=[True, False, True, True],
                     request_ids=[fell[0].request_id, None, None, "other"], episode_ids=[None, "ep-fell", None, None])
    loaded = await load_variant_data(store, "exp1", ["a", "b"])
    a = loaded.data["a"]
    assert sorted(a.scores) == [0.5, 0.75] and (a.labels_positive, a.labels_total) == (2, 2)
    assert loaded.exact["a"].feedback_excluded == 2


async def test_feedback_joined_per_variant(store: SqlStore) -> None:
    t = Traffic(store, "exp1")
    await t.records("a", 3)
    await t.feedback("a", scores=[1, 2, 3], labels=[True, False, True])
    await t.feedback("b", labels=[False, False])  # labels without scores
    await t.feedback("b", scores=[5.0])
    loaded = await load_variant_data(store, "exp1", ["a", "b"])
    assert sorted(loaded.data["a"].scores) == [1, 2, 3]
    assert (loaded.data["a"].labels_positive, loaded.data["a"].labels_total) == (2, 3)
    assert list(loaded.data["b"].scores) == [5.0]
    assert (loaded.data["b"].labels_positive, loaded.data["b"].labels_total) == (0, 2)
    assert loaded.exact["a"].score_sum == 6 and loaded.exact["a"].scores == 3


async def test_since_bounds_the_window(store: SqlStore) -> None:
    now = time.time()
    await write_usage(store, [usage_row("exp1", "a", ts=now - 3600), usage_row("exp1", "a", ts=now - 10)])
    since = datetime.fromtimestamp(now - 60, UTC)
    assert (await load_variant_data(store, "exp1", ["a"], since=since)).data["a"].requests == 1
    assert (await load_variant_data(store, "exp1", ["a"])).data["a"].requests == 2


async def test_large_variants_are_sampled_uniformly_with_exact_counts(store: SqlStore) -> None:
    t = Traffic(store, "exp1", seed=7)
    # Time-ordered halves with different latencies: a sample that follows insertion order would see one.
    await t.records("a", 300, latency_s=0.1, latency_sd=0.0, cost_usd=0.001)
    await t.records("a", 300, latency_s=0.9, latency_sd=0.0, error_rate=0.5, cost_usd=0.003)
    await t.records("b", 40, latency_s=0.2, latency_sd=0.0)
    loaded = await load_variant_data(store, "exp1", ["a", "b"], cap=100)
    a, s = loaded.data["a"], loaded.sampling["a"]
    assert (s.records_kept, s.records, s.sampled) == (100, 600, True)
    assert not loaded.sampling["b"].sampled and loaded.data["b"].requests == 40
    assert a.requests == 600 and 100 < a.errors < 200  # exact counts
    assert loaded.exact["a"].cost_nano_usd == 300 * 1_000_000 + 300 * 3_000_000  # exact sum
    assert a.prompt_tokens_each.size == 100 and a.costs.size == 100
    slow_share = float(np.mean(a.latencies > 0.5))
    assert 0.1 < slow_share < 0.6  # both halves present (the slow half lost ~half its rows to errors)
    # Deterministic: every replica (and every tick) reads the same sample.
    again = await load_variant_data(store, "exp1", ["a", "b"], cap=100)
    assert sorted(again.data["a"].latencies) == sorted(a.latencies)


async def test_sampling_without_random_record_ids_still_keeps_cap_rows(store: SqlStore) -> None:
    rows = [usage_row("exp1", "a") for _ in range(50)]
    for i, r in enumerate(rows):
        r.record_id = f"zz-{i:04d}"  # sorts after every hex prefix: the pre-filter keeps none
    await write_usage(store, rows)
    loaded = await load_variant_data(store, "exp1", ["a"], cap=20)
    assert loaded.sampling["a"].records_kept == 20 and loaded.data["a"].requests == 50


async def test_scores_are_sampled_too_with_exact_means(store: SqlStore) -> None:
    t = Traffic(store, "exp1")
    await t.records("a", 10)
    await t.feedback("a", scores=[float(i % 5) for i in range(300)], labels=[i % 3 == 0 for i in range(300)])
    loaded = await load_variant_data(store, "exp1", ["a"], cap=100)
    s = loaded.sampling["a"]
    assert (s.scores_kept, s.scores, s.sampled) == (100, 300, True)
    assert loaded.exact["a"].score_sum == sum(i % 5 for i in range(300))  # exact, whatever was sampled
    assert (loaded.data["a"].labels_positive, loaded.data["a"].labels_total) == (100, 300)
    assert set(loaded.data["a"].scores) == {0.0, 1.0, 2.0, 3.0, 4.0}
