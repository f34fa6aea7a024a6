"""The ``limits`` plug-in: model access, rate limits, concurrency and budgets on every request.

What applies (``policies.limits.compile_rules``): the published policies whose scope names the
key's team (an empty scope: everyone), and the key's and team's own settings from the keys
snapshot, found by ``ctx.principal`` (set by the auth plug-in; anonymous requests meet only the
empty-scope policies). Everything is indexed once per snapshot object and cached per principal.

``on_route`` (per target tried): models first (403 ``model_not_allowed``), then, once per request,
``maxTokensPerRequest`` (cap, or 400) and one reservation of every rate, slot and budget check
(``policies.limits.Demand``): one call to the in-process backend, or one Redis round trip. Refused:
429 with ``Retry-After``, the ``x-ratelimit-*`` headers and OpenAI's error body (a budget: 429 or
402, type ``insufficient_quota``). Passed: the ``x-ratelimit-*`` headers go out with the answer.
``on_finish`` (every request, off the request path) settles the reservation to the metered tokens
and cost: refunds, slots released, spend added, budget alerts fired once per period.

Backends: ``memory`` (one process) or ``redis`` (shared by replicas and workers; see
``adapters.ratelimit.redis``); ``auto`` picks Redis when a URL is set. With Redis unreachable,
``on_backend_error: closed`` answers 503 and ``open`` applies the same limits per replica; either
way it is logged, counted and shown in ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy import insert

from adapters.adminapi.tables import audit_log
from adapters.errors import InvalidRequest, PermissionDenied
from adapters.gateway_plugins import PluginHost, RequestContext, UsageRecord
from adapters.ratelimit import BackendUnavailable, RedisRateLimiter
from adapters.ratelimit.resp import parse_redis_url
from adapters.ratelimit.seed import spend_so_far
from adapters.snapshots import KeysSnapshot, PoliciesSnapshot
from adapters.store import StoreError, utcnow
from gateway.metrics import multiprocess_dir
from gateway.policy.audit import Denial, DenialAudit
from gateway.policy.limits_deny import LimiterUnavailable, denial, rate_headers
from gateway.policy.limits_state import LimitsShared, SharedRedis, limits_shared
from gateway.policy.metrics import policy_metrics
from policies.limits import (
    ANONYMOUS,
    Demand,
    Dim,
    Fired,
    Plan,
    Rules,
    Settlement,
    Verdict,
    cap_max_tokens,
    compile_rules,
    estimate_prompt_tokens,
    requested_max_tokens,
    to_nano,
)

__all__ = ["LimitsPlugin", "LimitsSettings"]

log = logging.getLogger("llmops.limits")

_Dims = Annotated[list[Dim], msgspec.Meta(min_length=1, max_length=3)]
_RULES_CACHE_MAX = 100_000  # principals whose rules are kept per snapshot


class LimitsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``plugins: [{name: limits, settings: {...}}]``; every field is optional (docs/configuration.md)."""

    backend: Literal["auto", "memory", "redis"] = "auto"
    redis_url: str | None = None
    redis_url_env: str | None = None  # the URL (it may hold a password) from this environment variable
    on_backend_error: Literal["closed", "open"] = "closed"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.25
    probe_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    reservation_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 900
    key_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "llmops:rl"
    policy_limits_per: _Dims = msgspec.field(default_factory=lambda: ["key"])
    key_limits_per: _Dims = msgspec.field(default_factory=lambda: ["key"])
    team_limits_per: _Dims = msgspec.field(default_factory=lambda: ["team"])
    policy_budget_per: Literal["key", "team"] = "team"
    default_max_tokens: Annotated[int, msgspec.Meta(ge=0, le=10**8)] = 1024
    max_tokens_over_limit: Literal["cap", "reject"] = "cap"
    budget_status: Literal[429, 402] = 429
    seed_spend: bool = True
    seed_wait_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 5.0
    workers_without_redis: Literal["warn", "refuse"] = "warn"
    redis_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256


class _Index:
    """One keys snapshot and one policies snapshot, indexed; rules cached per (key, team)."""

    __slots__ = ("_global", "_keys", "_rules", "_scoped", "_settings", "_teams_by_id", "_teams_by_name",
                 "idle", "source")

    def __init__(self, keys: KeysSnapshot | None, policies: PoliciesSnapshot | None, s: LimitsSettings) -> None:
        self.source = (keys, policies)
        self._settings = s
        self._keys = {k.id: k for k in keys.keys} if keys is not None else {}
        teams = keys.teams if keys is not None else []
        self._teams_by_id = {t.id: t for t in teams}
        self._teams_by_name = {t.name: t for t in teams}
        self._global: list[tuple[str, str, Any]] = []
        self._scoped: dict[str, list[tuple[str, str, Any]]] = {}
        for p in policies.policies if policies is not None else []:
            doc = p.document
            if doc.models is None and doc.limits is None and doc.budget is None:
                continue  # guardrails only: not ours
            entry = (p.id, p.name, doc)
            if not doc.scope.teams:
                self._global.append(entry)
            for team in doc.scope.teams:
                self._scoped.setdefault(team, []).append(entry)
        own = any(_has_own(x) for x in (*self._keys.values(), *teams))
        self.idle = not (self._global or self._scoped or own)
        self._rules: dict[tuple[str, str | None], Rules] = {}

    def rules(self, key_id: str, team: str | None) -> Rules:
        found = self._rules.get((key_id, team))
        if found is None:
            if len(self._rules) >= _RULES_CACHE_MAX:
                self._rules.clear()
            found = self._rules[(key_id, team)] = self._compile(key_id, team)
        return found

    def _compile(self, key_id: str, team: str | None) -> Rules:
        key = self._keys.get(key_id)
        spec = None
        if team is not None:
            spec = self._teams_by_name.get(team) or self._teams_by_id.get(team)
        if spec is None and key is not None:
            spec = self._teams_by_id.get(key.team_id)
        name = spec.name if spec is not None else (team or ANONYMOUS)
        policies = [*self._global, *self._scoped.get(name, ())]
        s = self._settings
        return compile_rules(name, policies, key, spec, policy_per=tuple(s.policy_limits_per),
                             key_per=tuple(s.key_limits_per), team_per=tuple(s.team_limits_per),
                             policy_budget_per=s.policy_budget_per)


def _has_own(spec: Any) -> bool:
    """Own limits or budget (a key's or team's ``allowedModels`` are the auth plug-in's to check)."""
    return spec.limits is not None or spec.budget_usd is not None


class _Live(msgspec.Struct, gc=False):  # no cycle runs through it: nothing refers back to it
    """A request's reservation, until its ``on_finish``; keyed by ``id(ctx)``, and holding ``ctx`` so that
    no other context can take that id while the entry lives."""

    ctx: RequestContext
    plan: Plan
    demand: Demand
    verdict: Verdict | None  # None: sent, answer unknown (cancelled)
    local: bool  # reserved in the in-process limiter (the backend, or the fallback)
    tokens: int
    at: float


_UNSEEN = object()


class LimitsPlugin:
    Settings = LimitsSettings
    failure = "closed"

    def __init__(self, settings: LimitsSettings | None = None, *, host: PluginHost | None = None) -> None:
        s = settings or LimitsSettings()
        self.settings = s
        self._host = host
        self._shared: LimitsShared = limits_shared(host)
        self._memory = self._shared.memory
        self._metrics = policy_metrics(host.registry if host is not None else None)
        self._denials = DenialAudit(host.store if host is not None else None, action="policy.denied")
        self._writes: set[asyncio.Task[None]] = set()
        self._url = _redis_url(s)
        if s.backend == "redis" and self._url is None:
            raise ValueError("backend redis needs redis_url or redis_url_env")
        if self._url is not None:
            parse_redis_url(self._url)  # a malformed URL fails the load, not the first request
        self._use_redis = s.backend != "memory" and self._url is not None
        if not self._use_redis and multiprocess_dir() is not None:
            if s.workers_without_redis == "refuse":
                raise ValueError("serve --workers > 1 keeps one set of counters per worker: set redis_url "
                                 "(or workers_without_redis: warn)")
            if not self._shared.warned_workers:
                self._shared.warned_workers = True
                log.warning("limits: in-process backend under --workers: each worker keeps its own counters, so "
                            "every limit and budget is enforced per worker; set redis_url to share them")
        self._redis_key = (self._url, s.key_prefix, s.timeout_s, s.redis_batch, s.probe_interval_s)
        self._redis: SharedRedis | None = None
        self._index = _Index(None, None, s)
        self._live: dict[int, _Live] = {}
        self._ttl_s = s.reservation_ttl_s
        self._book: Any = None
        self._nano_prices: dict[tuple[str, str], Any] = {}  # (provider, model) -> nano-dollars per token
        self._node = secrets.token_hex(4)
        self._seq = 0
        self._default_max = s.default_max_tokens
        self.on_route = self._route_shared if self._use_redis else self._route_local

    # -- hooks ---------------------------------------------------------------------------------

    def _rules(self, ctx: RequestContext) -> Rules | None:
        control = ctx.control
        if control is None:
            return None
        index = self._index
        if control.keys is not index.source[0] or control.policies is not index.source[1]:
            index = self._index = _Index(control.keys, control.policies, self.settings)
        if index.idle:
            return None
        p = ctx.principal
        rules = index.rules(p.key_id, p.team) if p is not None else index.rules(ANONYMOUS, None)
        return None if rules.empty else rules

    def _prepare(self, ctx: RequestContext, rules: Rules) -> tuple[Plan, Demand, int] | None:
        """Models, the token cap, and the request's demand (None: nothing to reserve, or reserved already)."""
        route = ctx.route_name or ctx.model
        if rules.models:
            self._check_models(ctx, rules, route)
        if id(ctx) in self._live:
            return None  # a fallback target: its request holds its reservation already
        body = ctx.body
        endpoint = ctx.endpoint
        asked = requested_max_tokens(body)
        cap = rules.max_tokens
        if cap is not None and endpoint != "embeddings" and (asked is None or asked > cap):
            self._cap(ctx, rules, asked)
            asked = cap
        if not rules.reserves:
            return None
        tokens = cost = 0
        if rules.needs_tokens or rules.needs_cost:
            prompt = estimate_prompt_tokens(body, endpoint)
            output = 0 if endpoint == "embeddings" else (self._default_max if asked is None else asked)
            tokens = prompt + output
            if rules.needs_cost:
                cost = self._worst_cost(ctx, prompt, output)
        p = ctx.principal
        plan = rules.plan(ANONYMOUS if p is None else p.key_id, route)
        self._seq += 1
        return plan, plan.demand(f"{self._node}{self._seq}", self._ttl_s, tokens, cost), tokens

    def _check_models(self, ctx: RequestContext, rules: Rules, route: str) -> None:
        source = rules.model_denied(route, ctx.provider, ctx.upstream_model)
        if source is not None:
            self._deny(ctx, "model_not_allowed", 403, f"model {ctx.upstream_model or route} not allowed ({source})")
            raise PermissionDenied(f"The model `{ctx.upstream_model or route}` (route `{route}`) is not allowed "
                                   f"for this key ({source})", param="model", code="model_not_allowed")

    def _cap(self, ctx: RequestContext, rules: Rules, asked: int | None) -> None:
        """``maxTokensPerRequest``: lower the request's cap to it, or refuse (``max_tokens_over_limit``)."""
        cap = rules.max_tokens
        assert cap is not None
        if asked is not None and self.settings.max_tokens_over_limit == "reject":
            self._deny(ctx, "max_tokens", 400, f"max_tokens over {cap} ({rules.max_tokens_source})")
            raise InvalidRequest(f"max_tokens {asked} is over the limit of {cap} tokens per request "
                                 f"({rules.max_tokens_source})", param="max_tokens", code="max_tokens_exceeded")
        cap_max_tokens(ctx.body, ctx.endpoint, cap)

    def _worst_cost(self, ctx: RequestContext, prompt: int, output: int) -> int:
        """The request's most expensive outcome in nano-dollars (an estimate: floats, rounded up)."""
        book = self._book
        if book is None:  # this generation's prices: a reload that changes them builds new plug-ins too
            book = self._book = self._host.price_book() if self._host is not None else None
            if book is None:
                return 0
        if ctx.provider is None or ctx.upstream_model is None:
            return 0
        key = (ctx.provider, ctx.upstream_model)
        prices = self._nano_prices.get(key, _UNSEEN)
        if prices is _UNSEEN:
            price = book.resolve(*key).price
            prices = None if price is None else (float(to_nano(price.input)), float(to_nano(price.output)))
            if len(self._nano_prices) >= 4096:
                self._nano_prices.clear()
            self._nano_prices[key] = prices
        if prices is None:
            return 0  # unpriced: checked against the spend so far only
        return math.ceil(prompt * prices[0] + output * prices[1])

    def _route_local(self, ctx: RequestContext) -> None:
        rules = self._rules(ctx)
        if rules is None:
            return
        prepared = self._prepare(ctx, rules)
        if prepared is not None:
            plan, demand, tokens = prepared
            self._decide(ctx, rules, plan, demand, tokens, self._memory.reserve_now(demand), local=True)

    async def _route_shared(self, ctx: RequestContext) -> None:
        rules = self._rules(ctx)
        if rules is None:
            return
        prepared = self._prepare(ctx, rules)
        if prepared is None:
            return
        plan, demand, tokens = prepared
        redis = self._redis
        assert redis is not None, "limits plug-in used outside its lifespan"
        key = id(ctx)
        self._live[key] = _Live(ctx, plan, demand, None, False, tokens, time.monotonic())  # settled even if cancelled
        try:
            verdict = await redis.limiter.submit(demand)
        except BackendUnavailable as exc:
            del self._live[key]
            if self.settings.on_backend_error == "closed":
                self._metrics.fallbacks.labels("closed").inc()
                self._deny(ctx, "limiter_unavailable", 503, "rate-limit backend unavailable (fails closed)")
                raise LimiterUnavailable(str(exc), retry_after_s=self.settings.probe_interval_s * 2) from None
            self._metrics.fallbacks.labels("open").inc()
            self._decide(ctx, rules, plan, demand, tokens, self._memory.reserve_now(demand), local=True)
            return
        self._decide(ctx, rules, plan, demand, tokens, verdict, local=False)

    def _decide(self, ctx: RequestContext, rules: Rules, plan: Plan, demand: Demand, tokens: int, verdict: Verdict,
                *, local: bool) -> None:
        if not verdict.ok:
            self._live.pop(id(ctx), None)
            exc = denial(rules, plan, demand, verdict, self.settings.budget_status)
            self._deny(ctx, _REASONS[verdict.kind](rules, verdict), exc.http_status, _what(rules, verdict))
            raise exc
        self._live[id(ctx)] = _Live(ctx, plan, demand, verdict, local, tokens, time.monotonic())
        headers = rate_headers(plan, verdict)
        if headers:  # ctx.add_response_header's list, filled at once with pre-encoded names
            if ctx.response_headers is None:
                ctx.response_headers = headers
            else:
                ctx.response_headers.extend(headers)

    def _deny(self, ctx: RequestContext, reason: str, status: int, detail: str) -> None:
        """Count, annotate (the usage record says why) and audit (queued; aggregated per key and detail)."""
        self._metrics.deny(reason)
        ctx.annotate("limits", denied=reason)
        p = ctx.principal
        self._denials.record(Denial(at=time.time(), status=status, reason=reason, detail=detail,
                                    request_id=ctx.request_id, resource=ctx.route_name or ctx.model,
                                    endpoint=ctx.endpoint, key_id=p.key_id if p is not None else None,
                                    actor_name=p.key_id if p is not None else "anonymous"))

    def on_finish(self, ctx: RequestContext, usage: UsageRecord) -> None:
        live = self._live.pop(id(ctx), None)
        if live is None:
            return
        used = 0 if usage.usage_source == "none" else usage.prompt_tokens + usage.completion_tokens
        cost = usage.cost_usd
        settlement = live.plan.settlement(live.demand, live.verdict.periods if live.verdict is not None else [],
                                          used, 0 if cost is None else math.ceil(cost.scaleb(9)))
        if live.local:
            crossed = self._memory.settle_now(settlement)
            if crossed:
                self._alert(settlement, crossed)
            if self._redis is not None and (replay := _spend_only(settlement)) is not None:
                self._redis.submit(replay)  # decided per replica while Redis was down: the spend is global
        elif self._redis is not None:
            self._redis.submit(settlement)

    def readiness(self) -> dict[str, Any] | None:
        """For ``/readyz``: the Redis backend's state (never its URL), or the in-process backend's warning
        under ``--workers``; nothing for the in-process backend of one process (it cannot fail)."""
        if self._redis is not None:
            out = self._redis.limiter.status()
            out["on_backend_error"] = self.settings.on_backend_error
            out["settlements_queued"] = self._redis.queued()
            return out
        if self._use_redis or multiprocess_dir() is None:  # Redis not started yet; or in-process, one process
            return None
        out = self._memory.status()
        out["warning"] = "per-worker counters under --workers: limits and budgets are not shared"
        return out

    # -- lifespan ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _life(self) -> AsyncIterator[None]:
        shared = self._shared
        if self._use_redis:
            assert self._url is not None
            self._redis = shared.redis_for(self._redis_key, self._new_redis)
            self._redis.acquire()
        elif self.settings.seed_spend and not shared.seeded and self._host is not None and self._host.store:
            shared.seeded = True
            shared.seed_task = asyncio.ensure_future(self._seed(self._host.store))
            with contextlib.suppress(TimeoutError):  # normally done before the first request; else it lands later
                async with asyncio.timeout(self.settings.seed_wait_s):
                    await asyncio.shield(shared.seed_task)
        housekeeping = asyncio.create_task(self._housekeeping(), name="llmops-limits-housekeeping")
        try:
            async with self._denials.running():
                yield
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            if self._writes:
                await asyncio.gather(*self._writes, return_exceptions=True)
            if self._redis is not None:
                await shared.release(self._redis_key)

    def lifespan(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._life()

    async def _housekeeping(self, every_s: float = 1.0) -> None:
        """Once a second, off the request path: the reservations gauge (rather than two metric updates
        per request), and forgetting reservations whose ``on_finish`` never came (their counters
        expire by themselves after ``reservation_ttl_s``; this only frees the memory)."""
        gauge = self._metrics.reservations
        while True:
            await asyncio.sleep(every_s)
            live = self._live
            gauge.set(len(live))
            if live:
                oldest = time.monotonic() - self._ttl_s
                for key in [k for k, v in live.items() if v.at < oldest]:
                    del live[key]

    def _new_redis(self) -> SharedRedis:
        assert self._url is not None
        s = self.settings

        def count(kind: str) -> None:
            self._metrics.backend_errors.labels("redis", kind).inc()

        limiter = RedisRateLimiter(self._url, prefix=s.key_prefix, timeout_s=s.timeout_s, max_batch=s.redis_batch,
                                   probe_interval_s=s.probe_interval_s, on_error=count)
        return SharedRedis(limiter, self._metrics, self._alert, retry_s=s.probe_interval_s)

    async def _seed(self, store: Any) -> None:
        try:
            rows = await spend_so_far(store, time.time())
        except Exception as exc:  # the database may be down at start-up: budgets then start from zero
            log.warning("limits: could not read the spend so far from the usage rollups (%s); budgets count "
                        "from zero in this process", type(exc).__name__)
            return
        for key, period_id, nano in rows:
            self._memory.seed_spend(key, period_id, nano)
        log.info("limits: spend so far seeded for %d key/team periods", len(rows))

    # -- off the request path ------------------------------------------------------------------

    def _alert(self, settlement: Settlement, crossed: Sequence[Fired]) -> None:
        by_alert = {a: (spend.key, period, threshold)
                    for spend, period in zip(settlement.spends, settlement.periods, strict=False)
                    for a, threshold in spend.alerts}
        for fired in crossed:
            key, period, threshold = by_alert[fired.alert]
            ident, _, percent = fired.alert.rpartition("@")
            limit = threshold * 100 // max(1, int(percent))
            message = (f"budget alert: {key} spent ${_usd(fired.spent)} in period {period}, "
                       f"{percent}% of the ${_usd(limit)} budget ({_owner(ident)})")
            log.warning(message)
            self._metrics.budget_alerts.labels(key.partition("=")[0], percent).inc()
            task = asyncio.ensure_future(_audit_alert(
                self._host.store if self._host is not None else None, key, message,
                {"spentUsd": _usd(fired.spent), "limitUsd": _usd(limit), "percent": int(percent),
                 "period": period, "budget": ident}))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)


REDIS_URL_ENV = "LLMOPS_REDIS_URL"
"""Where the Helm chart puts ``redis.url``: used when the settings name no Redis of their own."""


def _redis_url(s: LimitsSettings) -> str | None:
    if s.redis_url_env:
        url = os.environ.get(s.redis_url_env)
        if not url:
            raise ValueError(f"redis_url_env: environment variable {s.redis_url_env} is not set")
        return url
    return s.redis_url or os.environ.get(REDIS_URL_ENV) or None


def _spend_only(settlement: Settlement) -> Settlement | None:
    """What Redis must still learn of a request decided per replica: its spend (no reservation there)."""
    if not settlement.actual or not settlement.spends:
        return None
    return Settlement(settlement.id, 0, [], [], 0, settlement.actual, settlement.spends, settlement.periods)


def _usd(nano: int) -> str:
    return f"{nano / 1e9:.2f}" if nano >= 10**7 else f"{nano / 1e9:.6f}"


def _owner(ident: str) -> str:
    return {"k": "the key's own", "t": "the team's own"}.get(ident, f"policy {ident.removeprefix('p:')}")


async def _audit_alert(store: Any, subject: str, message: str, after: dict[str, Any]) -> None:
    """A budget alert in the audit log (actor: the gateway), in its own transaction; never raises."""
    if store is None:
        return
    try:
        async with store.begin() as conn:
            await conn.execute(insert(audit_log).values(
                at=utcnow(), actor_key_id=None, actor_name="gateway", actor_role=None, action="gateway.budget.alert",
                resource_type="budget", resource_id=subject[:200], outcome="success", status_code=None,
                request_id=None, before=None, after=after, detail=message[:500]))
    except StoreError as err:
        log.warning("could not write the audit entry of a budget alert: %s", err)


def _what(rules: Rules, v: Verdict) -> str:
    """A denial's audit detail: stable for one limit, so a flood of them aggregates into one window."""
    if v.kind == "bucket":
        rate = rules.rates[v.index]
        return f"{rate.kind} limit {rate.limit} ({rate.source})"
    if v.kind == "slot":
        slot = rules.slots[v.index]
        return f"concurrency limit {slot.limit} ({slot.source})"
    budget = rules.budgets[v.index]
    return f"{budget.period} budget of ${_usd(budget.limit_nano)} for {budget.subject} ({budget.source})"


_REASONS = {
    "bucket": lambda rules, v: "rate_limit_requests" if rules.rates[v.index].kind == "rpm" else "rate_limit_tokens",
    "slot": lambda rules, v: "concurrency",
    "spend": lambda rules, v: "budget",
}
