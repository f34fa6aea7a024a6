"""Who is looking at a console page: the session cookie, the key behind it, its role, and CSRF.

Each page request opens its session (one indexed read) and re-checks the key against the key table (one
more), so a revoked or expired key, or a role taken away, counts from the next click, not from the next
sign-in. Every state-changing request must echo the session's CSRF token, in a form field ``csrf`` or
the ``x-csrf-token`` header; the SameSite=Strict cookie already keeps other sites' requests out, the
token also covers older browsers and same-site subdomains.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie

from adapters.adminapi import Role
from adapters.adminapi.auth import Principal
from adapters.adminapi.console_sessions import ConsoleSessions, OpenSession
from adapters.adminapi.errors import AdminError
from adapters.adminapi.host import ControlPlane
from adapters.store import StoreError
from gateway.asgi import request_id_from
from gateway.config import ConsoleCfg
from gateway.console.api import Api
from gateway.console.inprocess import InProcess
from gateway.console.nav import NAV
from gateway.console.receipts import Receipts
from gateway.console.render import PAGE_HEADERS, Assets, Templates

__all__ = ["COOKIE", "Console", "ConsoleServices", "CsrfRefused", "SignInRequired", "provide_console"]

log = logging.getLogger("llmops.console")
COOKIE = "llmops_console"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInRequired(Exception):
    """No session, or one that no longer opens: the answer is the sign-in page."""


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token."""


class ConsoleUnavailable(Exception):
    """The console cannot work here: no control plane, or its store is down."""


@dataclass
class ConsoleServices:
    """What every console handler shares (one per app, kept in `app.state.console`)."""

    plane: ControlPlane
    caller: InProcess
    templates: Templates
    assets: Assets
    receipts: Receipts
    cfg: ConsoleCfg
    routes: Callable[[], list[str]] = list  # this gateway's route names now (suggested in route fields)
    _sessions: ConsoleSessions | None = field(default=None, repr=False)

    def sessions(self) -> ConsoleSessions:
        store = self.plane.store
        if store is None:
            raise ConsoleUnavailable("The console needs the control plane (control.enabled) and it is not running")
        if self._sessions is None or getattr(self._sessions, "_store", None) is not store:
            self._sessions = ConsoleSessions(store, ttl_s=self.cfg.session_ttl_s, idle_s=self.cfg.session_idle_s)
        return self._sessions

    def cookie(self, request: Request[Any, Any, Any], token: str, *, max_age: int | None = None) -> Cookie:
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        secure = {"always": True, "never": False}.get(self.cfg.secure_cookie,
                                                      request.url.scheme == "https" or forwarded == "https")
        return Cookie(key=COOKIE, value=token, path="/console", httponly=True, samesite="strict", secure=secure,
                      max_age=int(self.cfg.session_ttl_s) if max_age is None else max_age)


@dataclass
class Console:
    """One console request: who, with which API, and how to answer."""

    request: Request[Any, Any, Any]
    user: Principal
    api: Api
    csrf: str
    services: ConsoleServices

    def can(self, role: str | Role) -> bool:
        """Whether the signed-in key holds `role` or higher: what decides which buttons a page shows."""
        return self.user.role >= Role.parse(role)

    def render(self, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200,
               headers: Mapping[str, str] | None = None) -> Response[str]:
        """A page (or, for htmx, a page it selects a fragment of) with the layout's context."""
        body = self.services.templates.render(template, {
            "console": self, "user": self.user, "csrf": self.csrf, "can": self.can, "nav": NAV,
            "path": self.request.url.path, "query": dict(self.request.query_params),
            "gateway_routes": self.services.routes(), **(context or {}),
        })
        return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                        headers={**PAGE_HEADERS, **(headers or {})})

    def redirect(self, url: str) -> Response[str]:
        """After a successful form: 303 to `url` (htmx follows `HX-Redirect` instead)."""
        return redirect(self.request, url)


def redirect(request: Request[Any, Any, Any], url: str) -> Response[str]:
    if request.headers.get("hx-request") == "true":
        return Response("", status_code=200, headers={**PAGE_HEADERS, "hx-redirect": url})
    return Response("", status_code=303, headers={**PAGE_HEADERS, "location": url})


def services_of(request: Request[Any, Any, Any]) -> ConsoleServices:
    found = getattr(request.app.state, "console", None)
    if not isinstance(found, ConsoleServices):
        raise ConsoleUnavailable("The console is not set up in this app")
    return found


def request_id_of(request: Request[Any, Any, Any]) -> str:
    """The request's id (the access layer's rule), carried into the admin calls it makes."""
    incoming = request.headers.get("x-request-id")
    return request_id_from(incoming.encode("latin-1", "replace") if incoming else None)


async def open_session(request: Request[Any, Any, Any]) -> tuple[ConsoleServices, OpenSession, Principal]:
    """The request's session and the principal its key is now: `SignInRequired` when either is gone."""
    services = services_of(request)
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired
    try:
        opened = await services.sessions().open(token)
    except StoreError as err:
        raise ConsoleUnavailable(f"The session store is unavailable: {err}") from None
    if opened is None:
        raise SignInRequired
    try:
        principal = await services.plane.check_key(
            opened.key, Role.viewer, method=request.method, path=request.url.path,
            request_id=request_id_of(request),
            source=request.client.host if request.client else None)
    except AdminError as err:
        if err.status in (401, 403):  # revoked, expired, or no longer allowed in: the session is over
            await services.sessions().end(token)
            raise SignInRequired from None
        raise ConsoleUnavailable(err.message) from None
    return services, opened, principal


async def provide_console(request: Request[Any, Any, Any]) -> Console:
    """The `console` dependency of every signed-in page; checks CSRF on state-changing methods."""
    services, opened, principal = await open_session(request)
    if request.method not in _SAFE:
        sent = request.headers.get("x-csrf-token")
        if sent is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get("csrf")
            sent = value if isinstance(value, str) else None
        if not sent or not hmac.compare_digest(sent.encode(), opened.csrf.encode()):
            raise CsrfRefused
    rid = request_id_of(request)
    client = (request.client.host, request.client.port) if request.client else None
    api = Api(services.caller, opened.key, request_id=rid, client=client)
    return Console(request=request, user=principal, api=api, csrf=opened.csrf, services=services)
