"""The guardrails plug-in in the gateway: prompts and answers of every endpoint, streamed or not,
team scoping, denials (status, body, metric, audit), failure modes and the idle path."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from adapters.adminapi.tables import ADMIN_MIGRATIONS, audit_log
from adapters.adminapi.testing import serve_asgi
from adapters.gateway_plugins import PluginHost, Principal, RequestContext
from adapters.snapshots import ControlSnapshots, PoliciesSnapshot, PolicySpec
from adapters.store import migrate, open_store
from adapters.store.changes import STORE_MIGRATIONS
from adapters.testdoubles import FunctionUpstream, chat_completion, stream_chunks
from adapters.upstream import UpstreamCall
from gateway.app import create_app
from gateway.config import decode_config
from gateway.policy.guardrail_filters import ChoicesFilter
from gateway.policy.guardrails import GuardrailBlocked, GuardrailsPlugin, GuardrailsSettings
from gateway.state import Gateway
from policies.documents import PolicyDocument
from policies.guardrails import Hit, compile_guardrails
from tests.conftest import capture_usage
from tests.gateway.inprocess import fn_config, in_process

MSG = [{"role": "user", "content": "hi"}]
EMAIL = {"kind": "pii", "entities": ["email"]}
SECRET = "jane.roe@example.org"


def _policies(*docs: dict[str, Any], generation: int = 1) -> ControlSnapshots:
    specs = [PolicySpec(id=f"pol_{i}", name=f"p{i}", version=1, document=msgspec.convert(d, PolicyDocument))
             for i, d in enumerate(docs)]
    return ControlSnapshots(policies=PoliciesSnapshot(generation=generation, published_at=datetime.now(UTC),
                                                      policies=specs))


class _Who:
    """Sets the principal from `x-team` (the auth plug-in's job), ahead of the guardrails."""

    name = "who"

    def on_request(self, ctx: RequestContext) -> None:
        team = ctx.headers.get("x-team")
        if team:
            ctx.principal = Principal(key_id=f"key_{team}", team=team)


def _plugin(gw: Gateway) -> GuardrailsPlugin:
    found = [p.instance for p in gw.generation.plugins.plugins if isinstance(p.instance, GuardrailsPlugin)]
    assert len(found) == 1
    return found[0]


async def _use(gw: Gateway, control: ControlSnapshots) -> None:
    """Swap the control snapshots and wait until the guardrails compiled them (off the request path)."""
    gw.generation.control = control
    live = _plugin(gw)._live
    live.refresh(control.policies)
    deadline = time.monotonic() + 10
    while live.seen is not control.policies:
        assert time.monotonic() < deadline, "guardrails never compiled the new snapshot"
        await asyncio.sleep(0.005)


def _cfg() -> dict[str, Any]:
    """The guardrails by their entry point (the built-in path), after `_Who` as an extra: so disabled here."""
    return fn_config(plugins=[{"name": "guardrails", "enabled": False}])


def _sse(text: str) -> list[Any]:
    out = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def _content(chunks: list[Any]) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks
                   if isinstance(c, dict) and c.get("choices"))


@pytest.fixture
def answers() -> dict[str, Any]:
    return {"text": "ok", "pieces": ["ok"]}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def gateway(answers: dict[str, Any], registry: CollectorRegistry
                  ) -> AsyncIterator[tuple[Gateway, Any, FunctionUpstream]]:
    def handler(call: UpstreamCall) -> Any:
        if call.stream:
            return answers.get("stream") or stream_chunks(answers["pieces"])
        return answers.get("body") or chat_completion(answers["text"])

    up = FunctionUpstream(handler)
    plugin = GuardrailsPlugin(host=PluginHost(None, registry, ControlSnapshots))
    async with in_process(_cfg(), upstreams={"fn": up}, plugins=[_Who(), plugin]) as (gw, client):
        yield gw, client, up


# -- the idle path ------------------------------------------------------------------------------

async def test_without_guardrails_nothing_is_touched_and_no_filter_is_made(
        gateway: tuple[Gateway, Any, FunctionUpstream], answers: dict[str, Any]) -> None:
    gw, client, up = gateway
    plugin = _plugin(gw)
    for control in (ControlSnapshots(), _policies({"limits": {"requestsPerMinute": 5}})):
        await _use(gw, control)
        ctx = RequestContext(request_id="r", model="r", body={"messages": [{"role": "user", "content": SECRET}]},
                             stream=True, raw_headers=[], control=control)
        assert plugin.on_request(ctx) is None and ctx.body["messages"][0]["content"] == SECRET
        assert plugin.response_filter(ctx) is None
        assert gw.generation.plugins.filters(ctx) is None  # so the stream is relayed untouched
        answers["pieces"] = ["write to jane.roe@", "example.org"]
        r = await client.post("/v1/chat/completions",
                              json={"model": "r", "stream": True, "messages": [{"role": "user", "content": SECRET}]})
        assert _content(_sse(r.text)) == "write to " + SECRET
        assert up.calls[-1].body["messages"][0]["content"] == SECRET


# -- prompts ------------------------------------------------------------------------------------

async def test_prompt_pii_is_redacted_in_every_endpoint_and_form(
        gateway: tuple[Gateway, Any, FunctionUpstream], answers: dict[str, Any]) -> None:
    gw, client, up = gateway
    await _use(gw, _policies({"guardrails": [{**EMAIL, "applyTo": "input"}]}))
    r = await client.post("/v1/chat/completions", json={"model": "r", "messages": [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": f"I am {SECRET}"},
        {"role": "user", "content": [{"type": "text", "text": f"cc {SECRET}"}, {"type": "image_url", "image_url": {
            "url": "https://x.invalid/a.png"}}]}]})
    assert r.status_code == 200, r.text
    assert up.calls[-1].body["messages"] == [
        {"role": "system", "content": "be kind"}, {"role": "user", "content": "I am [EMAIL]"},
        {"role": "user", "content": [{"type": "text", "text": "cc [EMAIL]"},
                                     {"type": "image_url", "image_url": {"url": "https://x.invalid/a.png"}}]}]
    answers["body"] = {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "ok"}]}
    await client.post("/v1/completions", json={"model": "r", "prompt": [f"to {SECRET}", "plain", [1, 2]]})
    assert up.calls[-1].body["prompt"] == ["to [EMAIL]", "plain", [1, 2]]  # token ids are not text
    answers["body"] = {"object": "list", "data": [], "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    await client.post("/v1/embeddings", json={"model": "r", "input": SECRET})
    assert up.calls[-1].body["input"] == "[EMAIL]"
    answers["body"] = {"id": "resp", "object": "response", "output": []}
    await client.post("/v1/responses", json={"model": "r", "instructions": f"mail {SECRET}", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": SECRET}]},
        {"type": "function_call_output", "call_id": "c1", "output": SECRET}]})
    body = up.calls[-1].body
    assert body["instructions"] == "mail [EMAIL]"
    assert body["input"][0]["content"][0]["text"] == "[EMAIL]" and body["input"][1]["output"] == "[EMAIL]"


async def test_a_blocked_prompt_is_a_400_naming_the_rule_not_the_text(
        gateway: tuple[Gateway, Any, FunctionUpstream], registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture) -> None:
    gw, client, up = gateway
    seen = capture_usage(gw)
    await _use(gw, _policies({"guardrails": [{**EMAIL, "action": "block"}]}))
    with caplog.at_level(logging.DEBUG):
        r = await client.post("/v1/chat/completions", headers={"x-team": "a"},
                              json={"model": "r", "messages": [{"role": "user", "content": f"I am {SECRET}"}]})
        await gw.usage.drain()
    assert r.status_code == 400
    assert r.json() == {"error": {
        "message": "Your request was blocked by a guardrail: pii (email) (policy 'p0').",
        "type": "invalid_request_error", "param": "messages", "code": "guardrail_blocked"}}
    assert up.calls == []
    assert registry.get_sample_value("llmops_policy_denials_total", {"reason": "guardrail"}) == 1
    assert seen[-1].status == 400 and seen[-1].principal.key_id == "key_a"
    assert seen[-1].annotations["guardrails"]["blocked"] == "input: pii (email) (policy p0)"
    assert SECRET not in caplog.text and "jane" not in caplog.text


async def test_max_input_counts_the_prompt_characters(gateway: tuple[Gateway, Any, FunctionUpstream]) -> None:
    gw, client, up = gateway
    await _use(gw, _policies({"guardrails": [{"kind": "max_input", "maxChars": 10}]}))
    ok = await client.post("/v1/chat/completions", json={"model": "r", "messages": [
        {"role": "user", "content": "12345"}, {"role": "user", "content": [{"type": "text", "text": "67890"}]}]})
    assert ok.status_code == 200
    r = await client.post("/v1/chat/completions", json={"model": "r", "messages": [
        {"role": "user", "content": "12345"}, {"role": "user", "content": "678901"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "guardrail_blocked"
    assert "11 characters; policy 'p0' allows 10" in r.json()["error"]["message"]
    assert len(up.calls) == 1


async def test_log_rules_annotate_and_log_without_the_text(
        gateway: tuple[Gateway, Any, FunctionUpstream], caplog: pytest.LogCaptureFixture) -> None:
    gw, client, up = gateway
    seen = capture_usage(gw)
    await _use(gw, _policies({"guardrails": [{**EMAIL, "action": "log"},
                                             {"kind": "blocked_terms", "terms": ["acme"], "action": "log"}]}))
    with caplog.at_level(logging.INFO, logger="llmops.guardrails"):
        r = await client.post("/v1/chat/completions",
                              json={"model": "r", "messages": [{"role": "user", "content": f"acme: {SECRET}"}]})
        await gw.usage.drain()
    assert r.status_code == 200 and up.calls[-1].body["messages"][0]["content"] == f"acme: {SECRET}"
    assert seen[-1].annotations["guardrails"] == {"input_logged": {"blocked_terms": 1, "pii (email)": 1}}
    logged = [rec for rec in caplog.records if rec.name == "llmops.guardrails"]
    assert len(logged) == 2 and all(rec.fields["request_id"] == seen[-1].request_id for rec in logged)  # type: ignore[attr-defined]
    assert SECRET not in caplog.text and "acme" not in caplog.text


# -- answers ------------------------------------------------------------------------------------

async def test_an_answer_is_redacted_when_not_streamed(
        gateway: tuple[Gateway, Any, FunctionUpstream], answers: dict[str, Any]) -> None:
    gw, client, _ = gateway
    await _use(gw, _policies({"guardrails": [{**EMAIL, "applyTo": "output"}]}))
    answers["text"] = f"write to {SECRET}"
    r = await client.post("/v1/chat/completions", json={"model": "r", "messages": [{"role": "user",
                                                                                    "content": SECRET}]})
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "write to [EMAIL]"}
    answers["body"] = {"id": "c", "object": "text_completion", "choices": [
        {"index": 0, "text": SECRET, "logprobs": {"tokens": ["jane"]}, "finish_reason": "stop"}]}
    r = await client.post("/v1/completions", json={"model": "r", "prompt": "hi"})
    assert r.json()["choices"][0] == {"index": 0, "text": "[EMAIL]", "logprobs": None, "finish_reason": "stop"}
    answers["body"] = {"id": "resp", "object": "response", "output": [
        {"type": "message", "id": "m", "content": [{"type": "output_text", "text": f"at {SECRET}"}]}]}
    r = await client.post("/v1/responses", json={"model": "r", "input": "hi"})
    assert r.json()["output"][0]["content"][0]["text"] == "at [EMAIL]"


async def test_an_email_split_across_two_stream_chunks_is_redacted(
        gateway: tuple[Gateway, Any, FunctionUpstream], answers: dict[str, Any]) -> None:
    gw, client, _ = gateway
    await _use(gw, _policies({"guardrails": [EMAIL]}))
    answers["pieces"] = ["Sure, write to jane.r", "oe@example.org and", " say hi."]
    r = await client.post("/v1/chat/completions", json={"model": "r", "stream": True, "messages": MSG,
                                                        "stream_options": {"include_usage": True}})
    events = _sse(r.text)
    chunks = [e for e in events if isinstance(e, dict)]
    assert _content(chunks) == "Sure, write to [EMAIL] and say hi."
    assert "jane" not in r.text and "example.org" not in r.text
    assert events[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # metadata as sent
    assert {c["id"] for c in chunks} == {"chatcmpl-fn"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}  # still last
    assert chunks[1]["choices"][0]["delta"]["content"] == "Sure, write to "  # released with its own chunk
    assert len(chunks) == len(stream_chunks(answers["pieces"]))  # no chunk held back for good or made up


async def test_a_term_split_across_stream_chunks_is_blocked_with_an_error_event(
        gateway: tuple[Gateway, Any, FunctionUpstream], answers: dict[str, Any], registry: CollectorRegistry) -> None:
    gw, client, _ = gateway
    await _use(gw, _policies({"guardrails": [{"kind": "blocked_terms", "terms": ["project titan"],
                                              "applyTo": "output"}]}))
    answers["pieces"] = ["The plan is called Project Ti", "tan and it", " ships soon."]
    r = await client.post("/v1/chat/completions", json={"model": "r", "stream": True, "messages": MSG})
    assert r.status_code == 200  # the stream had started
    events = _sse(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2] == {"error": {"message": "The response was blocked by a guardrail: blocked_terms (policy 'p0').",
                                    "type": "invalid_request_error", "param": None, "code": "guardrail_blocked"}}
    sent = _content(events[:-2])
    assert sent == "The plan is called"  # " Project Ti" could be the start of the term: held, then refused
    assert registry.get_sample_value("llmops_policy_denials_total", {"reason": "guardrail"}) == 1


async def test_completions_and_responses_streams_are_guarded(
        gateway: tuple[Gateway, Any, FunctionUpstream], answers: dict[str, Any]) -> None:
    gw, client, _ = gateway
    await _use(gw, _policies({"guardrails": [EMAIL]}))
    answers["stream"] = [{"id": "c", "object": "text_completion", "choices": [
        {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]}
        for piece in ("to jane.roe@exa", "mple.org")]
    r = await client.post("/v1/completions", json={"model": "r", "prompt": "hi", "stream": True})
    chunks = [e for e in _sse(r.text) if isinstance(e, dict)]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "to [EMAIL]"  # flushed without a finish reason
    assert {c["id"] for c in chunks} == {"c"}

    pieces = ["Mail jane.r", "oe@exam", "ple.org now"]
    answers["stream"] = _responses_events(pieces)
    r = await client.post("/v1/responses", json={"model": "r", "input": "hi", "stream": True})
    events = [e for e in _sse(r.text) if isinstance(e, dict)]
    assert [e["sequence_number"] for e in events] == list(range(len(answers["stream"])))  # none added or lost
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "Mail [EMAIL] now" and len(deltas) == len(pieces)
    final = {e["type"]: e for e in events}
    assert final["response.output_text.done"]["text"] == "Mail [EMAIL] now"
    assert final["response.content_part.done"]["part"]["text"] == "Mail [EMAIL] now"
    assert final["response.output_item.done"]["item"]["content"][0]["text"] == "Mail [EMAIL] now"
    assert final["response.completed"]["response"]["output"][0]["content"][0]["text"] == "Mail [EMAIL] now"
    assert "jane" not in r.text


def _responses_events(pieces: list[str]) -> list[dict[str, Any]]:
    text = "".join(pieces)
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": [part]}
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": "resp_1", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        {"type": "response.content_part.added", **ids, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **ids, "delta": p} for p in pieces),
        {"type": "response.output_text.done", **ids, "text": text},
        {"type": "response.content_part.done", **ids, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": {"id": "resp_1", "output": [item], "usage": {
            "input_tokens": 3, "output_tokens": 5, "total_tokens": 8}}},
    ]
    return [{**e, "sequence_number": i} for i, e in enumerate(events)]


def test_stream_chunks_are_released_as_soon_as_no_match_can_span_them() -> None:
    """Chunks out against chunks in: prose goes out with the chunk that brought it, bar the two
    characters the IPv4 rule's lookahead (``(?!\\.?\\d)``) reads past a match: never a whole word."""
    rules = compile_guardrails([("p", msgspec.convert(
        {"guardrails": [{"kind": "pii", "entities": ["email", "phone", "credit_card", "iban", "ip_address",
                                                     "national_id"]}]}, PolicyDocument))])
    assert rules is not None and rules.output is not None
    seen: list[Hit] = []

    class _To:
        def observe(self, hits: list[Hit]) -> None:
            seen.extend(hits)

        def deny(self, blocked: Any) -> Any:
            raise AssertionError(blocked)

    f = ChoicesFilter(rules.output, _To(), chat=True)
    words = ("Here is a fairly long answer, written in plain prose, that mentions nobody at all; " * 8).split(" ")
    chunks = stream_chunks([w + " " for w in words], usage=None)
    out: list[dict[str, Any]] = []
    fed = ""
    for chunk in chunks:
        out += f.feed(chunk)
        fed += chunk["choices"][0]["delta"].get("content") or ""
        assert 0 <= len(fed) - len(_content(out)) <= 2
    out += f.flush()
    assert _content(out) == fed and seen == []
    assert len(out) == len(chunks)  # none held back for good, none made up


# -- who it applies to ---------------------------------------------------------------------------

async def test_policies_apply_to_the_teams_they_name_and_unscoped_ones_to_everyone(
        gateway: tuple[Gateway, Any, FunctionUpstream]) -> None:
    gw, client, _ = gateway
    red_only = {"scope": {"teams": ["red"]}, "guardrails": [{"kind": "blocked_terms", "terms": ["alpha"]}]}
    await _use(gw, _policies(red_only, {"guardrails": [{"kind": "blocked_terms", "terms": ["omega"]}]}))

    async def status(team: str | None, word: str) -> int:
        headers = {"x-team": team} if team else {}
        r = await client.post("/v1/chat/completions", headers=headers,
                              json={"model": "r", "messages": [{"role": "user", "content": f"say {word}"}]})
        return r.status_code

    assert [await status("red", "alpha"), await status("blue", "alpha"), await status(None, "alpha")] == [400, 200, 200]
    assert [await status("red", "omega"), await status("blue", "omega"), await status(None, "omega")] == [400, 400, 400]


# -- failures -----------------------------------------------------------------------------------

LOOKAHEAD = {"guardrails": [{"kind": "regex", "pattern": "secret(?=s)"}]}  # valid in Python, not in RE2


@pytest.mark.parametrize(("failure", "status"), [("closed", 500), ("open", 200)])
async def test_a_guardrail_that_cannot_run_fails_closed_unless_configured_open(failure: str, status: int) -> None:
    up = FunctionUpstream(lambda call: chat_completion("ok"))
    cfg = fn_config(plugins=[{"name": "guardrails", "settings": {"failure": failure}}])  # by its entry point
    async with in_process(cfg, upstreams={"fn": up}) as (gw, client):
        await _use(gw, _policies(LOOKAHEAD))
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": [
            {"role": "user", "content": "secrets"}]})
    assert r.status_code == status
    if failure == "closed":
        assert r.json()["error"]["code"] == "plugin_failed" and up.calls == []
    else:
        assert up.calls[-1].body["messages"][0]["content"] == "secrets"  # unguarded, as configured


async def test_the_built_in_plugin_counts_denials_on_the_gateways_metrics() -> None:
    async with in_process(fn_config(plugins=[{"name": "guardrails"}]),
                          upstreams={"fn": FunctionUpstream(lambda call: chat_completion("ok"))}) as (gw, client):
        await _use(gw, _policies({"guardrails": [{"kind": "blocked_terms", "terms": ["omega"]}]}))
        r = await client.post("/v1/chat/completions", json={"model": "r", "messages": [
            {"role": "user", "content": "omega"}]})
        assert r.status_code == 400
        metrics = (await client.get("/metrics")).text
    assert 'llmops_policy_denials_total{reason="guardrail"} 1.0' in metrics


@pytest.mark.timeout(30)
async def test_a_hostile_regex_and_prompt_do_not_stall_the_gateway(
        gateway: tuple[Gateway, Any, FunctionUpstream]) -> None:
    gw, client, _ = gateway
    await _use(gw, _policies({"guardrails": [{"kind": "regex", "pattern": "(a+)+$", "action": "block"}]}))
    started = time.perf_counter()
    r = await client.post("/v1/chat/completions", json={"model": "r", "messages": [
        {"role": "user", "content": "a" * 100_000 + "!"}]})
    assert r.status_code == 200 and time.perf_counter() - started < 10


async def test_a_new_snapshot_is_compiled_off_the_request_path_and_never_goes_back() -> None:
    plugin = GuardrailsPlugin(GuardrailsSettings())
    live = plugin._live
    old = _policies({"guardrails": [EMAIL]}, generation=1)
    new = _policies({"guardrails": [{"kind": "blocked_terms", "terms": ["omega"]}]}, generation=2)
    live.refresh(old.policies)  # the first index: built at once
    assert live.seen is old.policies
    live.refresh(new.policies)  # later ones: in a worker thread, the old index serving meanwhile
    assert live.seen is old.policies and live.index is not None
    deadline = time.monotonic() + 10
    while live.seen is not new.policies:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    live._install(old.policies, None)  # an older build finishing late is ignored
    assert live.seen is new.policies


# -- audit --------------------------------------------------------------------------------------

async def test_denials_are_audited_off_the_request_path(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", feed_mode="local")
    try:
        await migrate(store, {"store": STORE_MIGRATIONS, "admin": ADMIN_MIGRATIONS})
        control = _policies({"guardrails": [{**EMAIL, "action": "block"}]})
        plugin = GuardrailsPlugin(host=PluginHost(store, None, lambda: control))
        async with plugin.lifespan():
            for i in range(3):
                ctx = RequestContext(request_id=f"req-{i}", model="r", stream=False, raw_headers=[], control=control,
                                     body={"messages": [{"role": "user", "content": SECRET}]},
                                     principal=Principal(key_id="key_1", team="red"))
                with pytest.raises(GuardrailBlocked):
                    plugin.on_request(ctx)
        async with store.read() as conn:
            rows = (await conn.execute(select(audit_log).order_by(audit_log.c.id))).mappings().all()
    finally:
        await store.aclose()
    first, aggregate = rows  # one row, then one aggregate of the two that followed in its window
    assert (first["action"], first["outcome"], first["status_code"]) == ("policy.denied", "denied", 400)
    assert first["actor_key_id"] == "key_1" and first["request_id"] == "req-0"
    assert first["detail"] == "guardrail pii (email) on input (policy 'p0')"
    assert aggregate["after"]["count"] == 2 and aggregate["after"]["requestIds"] == ["req-1", "req-2"]
    assert all(SECRET not in json.dumps(dict(row), default=str) for row in rows)


# -- end to end: a policy made through the admin API, keys through auth -------------------------

async def test_a_governance_policy_is_enforced_for_its_team_and_audited(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", "adm-secret")
    admin = {"authorization": "Bearer adm-secret"}
    gov = "/llm-ops/v1/governance"

    def answer(call: UpstreamCall) -> Any:
        return stream_chunks(["Mail jane.r", "oe@example.org now."]) if call.stream else chat_completion("ok")

    up = FunctionUpstream(answer)
    cfg = decode_config({  # auth and guardrails are built in: no plugins entry
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(tmp_path), "modules": ["governance"]},
        "providers": [{"name": "fn", "kind": "openai", "base_url": "http://fn.invalid"}],
        "routes": [{"name": "r", "targets": [{"provider": "fn", "model": "m0"}]}]})
    app = create_app(cfg, upstreams={"fn": up})
    async with serve_asgi(app, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=10) as h:
        keys = {}
        for team in ("support", "research"):
            team_id = (await h.post(f"{gov}/teams", headers=admin, json={"name": team})).json()["data"]["id"]
            made = (await h.post(f"{gov}/keys", headers=admin,
                                 json={"name": team, "teamId": team_id, "roles": ["inference"]})).json()["data"]
            keys[team] = (made["id"], {"authorization": f"Bearer {made['key']}"})
        r = await h.post(f"{gov}/policies", headers=admin, json={"name": "support-rails", "document": {
            "scope": {"teams": ["support"]}, "guardrails": [
                {"kind": "blocked_terms", "terms": ["project titan"]},
                {"kind": "pii", "entities": ["email"], "applyTo": "output"}]}})
        assert r.status_code == 201, r.text

        async def chat(team: str, text: str, **extra: Any) -> httpx.Response:
            return await h.post("/v1/chat/completions", headers=keys[team][1],
                                json={"model": "r", "messages": [{"role": "user", "content": text}], **extra})

        deadline = time.monotonic() + 10
        while (blocked := await chat("support", "about Project Titan")).status_code != 400:
            assert blocked.status_code == 200 and time.monotonic() < deadline, blocked.text
            await asyncio.sleep(0.02)
        assert blocked.json()["error"]["code"] == "guardrail_blocked"
        assert (await chat("research", "about Project Titan")).status_code == 200  # not its team's policy
        streamed = await chat("support", "hi", stream=True)
        assert _content(_sse(streamed.text)) == "Mail [EMAIL] now." and "jane" not in streamed.text
        assert "jane.roe" in _content(_sse((await chat("research", "hi", stream=True)).text))

        async def audited() -> list[dict[str, Any]]:
            r = await h.get("/llm-ops/v1/audit/logs", headers=admin, params={"action": "policy.denied"})
            return [e for e in r.json()["data"]["items"] if e["detail"].startswith("guardrail")]
        deadline = time.monotonic() + 5
        while not (rows := await audited()):
            assert time.monotonic() < deadline, "the denial never reached the audit log"
            await asyncio.sleep(0.05)
    first = rows[-1]
    assert first["actorKeyId"] == keys["support"][0] and first["statusCode"] == 400
    assert first["requestId"] == blocked.headers["x-request-id"]
    assert first["detail"] == "guardrail blocked_terms on input (policy 'support-rails')"
