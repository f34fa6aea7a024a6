"""The console's browser tests: one real `llmops serve` on SQLite for the whole session, driven by Debian's
Chromium through Playwright (never a downloaded browser), with keys of every role.

- `server`: the gateway (embedded default plus a priced mock route), its URL and the bootstrap admin key.
- `keys`: a stored key per role (`viewer`, `developer`, `operator`, `admin`, `inference`).
- `api` / `api_as(key)`: httpx clients on the admin API (`/llm-ops/v1`), to set up state and check results.
- `page`: a fresh browser context at 1280 x 900; what went wrong in it (console errors, page errors, failed
  requests, HTTP ≥ 400 answers to sub-requests) is collected in `page.problems` (see `Problems`).
- `sign_in(page, key)`, `shoot(page, name)`: sign in through the form; screenshot at 1280 and 390 px into
  `$LLMOPS_TEST_ARTIFACTS/console/` (default `artifacts/console/`).

Tests wait on what the page shows (Playwright's auto-waiting `expect`), never on fixed sleeps.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, sync_playwright

from tests.serve_process import serve, stop, wait_ready

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[3]
ROLES = ("viewer", "developer", "operator", "admin", "inference")
WIDTHS = (1280, 390)



@dataclass(frozen=True)
class Server:
    url: str
    admin_key: str
    data_dir: Path


def _config(data_dir: Path) -> dict[str, Any]:
    return {
        "server": {"log_level": "warning"},
        "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
        "routes": [{"name": "demo", "targets": [{"provider": "mock", "model": "mock-model"}]},
                   {"name": "second", "targets": [{"provider": "mock", "model": "mock-model-2"}]}],
        "pricing": {"use_litellm_map": False, "models": [
            {"model": "mock-model", "input_per_mtok": "1.5", "output_per_mtok": "6"},
            {"model": "mock-model-2", "input_per_mtok": "3", "output_per_mtok": "12"}]},
        "metering": {"flush_interval_s": 0.05},
        "plugins": [{"name": "auth", "settings": {"public_routes": ["demo"]}}],
        "control": {"data_dir": str(data_dir)},
    }


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("console")
    admin_key = "console-test-" + secrets.token_urlsafe(16)
    env = {"LLMOPS_ADMIN_KEY": admin_key, "LLMOPS_DATABASE_URL": ""}
    proc, url = serve(tmp, "gateway", _config(tmp / "data"), env=env)
    try:
        wait_ready(url, proc, within_s=90)
        yield Server(url=url, admin_key=admin_key, data_dir=tmp / "data")
    finally:
        stop(proc)


def _client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/llm-ops/v1", headers={"authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="session")
def api(server: Server) -> Iterator[httpx.Client]:
    """The admin API as the bootstrap admin."""
    with _client(server, server.admin_key) as client:
        yield client


@pytest.fixture(scope="session")
def api_as(server: Server) -> Iterator[Callable[[str], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(key: str) -> httpx.Client:
        clients.append(_client(server, key))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def keys(api: httpx.Client) -> dict[str, str]:
    """A stored key per role, in the default team; `inference` is a data-plane-only key."""
    made: dict[str, str] = {}
    for role in ROLES:
        answer = api.post("/governance/keys",
                          json={"name": f"console-{role}", "teamId": "team_default", "roles": [role]})
        assert answer.status_code == 201, answer.text
        made[role] = answer.json()["data"]["key"]
    return made


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, per test module: Playwright's sync API runs an event loop in this thread while it is open,
    which would stop every asyncio test after it, so it never outlives the module that needs it."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (./dev test installs it; never a downloaded one)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Problems:
    """What went wrong in a page: console errors, uncaught page errors, failed and refused requests."""

    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    http: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [*self.console, *self.page_errors, *self.failed, *self.http]


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """A fresh context (no cookies) at 1280 x 900; `page.problems` collects what went wrong in it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    context.set_default_timeout(15_000)
    opened = context.new_page()
    problems = Problems()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.console.append(f"{opened.url}: {message.text}")

    def on_failed(request: Request) -> None:
        if request.failure == "net::ERR_ABORTED":  # cancelled by the browser itself, e.g. by navigating away
            return
        problems.failed.append(f"{request.method} {request.url}: {request.failure}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.http.append(f"{response.request.method} {response.url}: {response.status}")

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: problems.page_errors.append(f"{opened.url}: {error}"))
    opened.on("requestfailed", on_failed)
    opened.on("response", on_response)
    opened.problems = problems  # type: ignore[attr-defined]
    try:
        yield opened
    finally:
        context.close()


def sign_in(page: Page, key: str, next_path: str = "") -> None:
    """Through the sign-in form, as a person would; lands on `next_path` (or the overview)."""
    page.goto("/console/login" + (f"?next={quote(next_path, safe='/')}" if next_path else ""))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/console/login" not in url)


def artifacts() -> Path:
    path = Path(os.environ.get("LLMOPS_TEST_ARTIFACTS") or REPO / "artifacts") / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shoot(page: Page, name: str) -> list[Path]:
    """The page as it is now, full length, at 1280 and 390 px wide (the viewport is put back after).

    At each width the page must fit: no sideways scrolling of the whole page (wide tables and code scroll
    inside their own boxes)."""
    original = page.viewport_size or {"width": 1280, "height": 900}
    saved = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900 if width > 600 else 844})
        page.evaluate("window.llmopsConsole && window.llmopsConsole.drawAll()")  # charts at this width, now
        target = artifacts() / f"{name}-{width}.png"
        page.screenshot(path=str(target), full_page=True)
        saved.append(target)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} at {width} px is {overflow} px too wide (see {target})"
    page.set_viewport_size(original)
    return saved


def no_horizontal_scroll(page: Page) -> bool:
    """Whether the page fits its viewport's width (tables scroll inside their own boxes)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser flows wait on real jobs and a shared server's start: a longer bound than the suite's 120 s."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.timeout(300))
