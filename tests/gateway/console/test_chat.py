"""The chat playground: a streamed reply with its receipt (tokens, cost, latency, route), the history kept in the
page, the request in the cost API afterwards; the data plane's refusals and bad fields shown in words."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from gateway.console.api import Api
from gateway.console.inprocess import InProcess
from gateway.console.pages.chat import _relay
from gateway.console.receipts import Receipts
from tests.gateway.console.conftest import Server, shoot, sign_in
from tests.polling import until


def poll(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """`tests.polling.until` over a plain function, on its own thread (Playwright's sync API owns this one's loop)."""
    async def attempt() -> Any:
        return check()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, until(attempt, timeout_s, what, poll_s=0.1)).result()


def chat_status(server: Server, key: str | None, route: str) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + "/v1/chat/completions", headers=headers, timeout=10,
                      json={"model": route, "messages": [{"role": "user", "content": "ping"}]}).status_code


def test_a_developer_chats_on_demo_with_a_streamed_reply_a_receipt_and_the_history(
        page: Page, server: Server, api: httpx.Client) -> None:
    made = api.post("/governance/keys", json={"name": f"chat-{uuid.uuid4().hex[:8]}", "teamId": "team_default",
                                              "roles": ["developer", "inference"]}).json()["data"]
    # the data plane knows a new key within a second or so (its keys snapshot); `second` keeps `demo` uncounted
    poll(lambda: chat_status(server, made["key"], "second") == 200, "the new key on the data plane")

    sign_in(page, made["key"], "/console/chat")
    expect(page.get_by_role("heading", name="Chat playground")).to_be_visible()
    expect(page.get_by_text("has no inference role")).to_have_count(0)
    page.get_by_label("Route").select_option("demo")
    page.get_by_label("System prompt").fill("You are terse.")
    page.get_by_label("Temperature").fill("0.5")
    page.get_by_label("Max tokens").fill("64")
    page.get_by_label("Message").fill("Hello there")
    page.get_by_role("button", name="Send").click()

    log = page.locator("#chat-log")
    expect(log.locator(".msg.user")).to_have_text(re.compile("Hello there"))
    expect(log.locator(".msg.assistant")).to_contain_text("mock token reply")
    stats = log.locator(".stats")
    expect(stats).to_have_count(1)
    expect(stats.locator("[data-stat=tokens]")).to_have_text(re.compile(r"Tokens \d+ in, \d+ out"))
    expect(stats.locator("[data-stat=route]")).to_have_text("Route demo")
    expect(stats.locator("[data-stat=latency]")).to_have_text(re.compile(r"Latency \d+ ms"))
    expect(stats.locator("[data-stat=model]")).to_have_text("Model mock/mock-model")
    cost = stats.locator("[data-stat=cost]").inner_text()
    assert float(cost.removeprefix("Cost $")) > 0, cost  # mock-model is priced
    expect(page.get_by_label("Message")).to_have_value("")  # sent: the box is empty again

    page.get_by_label("Message").fill("And again")
    page.keyboard.press("Control+Enter")
    expect(log.locator(".msg")).to_have_count(4)
    expect(log.locator(".stats")).to_have_count(2)
    expect(log.locator(".msg.user").nth(1)).to_have_text(re.compile("And again"))
    shoot(page, "chat")
    assert page.problems.all() == []  # type: ignore[attr-defined]

    def counted() -> dict[str, Any] | None:
        totals = api.get("/observability/usage", params={"key_id": made["id"], "route": "demo",
                                                         "granularity": "total"}).json()["data"]["totals"]
        return totals if totals["requests"] >= 2 else None

    totals = poll(counted, "the two chats in the cost API")
    assert totals["requests"] == 2 and totals["errors"] == 0
    assert float(totals["cost_usd"]) > 0 and totals["prompt_tokens"] > 0

    page.get_by_role("button", name="Clear conversation").click()
    expect(log.locator(".msg")).to_have_count(0)
    expect(log).to_contain_text("No messages yet")


def test_a_key_without_inference_uses_public_routes_and_sees_refusals_and_field_errors(
        page: Page, server: Server, keys: dict[str, str]) -> None:
    # once a data-plane key exists (the `keys` fixture made one), routes other than public ones want a key
    poll(lambda: chat_status(server, None, "second") == 401, "the data plane requiring keys")
    sign_in(page, keys["developer"], "/console/chat")
    expect(page.get_by_text("has no inference role")).to_be_visible()
    log = page.locator("#chat-log")

    page.get_by_label("Route").select_option("demo")
    page.get_by_label("Message").fill("public route")
    page.get_by_role("button", name="Send").click()
    expect(log.locator(".msg.assistant")).to_contain_text("mock token reply")
    expect(log.locator(".stats [data-stat=route]")).to_have_text("Route demo")

    page.get_by_label("Route").select_option("second")
    page.get_by_label("Message").fill("private route")
    page.get_by_role("button", name="Send").click()
    refusal = log.locator(".msg.assistant.error")
    expect(refusal).to_contain_text("needs a key with the inference role")
    expect(refusal).to_have_attribute("role", "alert")
    expect(log.locator(".msg.user.failed")).to_have_text(re.compile("private route"))

    page.get_by_label("Route").select_option("demo")
    page.get_by_label("Temperature").fill("5")
    page.get_by_label("Max tokens").fill("0")
    page.get_by_label("Message").fill("too hot")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#f-temperature-err")).to_have_text("Must be between 0 and 2")
    expect(page.locator("#f-maxTokens-err")).to_have_text(re.compile("Must be between 1 and"))
    expect(page.get_by_label("Temperature")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Message")).to_have_value("too hot")  # kept, nothing sent
    expect(log.locator(".msg")).to_have_count(4)
    shoot(page, "chat-errors")

    page.get_by_label("Temperature").fill("")
    page.get_by_label("Max tokens").fill("")
    page.get_by_role("button", name="Send").click()
    expect(log.locator(".msg")).to_have_count(6)
    expect(page.locator("#f-temperature-err")).to_be_hidden()


def test_the_send_endpoint_refuses_bad_input_by_field_and_needs_the_csrf_token(page: Page,
                                                                              keys: dict[str, str]) -> None:
    sign_in(page, keys["viewer"], "/console/chat")
    csrf = page.locator("body").get_attribute("data-csrf") or ""
    headers = {"x-csrf-token": csrf, "content-type": "application/json"}
    good = {"route": "demo", "messages": [{"role": "user", "content": "hi"}]}

    def send(payload: Any, **extra: Any) -> Any:
        return page.request.post("/console/chat/send", headers={**headers, **extra}, data=payload)

    assert send("{not json").status == 422
    cases = [({**good, "route": ""}, "route"), ({**good, "messages": []}, "messages"),
             ({**good, "messages": [{"role": "robot", "content": "x"}]}, "messages"),
             ({**good, "temperature": 2.5}, "temperature"), ({**good, "maxTokens": 1.5}, "maxTokens"),
             ({**good, "temperature": True}, "temperature")]
    for payload, field in cases:
        answer = send(payload)
        assert answer.status == 422, (payload, answer.text())
        assert field in answer.json()["errors"], (payload, answer.json())

    streamed = send(good)
    assert streamed.status == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["cache-control"] == "no-cache"
    text = streamed.text()
    assert "\"content\":\" token\"" in text and "event: receipt" in text and "[DONE]" not in text
    assert text.index("event: receipt") > text.rindex("data: {\"id\"")  # the receipt comes last

    missing = page.request.post("/console/chat/send", headers={"content-type": "application/json"}, data=good,
                                max_redirects=0)
    assert missing.status == 403


def stand_in(app: Any) -> Any:
    """A console whose data plane is `app` (an ASGI callable), signed in with an inference key."""
    return SimpleNamespace(user=SimpleNamespace(roles=("inference",)), api=Api(InProcess(app), "k"),
                           services=SimpleNamespace(receipts=Receipts()), request=None)


def run_async(scenario: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's loop
        return pool.submit(asyncio.run, scenario).result()


def test_refusals_and_failures_mid_stream_become_error_events_in_words() -> None:
    async def refusing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 429, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": {"message": "Rate limit of 1 rpm reached"}}'})

    async def breaking(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for frame in (b'data: {"model":"m","choices":[{"delta":{"content":"par"}}]}\n\n',
                      b'data: {"error": {"message": "upstream mock timed out mid-stream"}}\n\n', b"data: [DONE]\n\n"):
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def events(app: Any) -> list[bytes]:
        console = stand_in(app)
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        out = [chunk async for chunk in _relay(console, body, "console-x")]
        await asyncio.sleep(0)  # the future's done-callback runs on the next turn of the loop
        assert console.services.receipts._waiting == {}
        return out

    refused = run_async(events(refusing))
    assert len(refused) == 1 and refused[0].startswith(b"event: error\n")
    assert b"Too many requests (429): Rate limit of 1 rpm reached" in refused[0]

    broken = run_async(events(breaking))  # no usage record comes: the receipt is the stream's own, after 2 s
    assert [e.split(b"\n")[0] for e in broken] == [b'data: {"model":"m","choices":[{"delta":{"content":"par"}}]}',
                                                   b"event: error", b"event: receipt"]
    assert b"The reply stopped: upstream mock timed out mid-stream" in broken[1]
    assert b'"partial":true' in broken[2] and b'"costUsd":null' in broken[2]


def test_a_browser_that_goes_away_mid_stream_ends_the_data_plane_call() -> None:
    """What Litestar does when the browser disconnects (it cancels the streaming task) reaches the data plane as
    `http.disconnect`, and the receipt stops waiting; a stand-in app streams until told."""
    async def scenario() -> tuple[bool, int, int, int]:
        gone = asyncio.Event()
        sent: list[int] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            while (await receive()).get("more_body"):
                pass

            async def watch() -> None:
                if (await receive())["type"] == "http.disconnect":
                    gone.set()

            watcher = asyncio.create_task(watch())
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"x-llmops-route", b"slow")]})
            while not gone.is_set() and len(sent) < 10_000:
                chunk = b'data: {"model":"m","choices":[{"delta":{"content":"x"}}]}\n\n'
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent.append(1)
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            watcher.cancel()

        console = stand_in(app)
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        got: list[bytes] = []
        three = asyncio.Event()

        async def browser() -> None:
            async for chunk in _relay(console, body, "console-test"):
                got.append(chunk)
                if len(got) == 3:
                    three.set()

        reading = asyncio.create_task(browser())
        await asyncio.wait_for(three.wait(), 5)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await asyncio.wait_for(gone.wait(), 5)
        at_disconnect = len(sent)
        await asyncio.sleep(0.1)
        return gone.is_set(), at_disconnect, len(sent), len(console.services.receipts._waiting)

    disconnected, at_disconnect, after, waiting = run_async(scenario())
    assert disconnected and after <= at_disconnect + 1 and at_disconnect < 10_000
    assert waiting == 0  # the receipt's future was dropped
