"""Signing in and out of the console, in Chromium: cookie flags, roles at the door, CSRF, revocation."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import Server, shoot, sign_in


def test_sign_in_sets_a_strict_httponly_session_and_sign_out_ends_it(page: Page, server: Server, keys: dict[str, str],
                                                                      api: httpx.Client) -> None:
    page.goto("/console/governance/audit")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))  # no session: the sign-in page, remembering where
    shoot(page, "sign-in")
    page.get_by_label("API key").fill(keys["operator"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/console/governance/audit$"))
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "llmops_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert keys["operator"] not in cookie["value"]  # the cookie is a session token, never the key
    assert page.evaluate("document.cookie") == ""  # HttpOnly: invisible to scripts
    # the sign-in itself is not in the audit log (it changes nothing); the admin calls it made are the key's own
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login"))
    assert not [c for c in page.context.cookies() if c["name"] == "llmops_console"]
    # the old cookie, replayed, opens nothing: sign-out deleted the session itself
    replay = httpx.get(server.url + "/console/governance/audit", cookies={"llmops_console": cookie["value"]})
    assert replay.status_code == 303 and "/console/login" in replay.headers["location"]


def test_a_data_plane_only_key_cannot_sign_in(page: Page, keys: dict[str, str]) -> None:
    page.goto("/console/login")
    page.get_by_label("API key").fill(keys["inference"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("This key is for the data plane only")).to_be_visible()
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("API key")).to_have_value("")  # the key is never echoed back into the page
    assert not [c for c in page.context.cookies() if c["name"] == "llmops_console"]


def test_a_wrong_key_is_refused_beside_the_field(page: Page) -> None:
    page.goto("/console/login")
    page.get_by_label("API key").fill("llmops_0123456789abcdef_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("This key is not valid")).to_be_visible()


def test_a_revoked_key_loses_its_session_at_the_next_click(page: Page, api: httpx.Client) -> None:
    made = api.post("/governance/keys", json={"name": "console-short-lived", "teamId": "team_default",
                                              "roles": ["viewer"]}).json()["data"]
    sign_in(page, made["key"])
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert api.post(f"/governance/keys/{made['id']}/revoke").status_code == 200
    page.goto("/console")
    expect(page).to_have_url(re.compile(r"/console/login"))


def test_a_form_without_the_session_csrf_token_is_refused(server: Server, keys: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url) as client:
        form = client.get("/console/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert token is not None
        signed = client.post("/console/login", data={"login_csrf": token.group(1), "key": keys["admin"]})
        assert signed.status_code == 303
        page = client.get("/console")
        csrf = re.search(r'data-csrf="([^"]+)"', page.text)
        assert csrf is not None
        for sent in ({}, {"csrf": "forged"}):
            refused = client.post("/console/governance/keys/new", data={"name": "csrf-test", "teamId": "team_default",
                                                                         "roles": "viewer", **sent})
            assert refused.status_code == 403 and "expired" in refused.text
        assert client.post("/console/governance/keys/new", data={
            "name": "csrf-test", "teamId": "team_default", "roles": "viewer", "csrf": csrf.group(1)}).status_code == 201


def test_the_sign_in_form_refuses_a_post_from_elsewhere(server: Server, keys: dict[str, str]) -> None:
    """Login CSRF: a sign-in form posted from another site carries no token matching this browser's cookie."""
    answer = httpx.post(server.url + "/console/login", data={"key": keys["admin"], "login_csrf": "x"})
    assert answer.status_code == 403 and "llmops_console=" not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/elsewhere"])
def test_sign_in_only_returns_to_console_pages(page: Page, keys: dict[str, str], target: str) -> None:
    sign_in(page, keys["viewer"], next_path=target)
    assert page.url.endswith("/console")


def test_an_unknown_console_page_is_a_page_not_json(page: Page, keys: dict[str, str]) -> None:
    sign_in(page, keys["viewer"])
    answer = page.goto("/console/no-such-page")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()


def test_signing_in_and_reaching_a_section_by_keyboard_alone(page: Page, keys: dict[str, str]) -> None:
    page.goto("/console/login")
    page.keyboard.press("Tab")  # the key field is the first control
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(keys["viewer"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()  # the first stop skips the menu
    for _ in range(12):  # the menu's links come next, in order
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Models":
            break
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/console/catalog/models$"))
