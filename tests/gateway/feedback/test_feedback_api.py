"""POST /v1/feedback end to end (SQLite and PostgreSQL): requests made through the gateway and rated right
after their response, each key rating only its own, episodes, and the openai SDK as a client."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai
import pytest
from prometheus_client import REGISTRY

from adapters.usage import Principal, UsageRecord, new_record_id
from adapters.usage_store import row_from_record, write_usage
from gateway.feedback import service
from tests.gateway.feedback.support import Served, error_of, serving, until


async def _keys_on(s: Served) -> dict[str, tuple[str, str]]:
    """Keys a and b (inference) and dev (developer) of team research; returns once auth requires keys."""
    team = await s.team("research")
    keys = {name: await s.key(name, team, roles) for name, roles in
            (("a", ["inference"]), ("b", ["inference"]), ("dev", ["developer"]))}

    async def required() -> bool:
        return (await s.chat()).status_code == 401
    await until(required, 5.0, "authentication to be required")
    return keys


def _as(keys: dict[str, tuple[str, str]], name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {keys[name][0]}"}


def _feedback_count(s: Served, outcome: str) -> float:
    value = s.app.state.gateway.metrics.registry.get_sample_value("llmops_feedback_total", {"outcome": outcome})
    return float(value or 0.0)


async def test_rating_own_requests_right_after_the_response(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(database_url, tmp_path, monkeypatch) as s:
        # No data-plane key issued yet: no key is required, anyone rates anything, key_id null.
        anon = (await s.chat()).headers["x-request-id"]
        r = await s.rate({"request_id": anon, "score": 0.5, "comment": "fine"})  # at once: the record is not stored yet
        assert r.status_code == 201, r.text
        got = r.json()
        assert got["id"].startswith("fb_") and got["object"] == "feedback" and abs(got["created"] - time.time()) < 60
        assert {k: v for k, v in got.items() if k not in ("id", "created")} == {
            "object": "feedback", "request_id": anon, "episode_id": None, "request_ids": [anon], "requests": 1,
            "experiment": "exp-1", "variant": "v2", "score": 0.5, "label": None, "comment": "fine"}
        assert r.headers["x-request-id"] != anon  # the feedback call has an id of its own

        keys = await _keys_on(s)
        mine = await s.chat(_as(keys, "a"))
        assert mine.status_code == 200
        rid = mine.headers["x-request-id"]
        r = await s.rate({"request_id": rid, "label": True}, _as(keys, "a"))
        assert r.status_code == 201, r.text
        assert r.json()["experiment"] == "exp-1" and r.json()["variant"] == "v2" and r.json()["label"] is True
        assert r.json()["request_ids"] == [rid]
        r = await s.rate({"request_id": rid, "label": "too-verbose", "score": -1}, {"api-key": keys["a"][0]})
        assert r.status_code == 201 and r.json()["label"] == "too-verbose"

        # Someone else's request reads exactly as an unknown one: 404, nothing revealed.
        theirs = await s.rate({"request_id": rid, "score": 1}, _as(keys, "b"))
        unknown = await s.rate({"request_id": "no-such-request", "score": 1}, _as(keys, "b"))
        assert theirs.status_code == unknown.status_code == 404
        assert error_of(theirs)["type"] == error_of(unknown)["type"] == "not_found_error"
        assert error_of(theirs)["code"] == error_of(unknown)["code"] == "not_found"
        assert error_of(theirs)["message"].replace(rid, "X") == error_of(unknown)["message"].replace(
            "no-such-request", "X")
        assert (await s.rate({"request_id": anon, "score": 1}, _as(keys, "a"))).status_code == 404  # keyless record
        # The auth plug-in's own refusals: no key, a wrong key, a key without the inference role.
        r = await s.rate({"request_id": rid, "score": 1})
        assert r.status_code == 401 and error_of(r)["code"] == "missing_api_key" and "www-authenticate" in r.headers
        r = await s.rate({"request_id": rid, "score": 1}, {"authorization": "Bearer llmops_0000000000000000_x"})
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
        r = await s.rate({"request_id": rid, "score": 1}, _as(keys, "dev"))
        assert r.status_code == 403 and error_of(r)["type"] == "permission_error"

        rows = await s.rows()
        assert [(x["request_id"], x["key_id"], x["team"], x["experiment"], x["variant"], x["score"], x["label"],
                 x["positive"], x["comment"], x["episode_id"]) for x in rows] == [
            (anon, None, None, "exp-1", "v2", 0.5, None, None, "fine", None),
            (rid, keys["a"][1], "research", "exp-1", "v2", None, "true", True, None, None),
            (rid, keys["a"][1], "research", "exp-1", "v2", -1.0, "too-verbose", None, None, None)]
        assert len({x["feedback_id"] for x in rows}) == 3 and all(x["feedback_id"].startswith("fb_") for x in rows)
        assert _feedback_count(s, "recorded") == 3 and _feedback_count(s, "not_found") == 3
        assert _feedback_count(s, "denied") == 3
        assert REGISTRY.get_sample_value("llmops_feedback_total", {"outcome": "recorded"}) is None  # its own registry


async def test_episodes_and_the_wait_for_unknown_ids(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(database_url, tmp_path, monkeypatch) as s:
        keys = await _keys_on(s)
        a, b = (Principal(keys[k][1], "research") for k in ("a", "b"))

        def rec(request_id: str, who: Principal, variant: str) -> UsageRecord:
            return UsageRecord(request_id=request_id, route="r", provider="fn", model="m0", stream=False, status=200,
                               latency_s=0.1, principal=who, variant=variant, experiment="exp-1",
                               episode_id="ep-1", record_id=new_record_id())

        await write_usage(s.store, [row_from_record(r) for r in (
            rec("t1", a, "v1"), rec("t2", a, "v1"), rec("t3", b, "v2"))])
        r = await s.rate({"episode_id": "ep-1", "score": 1.0}, _as(keys, "a"))
        assert r.status_code == 201, r.text
        assert {k: r.json()[k] for k in ("episode_id", "request_id", "request_ids", "requests", "experiment",
                                         "variant")} == {
            "episode_id": "ep-1", "request_id": None, "request_ids": ["t2", "t1"], "requests": 2,
            "experiment": "exp-1", "variant": "v1"}
        r = await s.rate({"episode_id": "ep-1", "label": False}, _as(keys, "b"))
        assert r.json()["variant"] == "v2" and r.json()["request_ids"] == ["t3"]
        # An episode the gateway itself recorded, rated right after its first response.
        live = await s.chat({**_as(keys, "b"), "x-test-episode": "ep-live", "x-test-variant": "v3"})
        r = await s.rate({"episode_id": "ep-live", "comment": "ok"}, _as(keys, "b"))
        assert r.status_code == 201, r.text
        assert r.json()["request_ids"] == [live.headers["x-request-id"]] and r.json()["variant"] == "v3"
        rows = await s.rows()
        assert [(x["episode_id"], x["request_id"], x["experiment"], x["variant"], x["key_id"], x["label"],
                 x["positive"]) for x in rows] == [
            ("ep-1", None, "exp-1", "v1", keys["a"][1], None, None),
            ("ep-1", None, "exp-1", "v2", keys["b"][1], "false", False),
            ("ep-live", None, "exp-1", "v3", keys["b"][1], None, None)]

        # Unknown ids are waited for (the usage writer may not have stored them yet), then 404; bounded.
        monkeypatch.setattr(service, "RECORD_WAIT_S", 0.6)
        started = time.monotonic()
        answers = await asyncio.gather(
            s.rate({"episode_id": "ep-unknown", "score": 1}, _as(keys, "a")),
            s.rate({"request_id": "t3", "score": 1}, _as(keys, "a")))  # b's request
        took = time.monotonic() - started
        assert [x.status_code for x in answers] == [404, 404]
        assert error_of(answers[0])["param"] == "episode_id" and error_of(answers[1])["param"] == "request_id"
        assert 0.6 <= took < 2.5, took
        assert len(await s.rows()) == 3


async def test_the_openai_sdk_posts_feedback(database_url: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "RECORD_WAIT_S", 0.3)
    async with serving(database_url, tmp_path, monkeypatch) as s:
        client = openai.AsyncOpenAI(base_url=str(s.http.base_url) + "/v1", api_key="unused", max_retries=0)
        done = await client.chat.completions.with_raw_response.create(
            model="r", messages=[{"role": "user", "content": "hi"}])
        rid = done.headers["x-request-id"]
        monkeypatch.setattr(service, "RECORD_WAIT_S", 2.0)
        got = await client.post("/feedback", cast_to=dict, body={"request_id": rid, "score": 4, "label": "good"})
        assert got["object"] == "feedback" and got["request_ids"] == [rid] and got["score"] == 4.0
        monkeypatch.setattr(service, "RECORD_WAIT_S", 0.3)
        with pytest.raises(openai.NotFoundError) as missing:
            await client.post("/feedback", cast_to=dict, body={"request_id": "nope", "score": 1})
        assert missing.value.code == "not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.post("/feedback", cast_to=dict, body={"request_id": rid})
        assert bad.value.code is None and "Nothing to record" in bad.value.message
        await client.close()
