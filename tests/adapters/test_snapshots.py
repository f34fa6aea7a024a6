"""adapters/snapshots.py: the typed, versioned payloads control modules publish for the gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import get_args

import msgspec
import pytest

from adapters.snapshots import (
    SCHEMA_VERSION,
    SNAPSHOT_TOPICS,
    EndpointsSnapshot,
    ExperimentSpec,
    ExperimentsSnapshot,
    KeySpec,
    KeysSnapshot,
    PoliciesSnapshot,
    PolicySpec,
    ProviderSpec,
    RouteSpec,
    RoutesSnapshot,
    SnapshotKind,
    SnapshotPayload,
    SnapshotVersionError,
    TargetSpec,
    TeamSpec,
    TemplateSpec,
    TemplatesSnapshot,
    decode,
    encode,
    topic_of,
)
from policies.documents import Limits, PolicyDocument
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, TemplateDoc

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
EXAMPLES: list[SnapshotPayload] = [
    RoutesSnapshot(generation=3, published_at=AT, providers=[
        ProviderSpec(name="ep-llama", kind="openai", base_urls=["http://llama.svc:8000/v1"], source="endpoint:ep_1"),
        ProviderSpec(name="openai", kind="openai", api_key_ref="env:OPENAI_API_KEY", source="model:mdl_2"),
    ], routes=[RouteSpec(name="chat", targets=[TargetSpec(provider="ep-llama", model="llama3", weight=3)],
                         fallbacks=[TargetSpec(provider="openai", model="gpt-4o-mini")], source="endpoint:ep_1")]),
    KeysSnapshot(generation=1, published_at=AT,
                 teams=[TeamSpec(id="team_1", name="search", budget_usd=Decimal("500.10"), budget_period="monthly")],
                 keys=[KeySpec(id="gk_1", team_id="team_1", secret_sha256="ab" * 32, roles=["user"],
                               allowed_routes=["chat"], limits=Limits(requests_per_minute=60), expires_at=AT)]),
    PoliciesSnapshot(generation=7, published_at=AT, policies=[PolicySpec(
        id="pol_1", name="no-pii", version=2, document=msgspec.convert(
            {"guardrails": [{"kind": "pii", "entities": ["email"]}]}, PolicyDocument))]),
    TemplatesSnapshot(generation=1, published_at=AT, templates=[TemplateSpec(
        name="summarise", version=1, document=msgspec.convert(
            {"name": "summarise", "messages": [{"role": "user", "content": "Summarise {{ text }}"}],
             "variables": [{"name": "text"}]}, TemplateDoc))]),
    ExperimentsSnapshot(generation=2, published_at=AT, experiments=[ExperimentSpec(
        document=msgspec.convert({"id": "llama-vs-gpt", "route": "chat", "variants": [
            {"name": "a", "route": "chat-a"}, {"name": "b", "route": "chat-b", "params": {"temperature": 0.2}}]},
            ExperimentDoc),
        runtime=ExperimentRuntime(state="running", started_at=1.0e9, weights={"a": 0.7, "b": 0.3}),
    )]),
    EndpointsSnapshot(generation=4, published_at=AT, providers=[
        ProviderSpec(name="serving:ep_1:stable", kind="openai", base_urls=["http://llm-chat.ns.svc:8000/v1"],
                     source="endpoint:ep_1"),
        ProviderSpec(name="serving:ep_1:canary", kind="openai", base_urls=["http://llm-chat-canary.ns.svc:8000/v1"],
                     source="endpoint:ep_1")],
        routes=[RouteSpec(name="chat-llama", source="endpoint:ep_1", queue_timeout_s=30.0, targets=[
            TargetSpec(provider="serving:ep_1:stable", model="llama", weight=90),
            TargetSpec(provider="serving:ep_1:canary", model="llama", weight=10)])]),
]


@pytest.mark.parametrize("payload", EXAMPLES, ids=lambda p: type(p).__name__)
def test_every_kind_round_trips(payload: SnapshotPayload) -> None:
    data = encode(payload)
    kind = json.loads(data)["kind"]
    assert decode(data) == payload
    assert decode(data, kind) == payload
    assert topic_of(payload) == SNAPSHOT_TOPICS[kind] == f"snapshot.{kind}"
    assert json.loads(data)["schema_version"] == SCHEMA_VERSION


def test_each_kind_has_one_payload_type_and_a_distinct_topic() -> None:
    assert sorted(type(p).__struct_config__.tag for p in EXAMPLES) == sorted(get_args(SnapshotKind))
    assert len(set(SNAPSHOT_TOPICS.values())) == len(SNAPSHOT_TOPICS)
    assert not {"catalog.models", "catalog.datasets", "governance.policies"} & set(SNAPSHOT_TOPICS.values())


def test_amounts_stay_exact_and_no_secret_travels() -> None:
    data = encode(EXAMPLES[1])
    assert b'"budget_usd":"500.10"' in data
    assert b"OPENAI_API_KEY" in encode(EXAMPLES[0]) and b"sk-" not in encode(EXAMPLES[0])


def test_readers_ignore_fields_added_within_a_version() -> None:
    raw = json.loads(encode(EXAMPLES[0]))
    raw["routes"][0]["stickiness"] = "key"  # a later publisher's additive field
    raw["extra"] = 1
    assert decode(json.dumps(raw).encode()) == EXAMPLES[0]


def test_a_newer_schema_is_refused_not_guessed() -> None:
    raw = json.loads(encode(EXAMPLES[0]))
    raw["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SnapshotVersionError, match=f"schema_version {SCHEMA_VERSION + 1} is newer"):
        decode(json.dumps(raw).encode())


def test_malformed_payloads_name_the_path_and_the_kind_is_checked() -> None:
    raw = json.loads(encode(EXAMPLES[0]))
    raw["routes"][0]["targets"] = "llama3"
    with pytest.raises(msgspec.ValidationError, match=r"\$\.routes\[0\]\.targets"):
        decode(json.dumps(raw).encode())
    with pytest.raises(msgspec.ValidationError, match="expected a 'keys' snapshot, got 'routes'"):
        decode(encode(EXAMPLES[0]), "keys")
    with pytest.raises(msgspec.ValidationError, match="kind"):
        decode(b'{"kind": "secrets", "generation": 1, "published_at": "2025-01-01T00:00:00Z"}')


def test_policy_documents_inside_are_validated_as_documents() -> None:
    raw = json.loads(encode(EXAMPLES[2]))
    raw["policies"][0]["document"]["guardrails"][0]["entities"] = ["dna"]
    with pytest.raises(msgspec.ValidationError, match=r"\$\.policies\[0\]\.document\.guardrails\[0\]\.entities"):
        decode(json.dumps(raw).encode())
