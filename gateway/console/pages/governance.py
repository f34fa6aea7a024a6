"""Governance: policies with their versions, keys and teams, and the audit log (`/console/governance/...`)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post

from adapters.adminapi.rbac import ROLE_NAMES
from adapters.dataplane import DEFAULT_TEAM_ID
from gateway.console.api import ApiError
from gateway.console.forms import Form
from gateway.console.pages.common import list_query
from gateway.console.session import Console

__all__ = ["HANDLERS"]

_KEY_FILTERS = ("teamId", "role", "includeRevoked")
_AUDIT_FILTERS = ("actor", "action", "resourceType", "resourceId", "outcome", "since", "until")


@get("/governance", name="console-governance")
async def governance(console: Console) -> Response[str]:
    return console.redirect("/console/governance/policies")


@get("/governance/keys", name="console-keys")
async def keys(console: Console) -> Response[str]:
    listing = await console.api.list("/governance/keys", list_query(console, _KEY_FILTERS))
    return console.render("governance/keys.html", {"listing": listing, "roles": ROLE_NAMES})


async def _teams(console: Console) -> list[tuple[str, str]]:
    listing = await console.api.list("/governance/teams", {"pageSize": 200})
    return [(t["id"], t["name"]) for t in listing.items]


@get("/governance/keys/new", name="console-key-new")
async def new_key(console: Console) -> Response[str]:
    form = Form.of({"teamId": DEFAULT_TEAM_ID, "roles": []})
    return console.render("governance/key_form.html", {"form": form, "teams": await _teams(console),
                                                       "roles": ROLE_NAMES})


@post("/governance/keys/new", name="console-key-create", status_code=200)
async def create_key(console: Console) -> Response[str]:
    """The new key's secret is shown on the answer page, this once (it is never stored in clear)."""
    form = await Form.read(console.request)
    body: dict[str, Any] = {"name": form.text("name", required=True), "teamId": form.text("teamId", required=True),
                            "roles": form.many("roles")}
    if routes := form.words("allowedRoutes"):
        body["allowedRoutes"] = routes
    if expires := form.text("expiresAt"):
        body["expiresAt"] = expires
    form.values["roles"] = body["roles"]
    if form.ok:
        try:
            created = await console.api.send("POST", "/governance/keys", body)
        except ApiError as err:
            form.fail(err, ["name", "teamId", "roles", "allowedRoutes", "expiresAt"])
        else:
            return console.render("governance/key_created.html", {"key": created}, status=201)
    return console.render("governance/key_form.html", {"form": form, "teams": await _teams(console),
                                                       "roles": ROLE_NAMES}, status=422)


@post("/governance/keys/{key_id:str}/revoke", name="console-key-revoke", status_code=200)
async def revoke_key(console: Console, key_id: str) -> Response[str]:
    await console.api.send("POST", f"/governance/keys/{key_id}/revoke")
    return console.redirect("/console/governance/keys")


@get("/governance/audit", name="console-audit")
async def audit(console: Console) -> Response[str]:
    query = list_query(console, _AUDIT_FILTERS)
    form = Form.of(console.request.query_params)
    try:
        listing = await console.api.list("/audit/logs", query)
    except ApiError as err:
        if err.status != 400:
            raise
        form.fail(err, _AUDIT_FILTERS)  # a filter the API refused (a malformed date) is shown beside it
        listing = None
    return console.render("governance/audit.html", {"listing": listing, "form": form})


HANDLERS: list[Any] = [governance, keys, new_key, create_key, revoke_key, audit]
