"""The web console at `/console`: server-rendered pages over the admin API, signed in with an API key.

Pages are Jinja templates with htmx and one vendored chart library (uPlot); no Node.js at install or run
time. The console holds no data of its own: every page calls the admin API (and the playground the
data plane) in-process as the signed-in key (`inprocess.py`, `api.py`), so the API's permission table,
validation and audit log apply to the console exactly as to any other client. Sessions are rows in the
control plane's store (`adapters/adminapi/console_sessions.py`), shared by every replica and worker.

Each section is a module under `pages/` exporting `HANDLERS`; `session.provide_console` is the
`console` dependency that signs a request in and checks its CSRF token.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException

from adapters.adminapi import Role
from adapters.adminapi.errors import AdminError
from adapters.adminapi.host import ControlPlane
from adapters.store import StoreError
from gateway.config import ConsoleCfg
from gateway.console.api import ApiError
from gateway.console.forms import Form
from gateway.console.inprocess import InProcess
from gateway.console.nav import NAV
from gateway.console.pages import HANDLERS as PAGE_HANDLERS
from gateway.console.receipts import Receipts
from gateway.console.render import PAGE_HEADERS, Assets, Templates
from gateway.console.session import (
    COOKIE,
    Console,
    ConsoleServices,
    ConsoleUnavailable,
    CsrfRefused,
    SignInRequired,
    provide_console,
    redirect,
    request_id_of,
    services_of,
)

__all__ = ["ConsoleServices", "console_problem", "console_router", "console_services"]

log = logging.getLogger("llmops.console")
LOGIN_COOKIE = "llmops_console_login"  # the sign-in form's own CSRF token (double submit), before any session


def console_services(plane: ControlPlane, cfg: ConsoleCfg,
                     routes: Callable[[], list[str]] = list) -> ConsoleServices:
    """What the console's handlers share; `caller.app` is set once the whole ASGI app exists. `routes`: the
    gateway's route names as they are now (a reload changes them)."""
    assets = Assets()
    return ConsoleServices(plane=plane, caller=InProcess(), templates=Templates(assets), assets=assets,
                           receipts=Receipts(), cfg=cfg, routes=routes)


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: only a console path of this site (no `//host`, no scheme)."""
    if not value:
        return "/console"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console") or value.startswith("//"):
        return "/console"
    return value


def _login_page(request: Request[Any, Any, Any], form: Form, *, status: int = 200) -> Response[str]:
    services = services_of(request)
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    body = services.templates.render("login.html", {
        "form": form, "login_csrf": token, "next": _safe_next(request.query_params.get("next") or form.get("next")),
    })
    response: Response[str] = Response(body, status_code=status, media_type="text/html; charset=utf-8",
                                       headers=PAGE_HEADERS)
    response.set_cookie(Cookie(key=LOGIN_COOKIE, value=token, path="/console/login", httponly=True,
                               samesite="strict", max_age=3600))
    return response


@get("/login", name="console-login")
async def login_form(request: Request[Any, Any, Any]) -> Response[str]:
    return _login_page(request, Form.of({"next": request.query_params.get("next", "")}))


@post("/login", name="console-login-submit", status_code=200)
async def login(request: Request[Any, Any, Any]) -> Response[str]:
    """Sign in with an API key of role viewer or higher; a data-plane-only key is refused (403)."""
    services = services_of(request)
    form = await Form.read(request)
    sent = str(form.values.pop("login_csrf", ""))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(sent, expected):
        form.message = "The sign-in form expired. Please try again."
        return _login_page(request, form, status=403)
    key = form.text("key", required=True, max_chars=500)
    form.values.pop("key", None)  # never echoed back into the page
    if key is None:
        return _login_page(request, form, status=422)
    try:
        principal = await services.plane.check_key(
            key, Role.viewer, method="POST", path="/console/login", request_id=request_id_of(request),
            source=request.client.host if request.client else None)
    except AdminError as err:
        if err.status == 403:
            form.errors["key"] = ("This key is for the data plane only (role inference); the console needs a key "
                                  "with role viewer, developer, operator or admin.")
        elif err.status == 401:
            form.errors["key"] = "This key is not valid: unknown, revoked or expired."
        else:
            form.message = err.message
        return _login_page(request, form, status=err.status)
    try:
        sessions = services.sessions()
        await sessions.purge()  # expired and idle sessions go at each sign-in: one indexed delete
        token = await sessions.create(key, principal.key_id)
    except (StoreError, ConsoleUnavailable) as err:
        form.message = f"Cannot sign in right now: {err}"
        return _login_page(request, form, status=503)
    log.info("console sign-in", extra={"fields": {"key_id": principal.key_id, "role": principal.role.name}})
    response = redirect(request, _safe_next(form.get("next")))
    response.set_cookie(services.cookie(request, token))
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@post("/logout", name="console-logout", status_code=200)
async def logout(request: Request[Any, Any, Any], console: Console) -> Response[str]:
    token = request.cookies.get(COOKIE, "")
    await console.services.sessions().end(token)
    response = redirect(request, "/console/login")
    response.set_cookie(console.services.cookie(request, "", max_age=0))
    return response


@get("/", name="console-home")
async def home(console: Console) -> Response[str]:
    """The sections, and this gateway's upstreams (circuit state, in-flight requests) with a config reload."""
    try:
        upstreams = await console.api.get("/gateway/upstreams")
        problem = None
    except ApiError as err:
        if err.status in (401, 403):
            raise
        upstreams, problem = {}, err.message
    reloaded = console.request.query_params.get("reloaded")
    return console.render("home.html", {"sections": NAV, "upstreams": upstreams, "upstreams_problem": problem,
                                        "reloaded": reloaded})


@post("/gateway/reload", name="console-reload", status_code=200)
async def reload_config(console: Console) -> Response[str]:
    """`POST /gateway/reload` (admin): the config file is read again; a refusal is shown in words."""
    try:
        await console.api.send("POST", "/gateway/reload")
    except ApiError as err:
        if err.status in (401, 403):
            raise
        return console.redirect("/console?" + urlencode({"reloaded": f"refused: {err.message}"[:300]}))
    return console.redirect("/console?reloaded=ok")


@get("/static/{name:path}", name="console-static")
async def static(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
    found = services_of(request).assets.answer(request, name.lstrip("/"))
    if found is None:
        raise NotFoundException(f"Unknown console file {name!r}")
    return found


def _problem(request: Request[Any, Any, Any], status: int, title: str, message: str) -> Response[str]:
    try:
        templates = services_of(request).templates
        body = templates.render("problem.html", {"status": status, "title": title, "message": message})
    except ConsoleUnavailable:
        body = f"<!doctype html><title>{status}</title><p>{title}</p>"
    return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def _sign_in(request: Request[Any, Any, Any], _: Exception) -> Response[str]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = redirect(request, "/console/login?" + _query({"next": target if request.method == "GET" else ""}))
    response.delete_cookie(COOKIE, path="/console")
    return response


def _query(params: dict[str, str]) -> str:
    return urlencode({k: v for k, v in params.items() if v})


def _csrf(request: Request[Any, Any, Any], _: Exception) -> Response[str]:
    return _problem(request, 403, "This form has expired",
                    "The page was opened in an earlier session. Reload it and try again.")


def _api_error(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    assert isinstance(exc, ApiError)
    if exc.status == 401:
        return _sign_in(request, exc)
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 503: "Unavailable"}
    return _problem(request, exc.status, titles.get(exc.status, f"Error {exc.status}"), exc.message)


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    return _problem(request, 503, "The console is unavailable", str(exc))


def _not_found(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    return _problem(request, 404, "Not found", f"There is no console page at {request.url.path}.")


def console_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    """What the app's last-resort handler answers under /console: an unknown page, a wrong method, a crash."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return _not_found(request, exc)
    if status >= 500:
        log.error("console error on %s", request.url.path, exc_info=exc)
        return _problem(request, status, "Something went wrong", "The console could not show this page. "
                        "The error is in the gateway's log.")
    return _problem(request, status, f"Error {status}", str(exc.detail if isinstance(exc, HTTPException) else exc))


def console_router() -> Router:
    """Every `/console` route; the app must hold a `ConsoleServices` in `app.state.console`."""
    return Router(
        "/console",
        route_handlers=[login_form, login, logout, home, reload_config, static, *PAGE_HANDLERS],
        dependencies={"console": Provide(provide_console)},
        exception_handlers={SignInRequired: _sign_in, CsrfRefused: _csrf, ApiError: _api_error,
                            ConsoleUnavailable: _unavailable, NotFoundException: _not_found},
        include_in_schema=False,
    )
