"""Snapshot payloads: what control modules publish for the gateway, typed and versioned.

The gateway builds each generation from its YAML plus these snapshots. The
contract between the two sides is only this module:

* A publisher (a control module) encodes a payload with ``encode`` and stores it
  in the same transaction that changed its rows, then marks the payload's topic
  (``SNAPSHOT_TOPICS[kind]``, also ``topic_of(payload)``) on the ``ChangeFeed``.
* A reader (the gateway) follows those topics with an ``adapters.store.Snapshot``,
  decodes with ``decode`` and merges the payload into its next generation.

Kinds, their topics, contents and (future) publishers:

* ``routes`` (``snapshot.routes``): providers and routes from approved external
  models (catalog);
* ``endpoints`` (``snapshot.endpoints``): providers and routes of serving endpoints,
  with canary weights and the scale-from-zero queue bound (serving). Same shapes as
  ``routes``; a YAML route wins over both, an endpoint's route over a catalog one;
* ``keys`` (``snapshot.keys``): data-plane keys (hashes only) and teams (governance);
* ``policies`` (``snapshot.policies``): policy documents, ``policies.documents`` (governance);
* ``templates`` (``snapshot.templates``): prompt template versions (prompts);
* ``experiments`` (``snapshot.experiments``): A/B experiments on routes, with runtime state (prompts).

Versioning: every payload carries ``schema_version``. Within a version, changes
are additive (new fields with defaults); readers ignore fields they do not know,
so an older gateway reads a newer publisher's payload. A change readers cannot
ignore bumps ``SCHEMA_VERSION``, and ``decode`` refuses a payload newer than it
understands (``SnapshotVersionError``) rather than guessing. ``generation`` is the
publisher's counter: a reader never swaps an older generation over a newer one.
Secrets never appear: keys carry SHA-256 hashes, providers ``env:``/``secret:`` refs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

import msgspec

from policies.documents import Limits, PolicyDocument
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, TemplateDoc

__all__ = [
    "SCHEMA_VERSION",
    "SNAPSHOT_TOPICS",
    "ControlSnapshots",
    "EndpointsSnapshot",
    "ExperimentSpec",
    "ExperimentsSnapshot",
    "KeySpec",
    "KeysSnapshot",
    "PoliciesSnapshot",
    "PolicySpec",
    "ProviderSpec",
    "RouteSpec",
    "RoutesSnapshot",
    "SnapshotKind",
    "SnapshotPayload",
    "SnapshotVersionError",
    "TargetSpec",
    "TeamSpec",
    "TemplateSpec",
    "TemplatesSnapshot",
    "decode",
    "encode",
    "topic_of",
]

SCHEMA_VERSION: Final = 1
SnapshotKind = Literal["routes", "endpoints", "keys", "policies", "templates", "experiments"]
SNAPSHOT_TOPICS: Final[dict[SnapshotKind, str]] = {
    "routes": "snapshot.routes",
    "endpoints": "snapshot.endpoints",
    "keys": "snapshot.keys",
    "policies": "snapshot.policies",
    "templates": "snapshot.templates",
    "experiments": "snapshot.experiments",
}


class SnapshotVersionError(ValueError):
    """The payload's ``schema_version`` is newer than this reader understands."""


class _Spec(msgspec.Struct, frozen=True, kw_only=True):
    pass


class _Payload(_Spec, frozen=True, tag_field="kind"):
    generation: int
    published_at: datetime
    schema_version: int = SCHEMA_VERSION


# -- routes ----------------------------------------------------------------------------------------

class ProviderSpec(_Spec, frozen=True):
    """Like a YAML ``providers`` entry; ``source`` says which control object it came from."""

    name: str
    kind: Literal["openai", "ollama", "litellm"]
    base_urls: list[str] = []
    api_key_ref: str | None = None  # "env:NAME" or "secret:NAME"; resolved by the gateway, never a key
    source: str = ""  # e.g. "endpoint:ep_01…", "model:mdl_01…"


class TargetSpec(_Spec, frozen=True):
    provider: str
    model: str
    weight: float = 1.0


class RouteSpec(_Spec, frozen=True):
    """Like a YAML ``routes`` entry; a YAML route of the same name wins (the config is the operator's)."""

    name: str
    targets: list[TargetSpec]
    fallbacks: list[TargetSpec] = []
    retries: int = 1
    source: str = ""
    template: str | None = None  # a served endpoint's prompt template: "name" or "name@version"
    template_variables: dict[str, Any] = {}
    # A serving endpoint that may be scaled to zero: how long the gateway holds a request whose upstream
    # refuses connections (no ready replica yet) before failing it; 0 fails over at once, as before.
    queue_timeout_s: float = 0.0


class RoutesSnapshot(_Payload, frozen=True, tag="routes"):
    providers: list[ProviderSpec] = []
    routes: list[RouteSpec] = []


class EndpointsSnapshot(_Payload, frozen=True, tag="endpoints"):
    """Serving endpoints as routes: one provider per running revision slot (``serving:<endpoint id>:stable``
    and ``…:canary``), one route per endpoint whose targets' weights are the traffic split. Only endpoints
    with a healthy slot (or scaled to zero, with ``queue_timeout_s``) appear; the route goes with the endpoint."""

    providers: list[ProviderSpec] = []
    routes: list[RouteSpec] = []


# -- keys and teams --------------------------------------------------------------------------------

class TeamSpec(_Spec, frozen=True):
    id: str
    name: str
    limits: Limits | None = None
    budget_usd: Decimal | None = None
    budget_period: Literal["daily", "weekly", "monthly"] | None = None
    allowed_models: list[str] | None = None  # model globs; None: every model


class KeySpec(_Spec, frozen=True):
    """A live key (revoked keys are left out; expired ones stay until ``expires_at`` is checked).

    Admin and data-plane keys are one model: only a key whose ``roles`` hold ``inference`` may use the
    data plane (``adapters.adminapi.rbac.may_use_data_plane``). ``secret_sha256`` is the hex SHA-256 of
    the secret part of ``llmops_<16 hex>_<secret>`` (``adapters.adminapi.auth.key_digest``).
    """

    id: str
    team_id: str
    secret_sha256: str
    roles: list[str] = []
    allowed_routes: list[str] | None = None  # route globs; None: every route
    allowed_models: list[str] | None = None  # model globs; None: every model
    name: str = ""
    limits: Limits | None = None
    budget_usd: Decimal | None = None
    budget_period: Literal["daily", "weekly", "monthly"] | None = None
    expires_at: datetime | None = None


class KeysSnapshot(_Payload, frozen=True, tag="keys"):
    teams: list[TeamSpec] = []
    keys: list[KeySpec] = []
    # A key with the data-plane role exists or existed (revoked and expired ones count): the auth plug-in's
    # `required: auto` stays on once the first was made, so revoking the last key never opens the gateway.
    data_plane_keys_issued: bool = False


# -- policies --------------------------------------------------------------------------------------

class PolicySpec(_Spec, frozen=True):
    id: str
    name: str
    version: int
    document: PolicyDocument


class PoliciesSnapshot(_Payload, frozen=True, tag="policies"):
    policies: list[PolicySpec] = []


# -- templates and experiments ---------------------------------------------------------------------

class TemplateSpec(_Spec, frozen=True):
    """One version of a prompt template. The snapshot holds each template's latest version
    (``latest``) and every older version a published experiment or route names (``name@version``)."""

    name: str
    version: int
    document: TemplateDoc
    latest: bool = True
    source: Literal["api", "config"] = "api"


class TemplatesSnapshot(_Payload, frozen=True, tag="templates"):
    templates: list[TemplateSpec] = []


class ExperimentSpec(_Spec, frozen=True):
    """An experiment's declaration and its runtime state; the gateway assigns from these alone (a
    stable hash of experiment id and unit: sticky across replicas and restarts, no store read)."""

    document: ExperimentDoc
    runtime: ExperimentRuntime = ExperimentRuntime()
    source: Literal["api", "config"] = "api"


class ExperimentsSnapshot(_Payload, frozen=True, tag="experiments"):
    experiments: list[ExperimentSpec] = []


SnapshotPayload = (RoutesSnapshot | EndpointsSnapshot | KeysSnapshot | PoliciesSnapshot | TemplatesSnapshot
                   | ExperimentsSnapshot)

_encoder = msgspec.json.Encoder(decimal_format="string")  # exact amounts, as "12.50"
_decoder = msgspec.json.Decoder(SnapshotPayload)
_version = msgspec.json.Decoder(dict[str, msgspec.Raw])


def topic_of(payload: SnapshotPayload) -> str:
    return SNAPSHOT_TOPICS[payload.__struct_config__.tag]  # type: ignore[index]  # tags are SnapshotKinds


def encode(payload: SnapshotPayload) -> bytes:
    return _encoder.encode(payload)


def decode(data: bytes, kind: SnapshotKind | None = None) -> SnapshotPayload:
    """The payload in ``data``; ``kind`` (when given) must match its tag.

    Raises ``SnapshotVersionError`` for a newer schema and ``msgspec.ValidationError``
    (naming the path, e.g. ``$.routes[0].targets``) for a malformed payload.
    """
    version = _version.decode(data).get("schema_version")
    found = msgspec.json.decode(version, type=int) if version is not None else SCHEMA_VERSION
    if found > SCHEMA_VERSION:
        raise SnapshotVersionError(f"snapshot schema_version {found} is newer than this reader's {SCHEMA_VERSION}")
    payload = _decoder.decode(data)
    tag = payload.__struct_config__.tag
    if kind is not None and tag != kind:
        raise msgspec.ValidationError(f"expected a {kind!r} snapshot, got {tag!r} - at `$.kind`")
    return payload


@dataclass(frozen=True)
class ControlSnapshots:
    """The snapshots one generation was built from; ``None``: that kind was never published.

    ``routes`` and ``endpoints`` are merged into the route table; ``policies`` (governance) is carried for the
    policy plug-ins, as are ``keys``, ``templates`` and ``experiments``. Plug-ins read the
    current set from ``RequestContext.control`` (gateway plug-ins) and build their indexes
    once per snapshot object, not per request.
    """

    routes: RoutesSnapshot | None = None
    endpoints: EndpointsSnapshot | None = None
    keys: KeysSnapshot | None = None
    policies: PoliciesSnapshot | None = None
    templates: TemplatesSnapshot | None = None
    experiments: ExperimentsSnapshot | None = None

    def generations(self) -> dict[str, int]:
        return {kind: p.generation for kind in SNAPSHOT_TOPICS if (p := getattr(self, kind)) is not None}

    def merged(self, found: Mapping[SnapshotKind, SnapshotPayload]) -> ControlSnapshots:
        """These snapshots with newer ones from ``found``; an older generation never replaces a newer."""
        newer = {kind: p for kind, p in found.items()
                 if (old := getattr(self, kind)) is None or p.generation > old.generation}
        return replace(self, **newer) if newer else self  # type: ignore[arg-type]  # kinds are field names
