"""Every console page, found by following the console's own links from the overview: each loads without a console
error, an uncaught script error, a failed request or an error answer, fits 390 px, and is saved as screenshots at
both widths. A viewer's crawl finds no control that would change anything.

Named to run last in this folder, so the pages of what the other tests created (endpoints, models, jobs, runs …)
are crawled too; alone it still crawls every section's pages.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

from playwright.sync_api import Page

from gateway.console.nav import NAV
from tests.gateway.console.conftest import shoot, sign_in

PER_SHAPE = 2  # pages of one shape (same path with other ids) crawled
LIMIT = 160
SKIP = re.compile(r"/console/(static/|logout)|/export|\.csv|\.json$|download")
# POST forms a viewer may still see: signing out, and the review of items assigned to them
VIEWER_POSTS = re.compile(r"^/console/(logout|evaluation/.*review.*|chat/send)")


def _shape(url: str) -> str:
    parts = urlsplit(url)
    path = re.sub(r"/[^/]*\d[^/]*", "/*", parts.path)  # ids and version numbers
    keys = sorted({k.split("=")[0] for k in parts.query.split("&") if k and not k.startswith("page=")})
    return path + ("?" + "&".join(keys) if keys else "")


LINKS = "els => els.map(e => e.getAttribute('href'))"
POSTS = "els => els.map(e => e.getAttribute('action') || '')"


def _crawl(page: Page, *, shots: bool, allow: frozenset[int] = frozenset(),
           on_page: Callable[[str], None] | None = None, per_shape: int = PER_SHAPE) -> list[str]:
    queue = ["/console", *(item.href for item in NAV)]
    seen: set[str] = set()
    shapes: Counter[str] = Counter()
    visited: list[str] = []
    while queue and len(visited) < LIMIT:
        url = queue.pop(0)
        if url in seen or shapes[_shape(url)] >= per_shape:
            continue
        seen.add(url)
        shapes[_shape(url)] += 1
        response = page.goto(url)
        assert response is not None
        assert response.status == 200 or response.status in allow, f"{url}: HTTP {response.status}"
        visited.append(url)
        if shots and shapes[_shape(url)] == 1:  # one pair of screenshots per kind of page
            shape = _shape(url).removeprefix("/console").replace("*", "id")
            shoot(page, "page" + re.sub(r"[^A-Za-z0-9]+", "-", shape).rstrip("-"))
        if on_page is not None:
            on_page(url)
        hrefs: list[str] = page.eval_on_selector_all("a[href^='/console']", LINKS)
        queue += [h.split("#")[0] for h in hrefs if not SKIP.search(h) and h.split("#")[0] not in seen]
    return visited


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(e => e.tagName === 'BUTTON' ? !e.textContent.trim() && !e.getAttribute('aria-label')
                                      : !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                                        && !e.getAttribute('aria-labelledby'))
  .map(e => e.outerHTML.slice(0, 120))"""


def test_every_page_loads_cleanly_for_an_admin(page: Page, keys: dict[str, str]) -> None:
    sign_in(page, keys["admin"])
    unlabelled: list[str] = []

    def every_control_is_named(url: str) -> None:
        unlabelled.extend(f"{url}: {html}" for html in page.evaluate(UNLABELLED))

    visited = _crawl(page, shots=True, on_page=every_control_is_named)
    assert {item.href for item in NAV} <= set(visited)
    assert not unlabelled, "form controls without a label:\n" + "\n".join(unlabelled)
    problems = page.problems.all()  # type: ignore[attr-defined]
    assert not problems, "\n".join(problems)


def test_a_viewer_finds_nothing_that_changes_anything(page: Page, keys: dict[str, str]) -> None:
    sign_in(page, keys["viewer"])
    offending: list[str] = []

    def no_changes_offered(url: str) -> None:
        for action in page.eval_on_selector_all("form[method=post], form[method=POST], form[data-upload]", POSTS):
            if not VIEWER_POSTS.match(urlsplit(action or url).path):
                offending.append(f"{url}: a form posting to {action or url}")

    # one page of each kind is enough to see which controls a role is offered; keys and audit are operator's (403)
    visited = _crawl(page, shots=False, allow=frozenset({403}), on_page=no_changes_offered, per_shape=1)
    assert {item.href for item in NAV} <= set(visited)
    assert not offending, "\n".join(offending)
    # the pages a viewer may not open answer 403, which the browser also logs as a console error
    refused = re.compile(r": 403$|status of 403 \(Forbidden\)")
    unexpected = [p for p in page.problems.all() if not refused.search(p)]  # type: ignore[attr-defined]
    assert not unexpected, "\n".join(unexpected)
