"""POST /v1/feedback refuses bad input with a 400 (413 when too large, 405 for another method) in OpenAI's error
schema, naming the field, and writes nothing; without a store it says so (501)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.testdoubles import FunctionUpstream, chat_completion
from tests.gateway.feedback.support import error_of, serving
from tests.gateway.inprocess import fn_config, in_process

R = "req-1"  # well formed; bad input is refused before any lookup
DEEP = 10_000  # deep, yet under the 64 KiB body limit


def _j(body: Any) -> bytes:
    return json.dumps(body).encode()


# (what, raw body, param the error names, a piece of its message)
CASES: list[tuple[str, bytes, str | None, str]] = [
    ("empty body", b"", None, "body is empty"),
    ("not JSON", b"score=1&request_id=r", None, "Malformed JSON"),
    ("truncated JSON", b'{"request_id": "r", "score": 1', None, "Malformed JSON"),
    ("invalid UTF-8", b'{"request_id": "r", "comment": "\xff"}', None, "Malformed JSON"),
    ("an array", b"[]", None, "Expected `object`"),
    ("null", b"null", None, "Expected `object`"),
    ("no id", _j({"score": 1}), "request_id", "exactly one of request_id"),
    ("both ids", _j({"request_id": R, "episode_id": "e", "score": 1}), "episode_id", "exactly one of request_id"),
    ("nothing to record", _j({"request_id": R}), "score", "Nothing to record"),
    ("only an empty comment", _j({"request_id": R, "comment": ""}), "score", "Nothing to record"),
    ("NaN score", b'{"request_id": "r", "score": NaN}', None, "Malformed JSON"),
    ("infinite score", b'{"request_id": "r", "score": 1e999}', "score", "out of range"),
    ("-Infinity score", b'{"request_id": "r", "score": -Infinity}', None, "Malformed JSON"),
    ("score as text", _j({"request_id": R, "score": "1"}), "score", "Expected `float | null`"),
    ("score as bool", _j({"request_id": R, "score": True}), "score", "Expected `float | null`"),
    ("label too long", _j({"request_id": R, "label": "x" * 101}), "label", "length <= 100"),
    ("empty label", _j({"request_id": R, "label": ""}), "label", "length >= 1"),
    ("label as number", _j({"request_id": R, "label": 1}), "label", "Expected `bool | str | null`"),
    ("label as object", _j({"request_id": R, "label": {"good": True}}), "label", "Expected `bool | str | null`"),
    ("label with NUL", _j({"request_id": R, "label": "a\x00b"}), "label", "NUL"),
    ("comment too long", _j({"request_id": R, "comment": "é" * 4001}), "comment", "length <= 4000"),
    ("comment as list", _j({"request_id": R, "comment": ["a"]}), "comment", "Expected `str | null`"),
    ("comment with NUL", _j({"request_id": R, "comment": "\x00"}), "comment", "NUL"),
    ("request id with a space", _j({"request_id": "a b", "score": 1}), "request_id", "x-request-id"),
    ("request id too long", _j({"request_id": "a" * 129, "score": 1}), "request_id", "length <= 128"),
    ("empty request id", _j({"request_id": "", "score": 1}), "request_id", "x-request-id"),
    ("request id as number", _j({"request_id": 7, "score": 1}), "request_id", "Expected `str | null`"),
    ("episode id too long", _j({"episode_id": "e" * 129, "score": 1}), "episode_id", "length <= 128"),
    ("episode id with NUL", _j({"episode_id": "e\x00", "score": 1}), "episode_id", "NUL"),
    ("unknown field", _j({"request_id": R, "score": 1, "rating": 5}), None, "unknown field `rating`"),
    ("nested junk", _j({"request_id": R, "score": 1, "metadata": {"a": [{"b": [1, {"c": None}]}]}}), None,
     "unknown field `metadata`"),
    ("deeply nested array", b"[" * DEEP + b"]" * DEEP, None, "Expected `object`"),
    ("deeply nested field", b'{"request_id": "r", "label": ' + b"[" * DEEP + b"]" * DEEP + b"}", "label",
     "Expected `bool | str | null`"),
    ("deeply nested unknown", b'{"x": ' + b'{"y":' * DEEP + b"1" + b"}" * DEEP + b"}", None, "unknown field `x`"),
]


async def test_bad_input_is_a_400_naming_the_field(database_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(database_url, tmp_path, monkeypatch) as s:
        for what, raw, param, message in CASES:
            r = await s.http.post("/v1/feedback", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400, (what, r.text)
            error = error_of(r)
            assert error["type"] == "invalid_request_error" and error["param"] == param, (what, error)
            assert message in error["message"], (what, error)
            assert "Traceback" not in r.text and r.headers["x-request-id"]
        big = await s.http.post("/v1/feedback", content=_j({"request_id": R, "comment": "x" * 70_000}))
        assert big.status_code == 413 and error_of(big)["code"] == "request_too_large"
        wrong = await s.http.get("/v1/feedback")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST" and error_of(wrong)["code"]
        # a well-formed body that only just fits: 100 characters of label, 4,000 of comment
        ok = await s.chat()
        r = await s.http.post("/v1/feedback", json={"request_id": ok.headers["x-request-id"], "label": "l" * 100,
                                                    "comment": "é" * 4000, "score": -1e308})
        assert r.status_code == 201, r.text
        assert [(x["label"], x["comment"], x["score"]) for x in await s.rows()] == [("l" * 100, "é" * 4000, -1e308)]
        registry = s.app.state.gateway.metrics.registry
        assert registry.get_sample_value("llmops_feedback_total", {"outcome": "invalid"}) == len(CASES) + 2


async def test_without_a_store_feedback_is_501() -> None:
    upstreams = {"fn": FunctionUpstream(lambda call: chat_completion("ok"))}
    async with in_process(fn_config(), upstreams=upstreams) as (gw, client):
        rid = (await client.post("/v1/chat/completions", json={"model": "r", "messages": [
            {"role": "user", "content": "hi"}]})).headers["x-request-id"]
        r = await client.post("/v1/feedback", json={"request_id": rid, "score": 1})
        assert r.status_code == 501
        error = error_of(r)
        assert error["code"] == "feedback_not_stored" and "control.enabled" in error["message"]
        assert gw.metrics.registry.get_sample_value("llmops_feedback_total", {"outcome": "unavailable"}) == 1
        r = await client.post("/v1/feedback", json={"score": 1})  # bad input is still a 400 first
        assert r.status_code == 400


def test_cases_are_distinct() -> None:
    assert len({what for what, *_ in CASES}) == len(CASES)
