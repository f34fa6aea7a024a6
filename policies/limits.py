"""Limits and budgets: which apply to a request, and what it reserves. Pure: no I/O, no clock.

What applies to a request (``compile_rules``): every policy document whose scope names the key's
team (an empty scope: everyone, anonymous requests included), plus the key's own settings and its
team's own. From those come

* **rates**, token buckets (``Bucket``): ``requestsPerMinute`` (cost 1), ``tokensPerMinute`` and
  ``tokensPerDay`` (cost: the prompt's estimate plus the request's ``max_tokens``, settled to the
  metered total). A bucket holds ``limit`` and refills continuously, ``limit`` per window, so a
  burst may take the whole limit and the rest follows at the steady rate: no window edge lets
  twice the limit through, and a crashed replica's reservation refills by itself;
* **concurrency** (``Slot``): ``maxConcurrentRequests``, a slot held until the request finished;
* **budgets** (``Spend``): USD per UTC period (daily, weekly from Monday, monthly), checked
  against the spend so far plus what requests in flight reserved (their worst-case cost);
* ``maxTokensPerRequest`` (the smallest that applies; rejected or capped by the caller) and
  ``models`` (allow/deny globs on the route, the model and ``provider/model``; deny wins).

Each rate or concurrency rule has its own counter per the dimensions it is configured ``per``
(``key``, ``team``, ``route``); spend counters belong to a key or a team, whatever budget checks
them, so a team's own budget and a policy's budget for that team read one spend.

The backends (``adapters.ratelimit``) take a ``Demand`` (every check for one request, decided at
once), answer a ``Verdict``, and later take a ``Settlement``. Money is integer nano-dollars there,
as in the usage tables. ``period_bounds`` is the one definition of a period (the Redis script
carries the same arithmetic, tested against this).
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal

import msgspec

from policies.documents import Limits, PolicyDocument

__all__ = [
    "ANONYMOUS",
    "NANO",
    "WINDOW_S",
    "Bucket",
    "BucketRef",
    "BudgetRule",
    "ConcurrencyRule",
    "Demand",
    "Dim",
    "Fired",
    "ModelRule",
    "Period",
    "Plan",
    "RateKind",
    "RateRule",
    "Rules",
    "Settlement",
    "Slot",
    "Spend",
    "SpendRef",
    "Verdict",
    "cap_max_tokens",
    "compile_rules",
    "estimate_prompt_tokens",
    "format_reset",
    "period_bounds",
    "period_end",
    "requested_max_tokens",
    "to_nano",
]

Dim = Literal["key", "team", "route"]
RateKind = Literal["rpm", "tpm", "tpd"]
Period = Literal["daily", "weekly", "monthly"]
WINDOW_S: Final[dict[str, int]] = {"rpm": 60, "tpm": 60, "tpd": 86_400}
NANO: Final = Decimal(10) ** 9
ANONYMOUS: Final = "-"  # the key and team of a request no plug-in authenticated
_MAX_TOKEN_FIELDS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def to_nano(usd: Decimal | float | int) -> int:
    """Dollars as whole nano-dollars, rounded up (never under-reserve or under-bill)."""
    value = usd if isinstance(usd, Decimal) else Decimal(str(usd))
    return math.ceil(value.scaleb(9))  # an exponent shift: exact, and cheaper than a multiplication


# -- what a backend is asked, and answers --------------------------------------------------------

class Bucket(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A token bucket; it takes the demand's ``tokens`` (``tokens`` true) or one request."""

    key: str
    limit: int
    window_s: int
    tokens: bool


class Slot(msgspec.Struct, array_like=True, frozen=True, gc=False):
    key: str
    limit: int


class Spend(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A budget's spend; it reserves the demand's ``cost``. The period id is the backend's (server time)."""

    key: str  # "key=<id>" or "team=<name>"
    period: Period
    limit: int  # nano-dollars; -1: alert-only budgets, never refused


class Demand(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Every check of one request: all pass and are reserved, or none is.

    Only ``id``, ``tokens`` and ``cost`` are the request's own: the checks are built once per key and
    route (``Plan``) and shared by every demand, which never changes them."""

    id: str  # unique per reservation (concurrency slots and spend reservations are named by it)
    ttl_s: int  # a reservation not settled by then is dropped (a crashed replica's)
    tokens: int  # what each tokens bucket takes: the prompt's estimate plus the output cap
    cost: int  # what each spend reserves: the worst case, nano-dollars
    buckets: list[Bucket]
    slots: list[Slot]
    spends: list[Spend]

    def cost_of(self, bucket: Bucket) -> int:
        return self.tokens if bucket.tokens else 1


class Verdict(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``ok``, or which check refused (``kind`` bucket/slot/spend, ``index`` into its list).

    ``levels``: per bucket ``[remaining, seconds until full]`` (after this reservation when ok);
    ``periods``/``ends_in_s``: per spend, the period's id and the seconds until it ends;
    ``spent``/``reserved``: the refusing spend's nano-dollars."""

    ok: bool
    kind: str = ""
    index: int = -1
    retry_after_s: float = 0.0
    levels: list[tuple[int, float]] = []
    periods: list[str] = []
    ends_in_s: list[float] = []
    spent: int = 0
    reserved: int = 0


class BucketRef(msgspec.Struct, array_like=True, frozen=True, gc=False):
    key: str
    limit: int
    window_s: int


class SpendRef(msgspec.Struct, array_like=True, frozen=True, gc=False):
    key: str
    alerts: list[tuple[str, int]] = []  # (alert id, threshold in nano-dollars): each fires once per period


class Settlement(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Back to what a request used. Like ``Demand``, only its numbers are its own: ``delta`` (tokens
    metered minus reserved, a refund when negative) for each of ``buckets`` (the tokens buckets),
    ``slots`` released, and for each of ``spends`` the ``reserved`` nano-dollars released (0: none,
    e.g. spend replayed after an outage) and the ``actual`` cost added, in ``periods`` (the
    reservation's own, aligned with ``spends``)."""

    id: str
    delta: int
    buckets: list[BucketRef]
    slots: list[str]
    reserved: int
    actual: int
    spends: list[SpendRef]
    periods: list[str]


class Fired(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """An alert threshold crossed for the first time this period."""

    alert: str
    spent: int


# -- periods -------------------------------------------------------------------------------------

def _days_from_civil(y: int, m: int, d: int) -> int:
    return (datetime(y, m, d, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days


def period_bounds(period: Period, now: float) -> tuple[str, float, float]:
    """``(id, start, end)`` in epoch seconds of the UTC period holding ``now``."""
    return _bounds(period, math.floor(now / 86_400))


@functools.lru_cache(maxsize=64)
def _bounds(period: Period, day: int) -> tuple[str, float, float]:
    if period == "daily":
        return f"d{day}", day * 86_400.0, (day + 1) * 86_400.0
    if period == "weekly":
        monday = day - (day + 3) % 7  # 1970-01-01 was a Thursday
        return f"w{monday}", monday * 86_400.0, (monday + 7) * 86_400.0
    date = datetime.fromtimestamp(day * 86_400, tz=UTC)
    y, m = date.year, date.month
    start = _days_from_civil(y, m, 1)
    end = _days_from_civil(y + m // 12, m % 12 + 1, 1)
    return f"m{y:04d}{m:02d}", start * 86_400.0, end * 86_400.0


def period_end(period_id: str) -> float:
    """When the period ``period_id`` (a ``period_bounds`` id) ends, in epoch seconds."""
    kind, value = period_id[0], period_id[1:]
    if kind == "d":
        return (int(value) + 1) * 86_400.0
    if kind == "w":
        return (int(value) + 7) * 86_400.0
    y, m = int(value[:4]), int(value[4:6])
    return _days_from_civil(y + m // 12, m % 12 + 1, 1) * 86_400.0


# -- rules -----------------------------------------------------------------------------------------

class RateRule(msgspec.Struct, frozen=True):
    source: str  # for messages: "key", "team" or "policy <name>"
    ident: str  # counter namespace: "k", "t" or "p:<policy id>"
    kind: RateKind
    limit: int
    per: tuple[Dim, ...]


class ConcurrencyRule(msgspec.Struct, frozen=True):
    source: str
    ident: str
    limit: int
    per: tuple[Dim, ...]


class BudgetRule(msgspec.Struct, frozen=True):
    source: str
    ident: str  # names its alerts
    subject: Literal["key", "team"]
    limit_nano: int
    period: Period
    block: bool
    alert_percents: tuple[int, ...]


class ModelRule(msgspec.Struct, frozen=True):
    source: str
    allow: re.Pattern[str]
    deny: re.Pattern[str] | None


def _globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


_RATE_FIELDS: Final[tuple[tuple[str, RateKind], ...]] = (
    ("requests_per_minute", "rpm"), ("tokens_per_minute", "tpm"), ("tokens_per_day", "tpd"))


class Rules:
    """What applies to one (key, team): built once per snapshot and principal, used per request."""

    __slots__ = ("_plans", "budgets", "empty", "max_tokens", "max_tokens_source", "models", "needs_cost",
                 "needs_tokens", "rates", "slots", "team")

    def __init__(self, team: str, rates: Sequence[RateRule] = (), slots: Sequence[ConcurrencyRule] = (),
                 budgets: Sequence[BudgetRule] = (), models: Sequence[ModelRule] = (),
                 max_tokens: tuple[int, str] | None = None) -> None:
        self.team = team
        self.rates = tuple(rates)
        self.slots = tuple(slots)
        self.budgets = tuple(budgets)
        self.models = tuple(models)
        self.max_tokens: int | None = max_tokens[0] if max_tokens is not None else None
        self.max_tokens_source = max_tokens[1] if max_tokens is not None else ""
        self.needs_tokens = any(r.kind != "rpm" for r in self.rates)
        self.needs_cost = bool(self.budgets)
        self.empty = not (self.rates or self.slots or self.budgets or self.models or self.max_tokens)
        self._plans: dict[tuple[str, str], Plan] = {}

    @property
    def reserves(self) -> bool:
        """Whether a request needs a backend round trip (models and the token cap are local checks)."""
        return bool(self.rates or self.slots or self.budgets)

    def model_denied(self, route: str, provider: str | None, model: str | None) -> str | None:
        """The rule's source that refuses this target, else None."""
        names = [route]
        if model:
            names.append(model)
            if provider:
                names.append(f"{provider}/{model}")
        for rule in self.models:
            if rule.deny is not None and any(rule.deny.match(n) for n in names):
                return rule.source
            if not any(rule.allow.match(n) for n in names):
                return rule.source
        return None

    def plan(self, key_id: str, route: str) -> Plan:
        """The counters for a key and route, built once (a few hundred routes at most are kept)."""
        plan = self._plans.get((key_id, route))
        if plan is None:
            if len(self._plans) >= 512:
                self._plans.clear()
            plan = self._plans[(key_id, route)] = Plan(self, key_id, route)
        return plan

    def demand(self, rid: str, ttl_s: int, key_id: str, route: str, tokens: int, cost_nano: int) -> Demand:
        """The request's checks: counters named by rule and by the dimensions each is kept per."""
        return self.plan(key_id, route).demand(rid, ttl_s, tokens, cost_nano)

    def alerts(self, index: int) -> list[tuple[str, int]]:
        """Budget ``index``'s alert thresholds in nano-dollars (an alert-only budget also at 100 %)."""
        b = self.budgets[index]
        percents = set(b.alert_percents) | ({100} if not b.block else set())
        return [(f"{b.ident}@{p}", b.limit_nano * p // 100) for p in sorted(percents)]


class Plan:
    """One ``Rules`` for one key and route, every counter named and every check built once: a request
    only brings its id, tokens and cost (the request path's share of the work is one ``Demand``)."""

    __slots__ = ("buckets", "headers", "settle_buckets", "settle_spends", "slot_keys", "slots", "spends")

    def __init__(self, rules: Rules, key_id: str, route: str) -> None:
        values = {"key": key_id, "team": rules.team, "route": route}
        self.buckets = [Bucket(_counter(r.ident, r.kind, r.per, values), r.limit, WINDOW_S[r.kind], r.kind != "rpm")
                        for r in rules.rates]
        self.slots = [Slot(_counter(r.ident, "conc", r.per, values), r.limit) for r in rules.slots]
        self.spends = [Spend(f"{b.subject}={values[b.subject]}", b.period, b.limit_nano if b.block else -1)
                       for b in rules.budgets]
        self.settle_buckets = [BucketRef(b.key, b.limit, b.window_s) for b in self.buckets if b.tokens]
        self.slot_keys = [s.key for s in self.slots]
        self.settle_spends = [SpendRef(s.key, rules.alerts(j)) for j, s in enumerate(self.spends)]
        # OpenAI's x-ratelimit-* headers, per kind that applies: the first bucket of the kind, its ready
        # limit header, the remaining/reset names, and the other buckets of the kind (the tightest wins)
        self.headers: list[tuple[int, tuple[bytes, bytes], tuple[bytes, bytes], list[tuple[int, tuple[bytes, bytes]]]]]
        self.headers = []
        for kind, suffix in (("rpm", b"requests"), ("tpm", b"tokens")):
            found = [(j, (b"x-ratelimit-limit-" + suffix, b"%d" % r.limit))
                     for j, r in enumerate(rules.rates) if r.kind == kind]
            if found:
                names = (b"x-ratelimit-remaining-" + suffix, b"x-ratelimit-reset-" + suffix)
                self.headers.append((found[0][0], found[0][1], names, found[1:]))

    def demand(self, rid: str, ttl_s: int, tokens: int, cost_nano: int) -> Demand:
        return Demand(rid, ttl_s, tokens, cost_nano, self.buckets, self.slots, self.spends)

    def settlement(self, demand: Demand, periods: list[str], used_tokens: int, cost_nano: int) -> Settlement:
        """Back to what was used: tokens buckets corrected, slots released, spend reservations swapped
        for the metered cost in the periods the reservation named (none: its answer never came, so
        there is no spend to settle)."""
        return Settlement(demand.id, used_tokens - demand.tokens, self.settle_buckets, self.slot_keys, demand.cost,
                          cost_nano, self.settle_spends if periods else [], periods)


def _counter(ident: str, kind: str, per: tuple[Dim, ...], values: dict[str, str]) -> str:
    # the route (any text) comes last: no other part can be mistaken for it
    return "|".join([ident, kind, *(f"{d[0]}={values[d]}" for d in per)])


def _rates(source: str, ident: str, limits: Limits | None, per: tuple[Dim, ...],
           rates: list[RateRule], slots: list[ConcurrencyRule], caps: list[tuple[int, str]]) -> None:
    if limits is None:
        return
    for field, kind in _RATE_FIELDS:
        value = getattr(limits, field)
        if value is not None:
            rates.append(RateRule(source, ident, kind, value, per))
    if limits.max_concurrent_requests is not None:
        slots.append(ConcurrencyRule(source, ident, limits.max_concurrent_requests, per))
    if limits.max_tokens_per_request is not None:
        caps.append((limits.max_tokens_per_request, source))


def compile_rules(
    team: str,
    policies: Iterable[tuple[str, str, PolicyDocument]],
    key: Any = None,
    team_spec: Any = None,
    *,
    policy_per: tuple[Dim, ...] = ("key",),
    key_per: tuple[Dim, ...] = ("key",),
    team_per: tuple[Dim, ...] = ("team",),
    policy_budget_per: Literal["key", "team"] = "team",
) -> Rules:
    """The rules for a key of ``team`` (``ANONYMOUS`` without one): the policies that apply to it,
    given as ``(id, name, document)`` already filtered by scope, and the own settings of ``key`` and
    ``team_spec`` (anything with ``limits``, ``budget_usd``, ``budget_period``; None: none)."""
    rates: list[RateRule] = []
    slots: list[ConcurrencyRule] = []
    budgets: list[BudgetRule] = []
    models: list[ModelRule] = []
    caps: list[tuple[int, str]] = []
    owners: tuple[tuple[Literal["key", "team"], Any, tuple[Dim, ...]], ...] = (
        ("key", key, key_per), ("team", team_spec, team_per))
    for subject, own, per in owners:
        if own is None:
            continue
        _rates(subject, subject[0], own.limits, per, rates, slots, caps)
        if own.budget_usd is not None and own.budget_period is not None:
            budgets.append(BudgetRule(subject, subject[0], subject, to_nano(own.budget_usd), own.budget_period,
                                      True, (80,)))
    for pid, name, doc in policies:
        source = f"policy {name}"
        _rates(source, f"p:{pid}", doc.limits, policy_per, rates, slots, caps)
        if doc.budget is not None:
            b = doc.budget
            budgets.append(BudgetRule(source, f"p:{pid}", policy_budget_per, to_nano(b.limit_usd), b.period,
                                      b.on_exceed == "block", tuple(b.alert_at_percent)))
        if doc.models is not None:
            allow = _globs(doc.models.allow)
            assert allow is not None  # the document requires one pattern at least
            models.append(ModelRule(source, allow, _globs(doc.models.deny)))
    return Rules(team, rates, slots, budgets, models, min(caps) if caps else None)


# -- what a request asks for -------------------------------------------------------------------

def requested_max_tokens(body: dict[str, Any]) -> int | None:
    """The output cap the request sets (chat, completions, responses spell it differently)."""
    for field in _MAX_TOKEN_FIELDS:
        value = body.get(field)
        if value is not None and type(value) is int and value >= 0:  # a bool is not a count
            return value
    return None


def cap_max_tokens(body: dict[str, Any], endpoint: str, limit: int) -> None:
    """Lower (or set) the request's output cap to ``limit``, in the field it used or its endpoint's own."""
    for field in _MAX_TOKEN_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            if value > limit:
                body[field] = limit
            return
    body["max_output_tokens" if endpoint == "responses" else "max_tokens"] = limit


def _text_chars(value: Any) -> int:
    """Characters of text in a prompt shape: a string, a list of strings, token ids, messages, parts."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return 4  # a token id
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        chars = 16  # a message's role and framing
        for field in ("content", "text", "input"):
            inner = value.get(field)
            if inner is not None:
                chars += _text_chars(inner)
        return chars
    return 0


def estimate_prompt_tokens(body: dict[str, Any], endpoint: str) -> int:
    """About 4 characters a token: enough to reserve for, settled to the metered count later."""
    if endpoint == "chat":
        messages = body.get("messages")
        if type(messages) is list:  # the common shape first: text messages, no recursion
            chars = 0
            for m in messages:
                content = m.get("content") if type(m) is dict else None
                chars += len(content) + 16 if type(content) is str else _text_chars(m)
            return chars // 4 + 1
        field = "messages"
    else:
        field = "prompt" if endpoint == "completions" else "input"
    return _text_chars(body.get(field)) // 4 + 1


def format_reset(seconds: float) -> str:
    """A duration as OpenAI's ``x-ratelimit-reset-*`` headers write it: ``20ms``, ``1.5s``, ``6m0s``.

    Integer arithmetic only: float formatting costs more than the rest of a header."""
    ms = int(seconds * 1000 + 0.5)
    if ms <= 0:
        return "0s" if seconds <= 0 else "1ms"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        whole, frac = divmod(ms, 1000)
        return f"{whole}s" if not frac else f"{whole}.{frac:03d}".rstrip("0") + "s"
    minutes, rest = divmod(-(-ms // 1000), 60)
    if minutes < 60:
        return f"{minutes}m{rest}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s"
