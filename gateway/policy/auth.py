"""The ``auth`` plug-in: data-plane keys from the in-memory keys snapshot, no database read per request.

A request presents its key as ``Authorization: Bearer <key>`` or (Azure-style) ``api-key: <key>``. Keys
are ``llmops_<16 hex key id>_<secret>`` (``adapters.adminapi.auth``); the snapshot the governance module
publishes (``ctx.control.keys``) holds each live key's id and the SHA-256 of its secret, never the
secret. ``on_request`` hashes the presented secret once, finds the key by its public id in a dict built
once per snapshot object, and compares the digests with ``hmac.compare_digest`` (a dummy digest when
the id is unknown, so both paths cost the same). Revoked keys are absent from the snapshot, so a
revoked key and an unknown one get the same 401; an expired one (checked against ``time.time()``) says
so. Only a key holding the data-plane role (``inference``, ``adapters.adminapi.rbac.may_use_data_plane``)
may call ``/v1/*``; admin roles alone do not (403). The principal (key id, team name, roles) is set on
the context and carried into the usage record, which attributes the request to the team.

``on_route`` (the route and model are only known there) checks the key's ``allowed_routes`` and the
key's and its team's ``allowed_models`` (globs, matched against the route, the model and
``provider/model``, as the policy documents' ``models`` are): 403 ``permission_error``.

When a key is required (settings ``required``):

* ``auto`` (default): as soon as one data-plane key has been issued (the snapshot's
  ``data_plane_keys_issued``: revoked and expired keys count, so revoking the last key never opens the
  gateway again); before that, every request passes and ``on_request`` returns at once (one identity
  check). A gateway that starts while the database is down has no keys snapshot yet, and lets requests
  through until it has one: production deployments should say ``always``.
* ``always``: every request needs a key, with or without keys in the snapshot.
* ``never``: no authentication (the plug-in has no hooks at all).

``public_routes`` (route names) need no key even when keys are required; the embedded default config
lists its ``demo`` route (a mock upstream), so ``llmops serve`` without a config keeps answering it
anonymously after the first key is created, while every other route wants a key. A key sent to a public
route is still checked (a bad one is a 401) and attributes the request, but its route and model
restrictions do not apply there.

Refusals use OpenAI's error schema: 401 ``invalid_request_error`` (code ``missing_api_key`` or
``invalid_api_key``, header ``www-authenticate: Bearer``, as RFC 9110 asks of a 401), 403
``permission_error``. The key never appears in an error, a log line, a metric or the audit log: only
its public id does. Each refusal counts in ``llmops_policy_denials_total{reason}`` and is queued for the
audit log (``gateway.policy.audit``), written off the request path.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from adapters.adminapi.rbac import admin_role, may_use_data_plane
from adapters.errors import AuthenticationFailed, PermissionDenied
from adapters.gateway_plugins import PluginHost, Principal, RequestContext
from adapters.snapshots import KeySpec, KeysSnapshot, TeamSpec
from gateway.policy.audit import Denial, DenialAudit
from gateway.policy.metrics import policy_metrics

__all__ = ["AuthPlugin", "AuthSettings", "InvalidApiKey"]

log = logging.getLogger("llmops.policy.auth")

_TOKEN: Final = re.compile(rb"llmops_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_MAX_CREDENTIAL = 512  # a key is 67 bytes; anything far longer is not one, and is not parsed
_NO_DIGEST: Final = "0" * 64
_BEARER = b"bearer "
_BUSY: Final = object()  # never a snapshot: "no snapshot is idle"


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    required: Literal["auto", "always", "never"] = "auto"
    public_routes: list[str] = []  # route names anyone may call without a key


class InvalidApiKey(AuthenticationFailed):
    """401 as OpenAI answers it: type ``invalid_request_error`` (not ``authentication_error``)."""

    kind = "invalid_request_error"

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": 'Bearer realm="llmops"'}


_MISSING = ("You didn't provide an API key. Send it in an Authorization header using Bearer auth "
            "(Authorization: Bearer YOUR_KEY) or in an api-key header.")
_INVALID = "Incorrect API key provided."
_EXPIRED = "The API key provided has expired."


class _Key:
    """One snapshot key, ready to check: derived on its first use under a snapshot, then kept with it."""

    __slots__ = ("data_plane", "digest", "expires_at", "models", "name", "principal", "role", "routes")

    def __init__(self, spec: KeySpec, team: TeamSpec | None) -> None:
        self.digest = spec.secret_sha256.lower()
        roles = tuple(spec.roles)
        self.principal = Principal(key_id=spec.id, team=team.name if team is not None else None, roles=roles)
        self.name = spec.name or spec.id
        self.role = admin_role(roles).name
        self.data_plane = may_use_data_plane(roles)
        self.expires_at = _epoch(spec.expires_at)
        self.routes = _globs(spec.allowed_routes)
        self.models = tuple(p for p in (_globs(spec.allowed_models),
                                        _globs(team.allowed_models) if team is not None else None) if p is not None)


class _Index:
    """One snapshot's keys by id. Built on the first request that sees the snapshot, so it only maps ids to
    specs (about 0.1 µs a key); each key's checks (`_Key`) are derived on its first use, then kept."""

    __slots__ = ("_entries", "_specs", "_teams", "required")

    def __init__(self, snap: KeysSnapshot | None, mode: str) -> None:
        self._specs = {k.id: k for k in snap.keys} if snap is not None else {}
        self._teams = {t.id: t for t in snap.teams} if snap is not None else {}
        self._entries: dict[str, _Key] = {}
        # issued: revoked and expired keys count too (a publisher without the field: the live keys alone)
        issued = snap is not None and snap.data_plane_keys_issued
        self.required = mode == "always" or (mode == "auto" and (
            issued or any(may_use_data_plane(k.roles) for k in self._specs.values())))

    def get(self, key_id: str) -> _Key | None:
        entry = self._entries.get(key_id)
        if entry is None:
            spec = self._specs.get(key_id)
            if spec is None:
                return None
            entry = self._entries[key_id] = _Key(spec, self._teams.get(spec.team_id))
        return entry


class AuthPlugin:
    """Authenticates data-plane requests; see the module docstring."""

    Settings = AuthSettings
    failure = "closed"

    def __init__(self, settings: AuthSettings | None = None, *, host: PluginHost | None = None) -> None:
        s = settings or AuthSettings()
        self.settings = s
        self._mode = s.required
        self._public = frozenset(s.public_routes)
        self._metrics = policy_metrics(host.registry if host is not None else None)
        self.audit = DenialAudit(host.store if host is not None else None, action="auth.denied")
        self._seen: KeysSnapshot | None = None
        self._idx = self._prev_idx = _Index(None, self._mode)
        self._prev: KeysSnapshot | None = None
        # The keys snapshot (None: none yet) for which nothing is required: the idle path's one identity check.
        self._idle: object = _BUSY if self._idx.required else None
        if self._mode == "never":  # no hooks on the request path at all
            self.on_request = self.on_route = None  # type: ignore[assignment]

    # -- the snapshot's index --------------------------------------------------------------------

    def _index(self, keys: KeysSnapshot | None) -> _Index:
        """The index of ``keys``: the current one, the previous one (requests that straddle a change), or new."""
        if keys is self._seen:
            return self._idx
        if keys is self._prev:
            return self._prev_idx
        idx = _Index(keys, self._mode)
        if self._mode == "auto" and idx.required != self._idx.required and (keys is not None or self._seen):
            if idx.required:
                log.info("data-plane authentication is on: the keys snapshot holds a data-plane key")
            else:
                log.warning("data-plane authentication is off: no data-plane key is left in the keys snapshot "
                            "(set plugins: [{name: auth, settings: {required: always}}] to keep it on)")
        self._prev, self._prev_idx = self._seen, self._idx
        self._seen, self._idx = keys, idx
        self._idle = _BUSY if idx.required else keys
        return idx

    # -- hooks -----------------------------------------------------------------------------------

    def on_request(self, ctx: RequestContext) -> None:
        if ctx.control.keys is self._idle:  # type: ignore[union-attr]  # the gateway always sets ctx.control
            return  # the idle path: no data-plane key was ever issued
        self._authenticate(ctx)

    def on_route(self, ctx: RequestContext) -> None:
        if ctx.principal is None and ctx.control.keys is self._idle:  # type: ignore[union-attr]
            return
        self._check_route(ctx)

    def _authenticate(self, ctx: RequestContext) -> None:
        keys = ctx.control.keys if ctx.control is not None else None
        idx = self._idx if keys is self._seen else self._index(keys)
        if not idx.required:  # an idle snapshot this request started with, another one current
            return
        try:
            token = self._credential(ctx)
        except InvalidApiKey as exc:
            raise self._deny(ctx, exc, "malformed credentials") from None
        if token is None:
            if (ctx.route_name or ctx.model) in self._public:
                return  # anonymous on a public route (on_route checks the route actually used)
            raise self._deny(ctx, InvalidApiKey(_MISSING, code="missing_api_key"), "missing key")
        m = _TOKEN.fullmatch(token)
        if m is None:
            raise self._deny(ctx, InvalidApiKey(_INVALID, code="invalid_api_key"), "malformed key")
        key_id = "key_" + m.group(1).decode()
        presented = hashlib.sha256(m.group(2)).hexdigest()
        entry = idx.get(key_id)
        if not hmac.compare_digest(presented, entry.digest if entry is not None else _NO_DIGEST) or entry is None:
            # unknown, revoked (absent from the snapshot) and a wrong secret all read the same
            raise self._deny(ctx, InvalidApiKey(_INVALID, code="invalid_api_key"), "invalid key", key_id=key_id)
        if entry.expires_at is not None and time.time() >= entry.expires_at:
            raise self._deny(ctx, InvalidApiKey(_EXPIRED, code="invalid_api_key"), "expired key", entry)
        ctx.principal = entry.principal
        if not entry.data_plane:
            raise self._deny(ctx, PermissionDenied(
                f"Key {key_id} may not call the data plane: it lacks the 'inference' role",
                code="insufficient_permissions"), "key lacks the inference role", entry, reason="permission")

    def _check_route(self, ctx: RequestContext) -> None:
        keys = ctx.control.keys if ctx.control is not None else None
        idx = self._idx if keys is self._seen else self._index(keys)
        p = ctx.principal
        route = ctx.route_name or ctx.model
        if p is None:
            if idx.required and route not in self._public:  # a public route was asked for, another one chosen
                raise self._deny(ctx, InvalidApiKey(_MISSING, code="missing_api_key"), "missing key")
            return
        entry = idx.get(p.key_id)
        if entry is None or route in self._public:  # another plug-in's principal, or a public route
            return
        if entry.routes is not None and not entry.routes.match(route):
            raise self._deny(ctx, PermissionDenied(f"Key {p.key_id} may not use route '{route}'", param="model",
                                                   code="route_not_allowed"),
                             f"route {route!r} not allowed for the key", entry, reason="permission")
        if entry.models:
            names = [route]
            if ctx.upstream_model:
                names.append(ctx.upstream_model)
                if ctx.provider:
                    names.append(f"{ctx.provider}/{ctx.upstream_model}")
            for allowed in entry.models:
                if not any(allowed.match(n) for n in names):
                    shown = ctx.upstream_model or route
                    raise self._deny(ctx, PermissionDenied(f"Key {p.key_id} may not use model '{shown}'",
                                                           param="model", code="model_not_allowed"),
                                     f"model {shown!r} not allowed for the key or its team", entry,
                                     reason="model_not_allowed")

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with self.audit.running():
            yield

    def lifespan(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._running()

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _credential(ctx: RequestContext) -> bytes | None:
        """The presented key's bytes, or None; ambiguous or oversized credentials are a 401 (never parsed
        further, never decoded: a non-latin-1 or CR/LF byte simply fails the key's pattern)."""
        bearer = api_key = None
        for name, value in ctx.raw_headers:
            if name == b"authorization":
                if bearer is not None:
                    raise InvalidApiKey("Send exactly one Authorization header.", code="invalid_api_key")
                bearer = value
            elif name == b"api-key":
                if api_key is not None:
                    raise InvalidApiKey("Send exactly one api-key header.", code="invalid_api_key")
                api_key = value
        if bearer is not None:
            if len(bearer) > _MAX_CREDENTIAL or bearer[:7].lower() != _BEARER:
                raise InvalidApiKey(_INVALID + " Use 'Authorization: Bearer YOUR_KEY'.", code="invalid_api_key")
            bearer = bearer[7:].strip(b" \t")
        if api_key is not None:
            api_key = api_key.strip(b" \t")
            if len(api_key) > _MAX_CREDENTIAL:
                raise InvalidApiKey(_INVALID, code="invalid_api_key")
            if bearer is not None and bearer != api_key:
                raise InvalidApiKey("The Authorization and api-key headers name different keys; send one.",
                                    code="invalid_api_key")
        return bearer if bearer is not None else api_key

    def _deny(self, ctx: RequestContext, exc: Any, detail: str, entry: _Key | None = None, *,
              key_id: str | None = None, reason: str = "authentication") -> Any:
        """Count and queue a refusal for the audit log; return ``exc`` for the caller to raise."""
        self._metrics.deny(reason)
        self.audit.record(Denial(
            at=time.time(), status=exc.status, reason=reason, detail=detail, request_id=ctx.request_id,
            resource=ctx.route_name or ctx.model or "-", endpoint=ctx.endpoint,
            key_id=entry.principal.key_id if entry is not None else key_id,
            actor_name=entry.name if entry is not None else "anonymous",
            actor_role=entry.role if entry is not None else None))
        return exc


def _epoch(at: datetime | None) -> float | None:
    if at is None:
        return None
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


_NOTHING = re.compile(r"(?!)")


def _globs(patterns: Iterable[str] | None) -> re.Pattern[str] | None:
    """One regex for a list of globs; None: no restriction; an empty list allows nothing."""
    if patterns is None:
        return None
    found = list(patterns)
    if not found:
        return _NOTHING
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in found))
