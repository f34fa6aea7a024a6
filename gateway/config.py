"""Typed gateway configuration: one YAML file decoded into frozen msgspec Structs.

Only this module reads the environment: `${VAR}` and `${VAR:-default}` inside
string values are resolved once, at load time. Cross-references (routes naming
providers, weights, URLs) are checked here too, so a bad file fails at boot with
the path of the offending key, never on a request.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import msgspec
import yaml

from adapters.adminapi.settings import ControlCfg
from policies.prompts.documents import PromptsCfg

__all__ = [
    "BreakerCfg",
    "ConfigError",
    "GatewayCfg",
    "GpuHourPriceCfg",
    "MeteringCfg",
    "ModelPriceCfg",
    "PluginCfg",
    "PricingCfg",
    "ProviderCfg",
    "RouteCfg",
    "ServerCfg",
    "TargetCfg",
    "TimeoutsCfg",
    "TracingCfg",
    "check_config",
    "decode_config",
    "load_config",
]

BUILTIN_MOCK = "builtin:mock"
MAX_QUEUE_TIMEOUT_S = 600.0  # a route's queue_timeout_s: beyond ten minutes a client has long given up


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message names the key."""


class _Cfg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class TimeoutsCfg(_Cfg, frozen=True):  # frozen repeated: type checkers do not inherit it
    connect_s: float = 5.0
    first_byte_s: float = 120.0
    total_s: float = 600.0


class BreakerCfg(_Cfg, frozen=True):
    failure_threshold: int = 5
    cooldown_s: float = 30.0


class PrefixAffinityCfg(_Cfg, frozen=True):
    """`balance: prefix_affinity` (adapters/upstream/prefix_affinity.py): how prompts are cut into blocks, how many
    recently routed blocks are remembered per replica, the load bound, and what a session is keyed on."""

    block_chars: int = 512  # characters of rendered messages per hashed block
    max_blocks: int = 256  # blocks hashed at most per request (the leading 128 KiB by default)
    index_blocks: int = 4096  # recently routed blocks remembered per replica (LRU), about its KV cache's size
    epsilon: float = 0.25  # bounded load: a replica over (1 + epsilon) x the mean load is passed over
    affinity: Literal["prompt", "user", "header"] = "prompt"  # what keys a request: its prompt, `user`, a header
    header: str = "x-session-id"  # the header that keys a session (affinity: header)

    def __post_init__(self) -> None:
        if not 16 <= self.block_chars <= 65536:
            raise ValueError("prefix_affinity.block_chars must be between 16 and 65536")
        if not 1 <= self.max_blocks <= 4096:
            raise ValueError("prefix_affinity.max_blocks must be between 1 and 4096")
        if not 16 <= self.index_blocks <= 10_000_000:
            raise ValueError("prefix_affinity.index_blocks must be between 16 and 10000000")
        if not 0.0 < self.epsilon <= 10.0:
            raise ValueError("prefix_affinity.epsilon must be above 0 and at most 10")
        if not self.header or self.header != self.header.strip():
            raise ValueError("prefix_affinity.header must be a header name")


class ProviderCfg(_Cfg, frozen=True):
    name: str
    kind: Literal["openai", "ollama", "litellm"]
    base_url: str | None = None
    base_urls: list[str] = []
    api_key: str | None = None
    headers: dict[str, str] = {}
    # least_inflight: fewest of our requests in flight; vllm_queue: plus each replica's scraped
    # vllm:num_requests_waiting; random: a uniform draw; prefix_affinity: the replica holding the prompt's
    # longest recently routed prefix, under a load bound (see prefix_affinity).
    balance: Literal["least_inflight", "vllm_queue", "random", "prefix_affinity"] = "least_inflight"
    prefix_affinity: PrefixAffinityCfg = PrefixAffinityCfg()
    metrics_interval_s: float = 2.0
    max_connections: int = 1000
    stream_usage: bool = True
    timeouts: TimeoutsCfg | None = None
    breaker: BreakerCfg = BreakerCfg()
    litellm_params: dict[str, Any] = {}

    def urls(self) -> list[str]:
        return [u.rstrip("/") for u in ([self.base_url] if self.base_url else []) + list(self.base_urls)]


class TargetCfg(_Cfg, frozen=True):
    provider: str
    model: str
    weight: float = 1.0


class RouteCfg(_Cfg, frozen=True):
    name: str
    targets: list[TargetCfg]
    fallbacks: list[TargetCfg] = []
    retries: int = 1
    retry_backoff_s: float = 0.05
    timeouts: TimeoutsCfg | None = None
    template: str | None = None  # a prompt template applied to every request: "name" or "name@version"
    template_variables: dict[str, Any] = {}  # its variables' values for this route (over the template's defaults)
    # A serving endpoint that scales from zero: how long a request waits (s) while every target refuses
    # connections (no ready replica); 0 fails at once. At most 600.
    queue_timeout_s: float = 0.0


class ServerCfg(_Cfg, frozen=True):
    host: str = "127.0.0.1"
    port: int = 4000
    max_body_bytes: int = 4 * 1024 * 1024
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Off by default: `<provider>/<model>` names let any caller reach any model with the
    # operator's provider keys, bypassing the routes the operator chose to expose.
    allow_direct: bool = False
    # Read deadlines and caps of the HTTP server (both APIs), see gateway/server.py.
    header_timeout_s: float = 10.0  # request line + headers complete within this of connecting / first byte
    body_timeout_s: float = 30.0  # body complete within this after the head ...
    body_min_rate_bytes_s: int = 16384  # ... plus 1 s per this many bytes received (large uploads)
    keep_alive_s: float = 5.0  # idle time allowed between requests on one connection
    max_concurrent_requests: int = 4096  # in flight across the process; beyond it 503
    max_connections: int = 10000  # open connections; beyond it new ones are closed
    # The gateway re-reads the control plane's snapshots on every change-feed notice and at least
    # this often (proving the database reachable; catching a notice lost while the feed reconnected).
    control_refresh_s: float = 5.0


class PluginCfg(_Cfg, frozen=True):
    """One gateway plug-in, by its `llmops.gateway` entry-point name; `settings` go to its own type."""

    name: str
    enabled: bool = True
    settings: dict[str, Any] = {}


class ModelPriceCfg(_Cfg, frozen=True):
    """A price override for one model (on one provider, or on any when `provider` is omitted), in
    dollars per million tokens. Decimal strings keep them exact (`"0.15"`); omitted parts fall back
    to litellm's map, and a cached-read or cache-write price omitted there too costs as input."""

    model: str
    provider: str | None = None
    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cached_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None


class GpuHourPriceCfg(_Cfg, frozen=True):
    """A self-hosted endpoint (a provider) priced by the GPU-hour: `usd_per_gpu_hour` times `gpus` each
    hour, spread over the tokens it served that hour (reports allocate it; records keep cost null)."""

    provider: str
    usd_per_gpu_hour: Decimal
    gpus: int = 1


class PricingCfg(_Cfg, frozen=True):
    """Where request costs come from: overrides here first, then litellm's bundled price map
    (read offline at start-up). A model priced by neither is recorded with cost null, never 0."""

    use_litellm_map: bool = True
    models: list[ModelPriceCfg] = []
    gpu_hours: list[GpuHourPriceCfg] = []


class MeteringCfg(_Cfg, frozen=True):
    """The durable usage pipeline: records go from a bounded buffer to the store in batches, and to
    an append-only spill file while the store is down or slow (replayed, never counted twice)."""

    enabled: bool = True  # write usage records to the store (when the control plane has one)
    flush_interval_s: float = 0.25
    batch_size: int = 500
    buffer_max_records: int = 50_000  # beyond it records go straight to the spill file
    spill_dir: str | None = None  # default: <control data dir>/usage-spill, or ./data/usage-spill
    spill_max_bytes: int = 1 << 30  # beyond it records are dropped, loudly (metric and log)
    write_timeout_s: float = 2.0  # a batch insert slower than this spills instead


class TracingCfg(_Cfg, frozen=True):
    """OpenTelemetry traces (GenAI semantic conventions), one span per request, over OTLP/HTTP.
    Off by default, and then nothing is imported or allocated per request."""

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = "llmops-gateway"
    headers: dict[str, str] = {}
    sample_ratio: float = 1.0


class ConsoleCfg(_Cfg, frozen=True):
    """The web console at /console (gateway/console): it needs the control plane (its store keeps sessions)."""

    enabled: bool = True
    session_ttl_s: float = 12 * 3600  # a session ends this long after sign-in ...
    session_idle_s: float = 2 * 3600  # ... or after this long unused
    secure_cookie: Literal["auto", "always", "never"] = "auto"  # auto: Secure when the request came over https


class GatewayCfg(_Cfg, frozen=True):
    server: ServerCfg = ServerCfg()
    providers: list[ProviderCfg] = []
    routes: list[RouteCfg] = []
    plugins: list[PluginCfg] = []  # run in this order
    control: ControlCfg = ControlCfg()
    pricing: PricingCfg = PricingCfg()
    metering: MeteringCfg = MeteringCfg()
    tracing: TracingCfg = TracingCfg()
    prompts: PromptsCfg = PromptsCfg()  # templates and experiments owned by this file (synced by the prompts module)
    console: ConsoleCfg = ConsoleCfg()


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set (use ${{{name}:-default}})")

        return _VAR.sub(sub, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}", env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    return node


def decode_config(raw: Any, env: dict[str, str] | None = None) -> GatewayCfg:
    """Turn an already-parsed YAML tree into a validated config."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("$: the config file must be a mapping at the top level")
    tree = _interpolate(raw, "$", dict(os.environ) if env is None else env)
    try:
        cfg = msgspec.convert(tree, GatewayCfg)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from None
    _check(cfg)
    if cfg.plugins:  # names and settings fail here, at load, like every other key
        from gateway.plugins import check_settings  # plugins.py imports this module

        check_settings(cfg.plugins)
    return cfg


def load_config(path: str | Path, env: dict[str, str] | None = None) -> GatewayCfg:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the position: PyYAML's message quotes the offending line, which may hold a secret.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return decode_config(raw, env)


def _check_url(url: str, where: str) -> None:
    """Messages name the key, never the value: URLs may carry secrets (issue: reload errors)."""
    if url == BUILTIN_MOCK:
        return
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018  # raises ValueError for a malformed port
    except ValueError:
        raise ConfigError(f"{where}: not a valid http(s) URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{where}: not an http(s) URL (expected http://host[:port]/path)")
    if parsed.username is not None or parsed.password is not None:
        # Shown by /readyz, metrics labels and logs otherwise; and aiohttp would turn it into a
        # Basic header that clashes with api_key. Send credentials with `api_key` or `headers`.
        raise ConfigError(f"{where}: must not contain credentials (user:password@); use api_key or headers")
    if any(c in url for c in "\r\n\t ") or not url.isprintable():
        raise ConfigError(f"{where}: must not contain whitespace or control characters")


def _check_header_value(value: str, where: str) -> None:
    """A CR, LF or other control character makes the HTTP client raise on every request,
    which the breaker would count against a healthy upstream: refuse it at load."""
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise ConfigError(f"{where}: must not contain control characters (CR, LF, ...)")


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name


def _check_headers(p: ProviderCfg, where: str) -> None:
    if p.api_key is not None:
        _check_header_value(p.api_key, f"{where}.api_key")
    for name, value in p.headers.items():
        if not _TOKEN.fullmatch(name):
            raise ConfigError(f"{where}.headers: a header name is not a valid HTTP field name")
        _check_header_value(value, f"{where}.headers.{name}")


def _check_timeouts(t: TimeoutsCfg | None, where: str) -> None:
    if t is None:
        return
    for field in ("connect_s", "first_byte_s", "total_s"):
        if getattr(t, field) <= 0:
            raise ConfigError(f"{where}.timeouts.{field}: must be > 0")


def check_config(cfg: GatewayCfg) -> None:
    """The cross-reference checks of ``decode_config`` on a config built in code (e.g. merged
    with the store's routes); raises ``ConfigError`` naming the path."""
    _check(cfg)


def _check(cfg: GatewayCfg) -> None:
    if cfg.server.max_body_bytes <= 0:
        raise ConfigError("$.server.max_body_bytes: must be > 0")
    for field in ("header_timeout_s", "body_timeout_s", "body_min_rate_bytes_s", "keep_alive_s",
                  "max_concurrent_requests", "max_connections", "control_refresh_s"):
        if getattr(cfg.server, field) <= 0:
            raise ConfigError(f"$.server.{field}: must be > 0")
    providers: dict[str, ProviderCfg] = {}
    for i, p in enumerate(cfg.providers):
        where = f"$.providers[{i}]"
        if not p.name or "/" in p.name:
            raise ConfigError(f"{where}.name: must be non-empty and contain no '/'")
        if p.name in providers:
            raise ConfigError(f"{where}.name: duplicate provider name {p.name!r}")
        providers[p.name] = p
        urls = p.urls()
        if p.kind != "litellm" and not urls:
            raise ConfigError(f"{where}: kind {p.kind!r} needs base_url or base_urls")
        for j, u in enumerate(urls):
            key = f"{where}.base_url" if p.base_url and j == 0 else f"{where}.base_urls[{j - bool(p.base_url)}]"
            _check_url(u, key)
        _check_headers(p, where)
        if p.max_connections < 1:
            raise ConfigError(f"{where}.max_connections: must be >= 1")
        if p.breaker.failure_threshold < 1 or p.breaker.cooldown_s <= 0:
            raise ConfigError(f"{where}.breaker: failure_threshold must be >= 1 and cooldown_s > 0")
        if p.metrics_interval_s <= 0:
            raise ConfigError(f"{where}.metrics_interval_s: must be > 0")
        _check_timeouts(p.timeouts, where)
    names: set[str] = set()
    for i, r in enumerate(cfg.routes):
        where = f"$.routes[{i}]"
        if not r.name:
            raise ConfigError(f"{where}.name: must be non-empty")
        if r.name in names:
            raise ConfigError(f"{where}.name: duplicate route name {r.name!r}")
        names.add(r.name)
        if not r.targets:
            raise ConfigError(f"{where}.targets: a route needs at least one target")
        if r.retries < 0 or r.retry_backoff_s < 0:
            raise ConfigError(f"{where}: retries and retry_backoff_s must be >= 0")
        if not 0 <= r.queue_timeout_s <= MAX_QUEUE_TIMEOUT_S:
            raise ConfigError(f"{where}.queue_timeout_s: must be between 0 and {MAX_QUEUE_TIMEOUT_S:g}")
        _check_timeouts(r.timeouts, where)
        for key, targets in (("targets", r.targets), ("fallbacks", r.fallbacks)):
            for j, t in enumerate(targets):
                if t.provider not in providers:
                    known = ", ".join(sorted(providers)) or "none"
                    raise ConfigError(
                        f"{where}.{key}[{j}].provider: unknown provider {t.provider!r} (known: {known})"
                    )
                if t.weight <= 0:
                    raise ConfigError(f"{where}.{key}[{j}].weight: must be > 0")
                if not t.model:
                    raise ConfigError(f"{where}.{key}[{j}].model: must be non-empty")
    _check_pricing(cfg.pricing, providers)


def _check_pricing(pricing: PricingCfg, providers: dict[str, ProviderCfg]) -> None:
    """Prices are never negative, an override says something, and one (provider, model) or one
    GPU-hour provider is priced once: which of two duplicates wins would be a guess."""
    seen: set[tuple[str | None, str]] = set()
    for i, m in enumerate(pricing.models):
        where = f"$.pricing.models[{i}]"
        if not m.model:
            raise ConfigError(f"{where}.model: must be non-empty")
        if (m.provider, m.model) in seen:
            on = f"provider {m.provider!r}" if m.provider is not None else "any provider"
            raise ConfigError(f"{where}: duplicate price for model {m.model!r} on {on}")
        seen.add((m.provider, m.model))
        parts = ("input_per_mtok", "output_per_mtok", "cached_read_per_mtok", "cache_write_per_mtok")
        if all(getattr(m, p) is None for p in parts):
            raise ConfigError(f"{where}: set at least one of {', '.join(parts)}")
        for p in parts:
            value = getattr(m, p)
            if value is not None and not (value.is_finite() and value >= 0):
                raise ConfigError(f"{where}.{p}: must be a number >= 0")
    gpu: set[str] = set()
    for i, g in enumerate(pricing.gpu_hours):
        where = f"$.pricing.gpu_hours[{i}]"
        if g.provider not in providers:
            known = ", ".join(sorted(providers)) or "none"
            raise ConfigError(f"{where}.provider: unknown provider {g.provider!r} (known: {known})")
        if g.provider in gpu:
            raise ConfigError(f"{where}.provider: duplicate GPU-hour price for provider {g.provider!r}")
        gpu.add(g.provider)
        if not (g.usd_per_gpu_hour.is_finite() and g.usd_per_gpu_hour >= 0):
            raise ConfigError(f"{where}.usd_per_gpu_hour: must be a number >= 0")
        if g.gpus < 1:
            raise ConfigError(f"{where}.gpus: must be >= 1")
