"""Token and cost counters from usage records, with bounded labels.

A usage consumer (gateway/metering.py runs it on the usage worker, off the
request path, after the pricer): each batch is folded into plain Python
numbers keyed by (route, model, provider, team), one dict lookup per record, and
exposed at scrape time by a custom collector, as `RequestStats` does.

Labels are bounded: `team` comes from the record's principal, never a key or
user id, and every label value passes a `LabelBudget` (the first N distinct
values of a label are kept, later ones count as ``other``; values are cut to
`MAX_LABEL_CHARS`). Absent values (no route chosen, no principal) are ``-``.
A whole-series cap backs the per-label budgets. Budgets are per worker.

With several workers (`shared_dir` set) the touched series are written through
to this worker's prometheus-client multiprocess files after each batch (whole
values, so a rewrite is idempotent); `/metrics` on any worker sums them.
"""

from __future__ import annotations

import logging
import math
import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from decimal import Decimal

import msgspec
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from adapters.usage import UsageRecord
from gateway.request_stats import LATENCY_BUCKETS

__all__ = ["ABSENT", "MAX_LABEL_CHARS", "OTHER", "TOKEN_KINDS", "LabelBudget", "LabelLimits", "UsageMetrics"]

log = logging.getLogger("llmops.metrics")

OTHER = "other"  # every value beyond a label's budget
ABSENT = "-"  # no value: denied before routing, no principal, no team
MAX_LABEL_CHARS = 100
TOKEN_KINDS = ("prompt", "completion", "cached_read", "cache_write", "reasoning")
"""`prompt` is the whole prompt (cached reads and cache writes included) and `completion` the whole
completion (reasoning included), as in `adapters.upstream.Usage`: the other kinds are parts of those two."""

_TOKENS = ("llmops_tokens", "Tokens by route, model, provider, team and kind (prompt and completion are whole; "
           "cached_read, cache_write and reasoning are parts of them).")
_COST = ("llmops_cost_usd", "Priced cost in US dollars by route, model, provider and team (the store is the ledger).")
_PRICED = ("llmops_usage_priced", "Usage records with a price (per token or per GPU-hour), by provider and model.")
_UNPRICED = ("llmops_usage_unpriced", "Usage records with tokens but no price (cost null), by provider and model.")
_V_REQUESTS = ("llmops_variant_requests", "Requests of A/B variants by route, variant and status class.")
_V_LATENCY = ("llmops_variant_latency_seconds", "End-to-end latency of A/B variants.")
_V_TOKENS = ("llmops_variant_tokens", "Tokens of A/B variants by route, variant and kind (prompt|completion).")
_V_COST = ("llmops_variant_cost_usd", "Priced cost of A/B variants in US dollars.")
_SERIES_LABELS = ("route", "model", "provider", "team")


class LabelLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How many distinct values each label keeps per worker, and how many (route, model,
    provider, team) series in all; beyond them, values (or whole series) count as ``other``."""

    routes: int = 200
    models: int = 200
    providers: int = 50
    teams: int = 200
    variants: int = 50
    series: int = 2000


class LabelBudget:
    """The first `max_values` distinct values of one label, cut to `MAX_LABEL_CHARS`; later
    values map to ``other`` without being stored, so memory stays bounded too."""

    __slots__ = ("_kept", "_max_values", "name", "overflowed")

    def __init__(self, name: str, max_values: int) -> None:
        self.name = name
        self._max_values = max_values
        self._kept: dict[str, str] = {}
        self.overflowed = 0  # values mapped to `other` so far

    def __call__(self, value: str | None) -> str:
        if not value or value == ABSENT:
            return ABSENT
        label = self._kept.get(value)
        if label is not None:
            return label
        if len(self._kept) >= self._max_values:
            if not self.overflowed:
                log.warning("metric label %r reached its budget of %d values; further values count as %r",
                            self.name, self._max_values, OTHER)
            self.overflowed += 1
            return OTHER
        label = self._kept[value] = value[:MAX_LABEL_CHARS]
        return label


_Key = tuple[str, str, str, str]  # (route, model, provider, team) labels
_RAW_CACHE_MAX = 10_000  # raw label values remembered for the fast path; beyond it, the budgets decide each time
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class _Totals:
    """One (route, model, provider, team) series: tokens per kind (in `TOKEN_KINDS` order) and cost.
    `pricing` is the [priced, unpriced] pair of its (provider, model), shared by every series of it."""

    __slots__ = ("cost_usd", "key", "pricing", "tokens")

    def __init__(self, key: _Key, pricing: list[int]) -> None:
        self.key = key
        self.pricing = pricing
        self.tokens = [0, 0, 0, 0, 0]
        self.cost_usd: Decimal | None = None  # None until a priced record arrives: no `0` series for unpriced


class _Variant:
    """One (route, variant) pair of an A/B test."""

    __slots__ = ("by_class", "cost_usd", "key", "latency", "latency_sum", "tokens")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.by_class: dict[str, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.tokens = [0, 0]
        self.cost_usd: Decimal | None = None


class UsageMetrics(Collector):
    """The usage consumer and collector of the token, cost and A/B series (see the module docstring)."""

    def __init__(self, shared_dir: str | None = None, limits: LabelLimits | None = None) -> None:
        limits = limits or LabelLimits()
        self._route, self._model = LabelBudget("route", limits.routes), LabelBudget("model", limits.models)
        self._provider, self._team = LabelBudget("provider", limits.providers), LabelBudget("team", limits.teams)
        self._variant = LabelBudget("variant", limits.variants)
        self._max_series = limits.series
        self._series: dict[_Key, _Totals] = {}
        self._pricing: dict[tuple[str, str], list[int]] = {}  # (provider, model): [priced, unpriced]
        self._variants: dict[tuple[str, str], _Variant] = {}
        # Raw values seen before -> their series: one dict lookup per record instead of four budgets.
        self._by_raw: dict[tuple[str, str, str, str | None], _Totals] = {}
        self._variant_by_raw: dict[tuple[str, str], _Variant] = {}
        self._shared_dir = shared_dir
        self._shared: _SharedFiles | None = None  # opened on the first batch, in the worker that writes

    async def consume(self, records: Sequence[UsageRecord]) -> None:
        self.observe_many(records)

    def observe_many(self, batch: Sequence[UsageRecord]) -> None:
        by_raw, variant_by_raw = self._by_raw, self._variant_by_raw
        touched: set[_Totals] = set()
        touched_variants: set[_Variant] = set()
        for r in batch:
            cost = r.cost_usd
            if not (r.prompt_tokens or r.completion_tokens or cost is not None or r.price_source or r.variant):
                continue  # nothing to count (probes, admin calls, most denials): no label budget spent on it
            principal = r.principal
            raw = (r.route, r.model, r.provider, None if principal is None else principal.team)
            t = by_raw.get(raw)
            if t is None:
                t = self._series_of(raw)
            tokens = t.tokens
            tokens[0] += r.prompt_tokens
            tokens[1] += r.completion_tokens
            tokens[2] += r.cached_read_tokens
            tokens[3] += r.cache_write_tokens
            tokens[4] += r.reasoning_tokens
            if cost is not None:
                t.cost_usd = cost if t.cost_usd is None else t.cost_usd + cost
            # GPU-hour records are priced (the reports spread the hour) though their own cost is null.
            if r.price_source is not None:
                t.pricing[0] += 1
            elif r.prompt_tokens or r.completion_tokens:
                t.pricing[1] += 1
            touched.add(t)
            if r.variant is not None:
                vraw = (r.route, r.variant)
                v = variant_by_raw.get(vraw)
                if v is None:
                    v = self._variant_of(vraw, t.key[0])
                status_class = _STATUS_CLASSES.get(r.status // 100, "other")
                v.by_class[status_class] = v.by_class.get(status_class, 0) + 1
                v.latency[bisect_left(LATENCY_BUCKETS, r.latency_s)] += 1
                v.latency_sum += r.latency_s
                v.tokens[0] += r.prompt_tokens
                v.tokens[1] += r.completion_tokens
                if cost is not None:
                    v.cost_usd = cost if v.cost_usd is None else v.cost_usd + cost
                touched_variants.add(v)
        if self._shared_dir is not None and touched:
            self._write_shared(touched, touched_variants)

    def _series_of(self, raw: tuple[str, str, str, str | None]) -> _Totals:
        """The series of raw label values: through the budgets, then the series cap (beyond it,
        the one all-`other` series)."""
        route, model, provider, team = raw
        key = (self._route(route), self._model(model), self._provider(provider), self._team(team))
        t = self._series.get(key)
        if t is None:
            if len(self._series) >= self._max_series:
                key = (OTHER, OTHER, OTHER, OTHER)
                t = self._series.get(key)
                if t is None:
                    log.warning("usage metrics reached their cap of %d series; further series count as %r",
                                self._max_series, OTHER)
            if t is None:
                pricing = self._pricing.setdefault((key[2], key[1]), [0, 0])
                t = self._series[key] = _Totals(key, pricing)
        if len(self._by_raw) < _RAW_CACHE_MAX:
            self._by_raw[raw] = t
        return t

    def _variant_of(self, raw: tuple[str, str], route: str) -> _Variant:
        key = (route, self._variant(raw[1]))
        v = self._variants.get(key)
        if v is None:
            v = self._variants[key] = _Variant(key)
        if len(self._variant_by_raw) < _RAW_CACHE_MAX:
            self._variant_by_raw[raw] = v
        return v

    def _write_shared(self, touched: set[_Totals], touched_variants: set[_Variant]) -> None:
        if self._shared is None:
            assert self._shared_dir is not None
            self._shared = _SharedFiles(self._shared_dir)
        shared = self._shared
        for t in touched:
            shared.write_series(t.key, t)
        for provider, model in {(t.key[2], t.key[1]) for t in touched}:
            shared.write_pricing((provider, model), self._pricing[(provider, model)])
        for v in touched_variants:
            shared.write_variant(v.key, v)

    def collect(self) -> Iterator[Metric]:
        if self._shared_dir is not None:
            return  # the multiprocess collector reads what `observe_many` wrote
        tokens = CounterMetricFamily(*_TOKENS, labels=[*_SERIES_LABELS, "kind"])
        cost = CounterMetricFamily(*_COST, labels=list(_SERIES_LABELS))
        priced = CounterMetricFamily(*_PRICED, labels=["provider", "model"])
        unpriced = CounterMetricFamily(*_UNPRICED, labels=["provider", "model"])
        v_requests = CounterMetricFamily(*_V_REQUESTS, labels=["route", "variant", "status_class"])
        v_latency = HistogramMetricFamily(*_V_LATENCY, labels=["route", "variant"])
        v_tokens = CounterMetricFamily(*_V_TOKENS, labels=["route", "variant", "kind"])
        v_cost = CounterMetricFamily(*_V_COST, labels=["route", "variant"])
        for key, t in self._series.items():
            for kind, n in zip(TOKEN_KINDS, t.tokens, strict=True):
                if n:
                    tokens.add_metric([*key, kind], n)
            if t.cost_usd is not None:
                cost.add_metric(list(key), float(t.cost_usd))
        for (provider, model), (n_priced, n_unpriced) in self._pricing.items():
            if n_priced:
                priced.add_metric([provider, model], n_priced)
            if n_unpriced:
                unpriced.add_metric([provider, model], n_unpriced)
        for (route, variant), v in self._variants.items():
            for status_class, n in v.by_class.items():
                v_requests.add_metric([route, variant, status_class], n)
            running, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS, math.inf), v.latency, strict=True):
                running += n
                buckets.append((floatToGoString(bound), float(running)))
            v_latency.add_metric([route, variant], buckets, v.latency_sum)
            for kind, n in zip(("prompt", "completion"), v.tokens, strict=True):
                if n:
                    v_tokens.add_metric([route, variant, kind], n)
            if v.cost_usd is not None:
                v_cost.add_metric([route, variant], float(v.cost_usd))
        yield from (tokens, cost, priced, unpriced, v_requests, v_latency, v_tokens, v_cost)


class _SharedFiles:
    """This worker's usage series in prometheus-client's multiprocess files (`counter_usage-<pid>.db`,
    `histogram_usage-<pid>.db`: apart from the library's and RequestStats' own files)."""

    def __init__(self, path: str) -> None:
        pid = os.getpid()
        self._counters = MmapedDict(os.path.join(path, f"counter_usage-{pid}.db"))
        self._histograms = MmapedDict(os.path.join(path, f"histogram_usage-{pid}.db"))
        self._keys: dict[tuple[str, ...], str] = {}

    def _key(self, metric: tuple[str, str], suffix: str, names: tuple[str, ...], values: tuple[str, ...]) -> str:
        cache = (metric[0], suffix, *values)
        key = self._keys.get(cache)
        if key is None:
            key = self._keys[cache] = mmap_key(metric[0], metric[0] + suffix, list(names), list(values), metric[1])
        return key

    def write_series(self, key: tuple[str, str, str, str], t: _Totals) -> None:
        put = self._counters.write_value
        for kind, n in zip(TOKEN_KINDS, t.tokens, strict=True):
            if n:
                put(self._key(_TOKENS, "_total", (*_SERIES_LABELS, "kind"), (*key, kind)), n, 0.0)
        if t.cost_usd is not None:
            put(self._key(_COST, "_total", _SERIES_LABELS, key), float(t.cost_usd), 0.0)

    def write_pricing(self, pkey: tuple[str, str], counts: list[int]) -> None:
        for metric, n in ((_PRICED, counts[0]), (_UNPRICED, counts[1])):
            if n:
                self._counters.write_value(self._key(metric, "_total", ("provider", "model"), pkey), n, 0.0)

    def write_variant(self, vkey: tuple[str, str], v: _Variant) -> None:
        put_c, put_h, names = self._counters.write_value, self._histograms.write_value, ("route", "variant")
        for status_class, n in v.by_class.items():
            put_c(self._key(_V_REQUESTS, "_total", (*names, "status_class"), (*vkey, status_class)), n, 0.0)
        for kind, n in zip(("prompt", "completion"), v.tokens, strict=True):
            if n:
                put_c(self._key(_V_TOKENS, "_total", (*names, "kind"), (*vkey, kind)), n, 0.0)
        if v.cost_usd is not None:
            put_c(self._key(_V_COST, "_total", names, vkey), float(v.cost_usd), 0.0)
        for bound, n in zip((*LATENCY_BUCKETS, math.inf), v.latency, strict=True):
            put_h(self._key(_V_LATENCY, "_bucket", (*names, "le"), (*vkey, floatToGoString(bound))), n, 0.0)
        put_h(self._key(_V_LATENCY, "_sum", names, vkey), v.latency_sum, 0.0)
