"""Governance: policies with their versions, keys and teams, and the audit log (`/console/governance/...`).

Policies (reads: viewer; changes: operator) are edited as a JSON document with the scope's teams in a field of
their own; every save is the policy's next version, and any two versions can be compared (`json_diff`, a
readable list of added, removed and changed paths, computed here). Teams (reads: viewer; changes: admin) carry
limits, a budget and allowed models; their keys are listed on the keys page filtered by team.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from litestar import Response, get, post
from litestar.exceptions import NotFoundException

from adapters.adminapi.rbac import ROLE_NAMES
from adapters.dataplane import DEFAULT_TEAM_ID
from gateway.console.api import ApiError
from gateway.console.forms import Form
from gateway.console.pages.common import filtered_list, list_query
from gateway.console.session import Console

__all__ = ["HANDLERS", "Change", "json_diff"]

_KEY_FILTERS = ("teamId", "role", "includeRevoked")
_AUDIT_FILTERS = ("actor", "action", "resourceType", "resourceId", "outcome", "since", "until")
_POLICY_FILTERS = ("name", "team", "enabled")
_TEAM_FILTERS = ("name",)
_SETTINGS_FIELDS = ("allowedModels", "rpm", "tpm", "maxConcurrent", "budgetUsd", "budgetPeriod")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_VERSION = 2**31 - 1

# What a new policy's document starts as: small and valid (the scope's teams have their own field).
POLICY_EXAMPLE: dict[str, Any] = {
    "models": {"allow": ["*"], "deny": []},
    "limits": {"requestsPerMinute": 600, "tokensPerMinute": 100000},
}
# Every section of a document, for the schema page.
POLICY_FULL_EXAMPLE: dict[str, Any] = {
    "scope": {"teams": ["search", "ads"]},
    "models": {"allow": ["gpt-4o*", "ollama/llama3"], "deny": ["gpt-4o-realtime*"]},
    "limits": {"requestsPerMinute": 600, "tokensPerMinute": 100000, "maxConcurrentRequests": 20},
    "budget": {"limitUsd": 500.0, "period": "monthly", "onExceed": "block", "alertAtPercent": [50, 80]},
    "guardrails": [
        {"kind": "pii", "entities": ["email", "phone"], "action": "redact", "applyTo": "both"},
        {"kind": "blocked_terms", "terms": ["project x"], "action": "block", "applyTo": "input"},
        {"kind": "max_input", "maxChars": 20000},
    ],
}


def _checked_id(value: str) -> str:
    """A resource id from the URL, before it goes into an API path: anything else is an unknown page."""
    if not _ID.fullmatch(value):
        raise NotFoundException(f"Unknown id {value!r}")
    return value


def _not_allowed(console: Console, role: str, what: str) -> ApiError:
    return ApiError(403, f"{what} needs role {role}; this key has role {console.user.role.name}.")


def _compact(value: Any) -> Any:
    """A JSON value without its null members (the API answers every optional field, set or not)."""
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _shown(document: Any) -> str:
    """A policy document to read: without nulls or an empty guardrails list, in the API's field order."""
    document = _compact(document)
    if isinstance(document, dict) and not document.get("guardrails"):
        document.pop("guardrails", None)
    return _pretty(document)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _one_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- diff -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between two JSON values: `kind` is added, removed or changed; values as JSON text."""

    kind: str
    path: str
    before: str | None = None
    after: str | None = None


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _nested(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(v, dict | list) for v in value)


def json_diff(before: Any, after: Any, path: str = "") -> list[Change]:
    """The differences from `before` to `after`, by dotted path (`document.limits.tokensPerMinute`).

    Objects are compared member by member; lists of objects item by item (`guardrails[1].action`); a list of
    plain values (teams, model patterns) is one value, shown whole. A member only on one side is one added or
    removed entry with its whole value."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[Change] = []
        for key in [*before, *(k for k in after if k not in before)]:
            sub = _child(path, key)
            if key not in after:
                changes.append(Change("removed", sub, before=_one_line(before[key])))
            elif key not in before:
                changes.append(Change("added", sub, after=_one_line(after[key])))
            else:
                changes += json_diff(before[key], after[key], sub)
        return changes
    if isinstance(before, list) and isinstance(after, list) and (_nested(before) or _nested(after)):
        changes = []
        for i in range(max(len(before), len(after))):
            sub = _child(path, i)
            if i >= len(after):
                changes.append(Change("removed", sub, before=_one_line(before[i])))
            elif i >= len(before):
                changes.append(Change("added", sub, after=_one_line(after[i])))
            else:
                changes += json_diff(before[i], after[i], sub)
        return changes
    if before == after and type(before) is type(after):
        return []
    return [Change("changed", path or "(value)", before=_one_line(before), after=_one_line(after))]


def _content(version: Mapping[str, Any]) -> dict[str, Any]:
    """What a version holds that a person changes: its name, description, enabled flag and document."""
    return {"name": version.get("name"), "description": version.get("description", ""),
            "enabled": version.get("enabled"), "document": _compact(version.get("document"))}


# -- the schema page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaField:
    name: str
    required: bool
    kind: str
    refs: list[str]
    rules: list[str]


@dataclass(frozen=True)
class SchemaSection:
    name: str
    description: str
    fields: list[SchemaField] = field(default_factory=list)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _one_line(value)


_RULES = (("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"), ("exclusiveMaximum", "< {}"),
          ("minLength", "at least {} characters"), ("maxLength", "at most {} characters"),
          ("minItems", "at least {} items"), ("maxItems", "at most {} items"))


def _rules(prop: Mapping[str, Any]) -> list[str]:
    rules = [text.format(_number(prop[key])) for key, text in _RULES if key in prop]
    if prop.get("uniqueItems"):
        rules.append("no repeats")
    if "pattern" in prop:
        rules.append(f"matches {prop['pattern']}")
    if "default" in prop:
        rules.append(f"default {_one_line(prop['default'])}")
    return rules


def _describe(prop: Mapping[str, Any]) -> tuple[str, list[str], list[str]]:
    """A property's type in words, the schemas it refers to, and its rules."""
    rules = _rules(prop)
    if "$ref" in prop:
        name = str(prop["$ref"]).rsplit("/", 1)[-1]
        return name, [name], rules
    options = prop.get("oneOf") or prop.get("anyOf")
    if options:
        kinds: list[str] = []
        refs: list[str] = []
        nullable = False
        for option in options:
            if option.get("type") == "null":
                nullable = True
                continue
            kind, more, extra = _describe(option)
            kinds.append(kind)
            refs += more
            rules += extra
        return " or ".join(kinds) + (" or null" if nullable else ""), refs, rules
    if "const" in prop:
        return _one_line(prop["const"]), [], rules
    if "enum" in prop:
        return "one of " + ", ".join(str(v) for v in prop["enum"]), [], rules
    if prop.get("type") == "array":
        kind, refs, inner = _describe(prop.get("items", {}))
        return f"list of {kind}", refs, rules + [f"each {r}" for r in inner]
    return str(prop.get("type", "any")), [], rules


def schema_sections(schemas: Mapping[str, Any], root: str = "PolicyDocument") -> list[SchemaSection]:
    """The OpenAPI components `root` is built from, as tables: each field's type, whether required, its rules."""
    order, sections = [root], []
    for name in order:  # grows as references are found
        schema = schemas.get(name)
        if not isinstance(schema, dict):
            continue
        required = set(schema.get("required", []))
        section = SchemaSection(name, str(schema.get("description", "")))
        for fname, prop in schema.get("properties", {}).items():
            kind, refs, rules = _describe(prop)
            order += [r for r in refs if r not in order]
            section.fields.append(SchemaField(fname, fname in required, kind, refs, rules))
        sections.append(section)
    return sections


# -- the landing page -----------------------------------------------------------------------------


@get("/governance", name="console-governance")
async def governance(console: Console) -> Response[str]:
    """Counts of what governance holds, and its recent changes (keys and the audit log are operator's)."""
    policies = await console.api.list("/governance/policies", {"pageSize": 1})
    teams = await console.api.list("/governance/teams", {"pageSize": 1})
    keys = audit = None
    if console.can("operator"):
        keys = await console.api.list("/governance/keys", {"pageSize": 1})
        audit = await console.api.list("/audit/logs", {"action": "governance.*", "pageSize": 8})
    return console.render("governance/index.html", {"policies": policies, "teams": teams, "keys": keys,
                                                    "audit": audit})


# -- keys and the audit log (the worked example) --------------------------------------------------


@get("/governance/keys", name="console-keys")
async def keys(console: Console) -> Response[str]:
    listing = await console.api.list("/governance/keys", list_query(console, _KEY_FILTERS))
    return console.render("governance/keys.html", {"listing": listing, "roles": ROLE_NAMES})


async def _teams(console: Console) -> list[tuple[str, str]]:
    listing = await console.api.list("/governance/teams", {"pageSize": 200})
    return [(t["id"], t["name"]) for t in listing.items]


_KEY_FIELDS = ("name", "teamId", "roles", "allowedRoutes", "expiresAt", *_SETTINGS_FIELDS)


def _key_body(form: Form) -> dict[str, Any]:
    """A key's whole settings (create, or a PUT that replaces them: a field left empty is cleared)."""
    body: dict[str, Any] = {"name": form.text("name", required=True), "teamId": form.text("teamId", required=True),
                            "roles": form.many("roles"), **_settings_body(form)}
    if routes := form.words("allowedRoutes"):
        body["allowedRoutes"] = routes
    if expires := form.text("expiresAt"):
        body["expiresAt"] = expires
    form.values["roles"] = body["roles"]
    return body


async def _key_form(console: Console, form: Form, *, key_id: str | None = None, status: int = 200) -> Response[str]:
    return console.render("governance/key_form.html", {
        "form": form, "key_id": key_id, "teams": await _teams(console), "roles": ROLE_NAMES,
        "periods": BUDGET_PERIODS}, status=status)


@get("/governance/keys/new", name="console-key-new")
async def new_key(console: Console) -> Response[str]:
    return await _key_form(console, Form.of({"teamId": DEFAULT_TEAM_ID, "roles": []}))


@post("/governance/keys/new", name="console-key-create", status_code=200)
async def create_key(console: Console) -> Response[str]:
    """The new key's secret is shown on the answer page, this once (it is never stored in clear)."""
    form = await Form.read(console.request)
    body = _key_body(form)
    if form.ok:
        try:
            created = await console.api.send("POST", "/governance/keys", body)
        except ApiError as err:
            form.fail(err, _KEY_FIELDS)
        else:
            return console.render("governance/key_created.html", {"key": created, "rotated": False}, status=201)
    return await _key_form(console, form, status=422)


@get("/governance/keys/{key_id:str}/edit", name="console-key-edit")
async def edit_key(console: Console, key_id: str) -> Response[str]:
    found = await console.api.get(f"/governance/keys/{_checked_id(key_id)}")
    expires = found.get("expiresAt")
    values = {"name": found["name"], "teamId": found["teamId"], "roles": list(found.get("roles") or []),
              "allowedRoutes": ", ".join(found.get("allowedRoutes") or []),
              "expiresAt": str(expires)[:16] if expires else "", **_settings_values(found)}
    return await _key_form(console, Form.of(values), key_id=key_id)


@post("/governance/keys/{key_id:str}/edit", name="console-key-update", status_code=200)
async def update_key(console: Console, key_id: str) -> Response[str]:
    form = await Form.read(console.request)
    body = _key_body(form)
    if form.ok:
        try:
            await console.api.send("PUT", f"/governance/keys/{_checked_id(key_id)}", body)
        except ApiError as err:
            if err.status in (401, 403, 404):
                raise
            form.fail(err, _KEY_FIELDS)
        else:
            return console.redirect("/console/governance/keys")
    return await _key_form(console, form, key_id=key_id, status=422)


@post("/governance/keys/{key_id:str}/rotate", name="console-key-rotate", status_code=200)
async def rotate_key(console: Console, key_id: str) -> Response[str]:
    """A new secret, shown once; the old one stops working at once."""
    rotated = await console.api.send("POST", f"/governance/keys/{_checked_id(key_id)}/rotate")
    return console.render("governance/key_created.html", {"key": rotated, "rotated": True})


@post("/governance/keys/{key_id:str}/revoke", name="console-key-revoke", status_code=200)
async def revoke_key(console: Console, key_id: str) -> Response[str]:
    await console.api.send("POST", f"/governance/keys/{key_id}/revoke")
    return console.redirect("/console/governance/keys")


@get("/governance/audit", name="console-audit")
async def audit(console: Console) -> Response[str]:
    listing, form = await filtered_list(console, "/audit/logs", _AUDIT_FILTERS)
    return console.render("governance/audit.html", {"listing": listing, "form": form})


# -- policies -------------------------------------------------------------------------------------


@get("/governance/policies", name="console-policies")
async def policies(console: Console) -> Response[str]:
    query = list_query(console, _POLICY_FILTERS)
    if query.get("enabled") not in (None, "true", "false"):
        query.pop("enabled")
    listing = await console.api.list("/governance/policies", query)
    return console.render("governance/policies.html", {"listing": listing})


@get("/governance/policies/schema", name="console-policy-schema")
async def policy_schema(console: Console) -> Response[str]:
    """The policy document's rules, read from the admin API's own OpenAPI document (so they never drift)."""
    reply = await console.api.raw("GET", "/schema/openapi.json")
    if reply.status != 200:
        raise ApiError(reply.status, "The admin API's schema could not be read")
    schemas = msgspec.json.decode(reply.body).get("components", {}).get("schemas", {})
    return console.render("governance/policy_schema.html", {"sections": schema_sections(schemas),
                                                            "example": _pretty(POLICY_FULL_EXAMPLE)})


def _policy_values(policy: Mapping[str, Any]) -> dict[str, Any]:
    """A stored policy as the form shows it: the scope's teams apart, the rest of the document as JSON."""
    document = _compact(policy["document"])
    scope = document.pop("scope", None) or {}
    if not document.get("guardrails"):
        document.pop("guardrails", None)
    return {"name": policy["name"], "description": policy.get("description", ""),
            "enabled": "true" if policy.get("enabled") else "", "teams": ", ".join(scope.get("teams", [])),
            "document": _pretty(document), "expectedVersion": policy.get("version", "")}


def _policy_body(form: Form) -> dict[str, Any]:
    body: dict[str, Any] = {"name": form.text("name", required=True, max_chars=100),
                            "description": form.text("description", max_chars=2000) or "",
                            "enabled": form.checked("enabled")}
    teams = form.words("teams")
    document = form.json("document", required=True, kind=dict)
    if document is not None:
        if teams and "scope" in document:
            form.errors["teams"] = "The document sets scope too: name the teams here, or in the document, not both."
        elif teams:
            document = {"scope": {"teams": teams}, **document}
        body["document"] = document
    return body


def _fail_policy(form: Form, err: ApiError) -> list[tuple[str, str]]:
    """The API's refusal beside the fields; the document's own errors, each with its path, are returned."""
    if err.status in (401, 403, 404):
        raise err
    nested: list[tuple[str, str]] = []
    leftover: list[str] = []
    for path, message in err.errors.items():
        if path.startswith("document.scope"):
            form.errors.setdefault("teams", f"{path}: {message}")
        elif path == "document" or path.startswith(("document.", "document[")):
            nested.append((path, message))
        elif path in ("name", "description", "enabled"):
            form.errors.setdefault(path, message)
        else:
            leftover.append(f"{path}: {message}" if path else message)
    if nested:
        form.errors["document"] = "; ".join(f"{p}: {m}" for p, m in nested)
    if err.status == 409 and isinstance(err.data, dict) and "version" in err.data:
        form.message = (f"Someone else saved this policy while you were editing: it is now at version "
                        f"{err.data['version']}. Open it again to see their change, then make yours.")
    elif err.status == 409:
        form.errors["name"] = err.message
    elif leftover or not err.errors:
        form.message = "; ".join(leftover) if leftover else err.message
    return nested


def _policy_form(console: Console, form: Form, nested: list[tuple[str, str]], *, policy_id: str | None = None,
                 status: int = 200) -> Response[str]:
    doc_errors = nested or ([("document", form.errors["document"])] if "document" in form.errors else [])
    return console.render("governance/policy_form.html", {"form": form, "doc_errors": doc_errors,
                                                          "policy_id": policy_id}, status=status)


@get("/governance/policies/new", name="console-policy-new")
async def new_policy(console: Console) -> Response[str]:
    if not console.can("operator"):
        raise _not_allowed(console, "operator", "Creating a policy")
    return _policy_form(console, Form.of({"enabled": "true", "document": _pretty(POLICY_EXAMPLE)}), [])


@post("/governance/policies/new", name="console-policy-create", status_code=200)
async def create_policy(console: Console) -> Response[str]:
    form = await Form.read(console.request)
    body = _policy_body(form)
    nested: list[tuple[str, str]] = []
    if form.ok:
        try:
            created = await console.api.send("POST", "/governance/policies", body)
        except ApiError as err:
            nested = _fail_policy(form, err)
        else:
            return console.redirect(f"/console/governance/policies/{created['id']}")
    return _policy_form(console, form, nested, status=422)


@get("/governance/policies/{policy_id:str}", name="console-policy")
async def policy(console: Console, policy_id: str) -> Response[str]:
    """The current version and the history; a deleted policy shows its last version (its history stays)."""
    pid = _checked_id(policy_id)
    try:
        current = await console.api.get(f"/governance/policies/{pid}")
    except ApiError as err:
        if err.status != 404:
            raise
        current = None
    versions = await console.api.list(f"/governance/policies/{pid}/versions", list_query(console, ()))
    latest = versions.total  # versions are numbered 1, 2, … with none missing
    shown = current or await console.api.get(f"/governance/policies/{pid}/versions/{latest}")
    return console.render("governance/policy.html", {
        "policy": shown, "policy_id": pid, "deleted": current is None, "versions": versions, "latest": latest,
        "document": _shown(shown["document"])})


@get("/governance/policies/{policy_id:str}/versions/{version:int}", name="console-policy-version")
async def policy_version(console: Console, policy_id: str, version: int) -> Response[str]:
    pid = _checked_id(policy_id)
    if not 1 <= version <= _MAX_VERSION:
        raise NotFoundException(f"No version {version}")
    found = await console.api.get(f"/governance/policies/{pid}/versions/{version}")
    latest = (await console.api.list(f"/governance/policies/{pid}/versions", {"pageSize": 1})).total
    return console.render("governance/policy_version.html", {"version": found, "policy_id": pid, "latest": latest,
                                                             "document": _shown(found["document"])})


def _version_param(raw: str | None, latest: int, default: int) -> int:
    return int(raw) if raw and raw.isdigit() and 1 <= int(raw) <= latest else default


@get("/governance/policies/{policy_id:str}/diff", name="console-policy-diff")
async def policy_diff(console: Console, policy_id: str) -> Response[str]:
    """What changed between two versions (`?from=1&to=3`; default: the latest against the one before)."""
    pid = _checked_id(policy_id)
    latest = (await console.api.list(f"/governance/policies/{pid}/versions", {"pageSize": 1})).total
    params = console.request.query_params
    to = _version_param(params.get("to"), latest, latest)
    start = _version_param(params.get("from"), latest, max(1, to - 1))
    before = await console.api.get(f"/governance/policies/{pid}/versions/{start}")
    after = before if start == to else await console.api.get(f"/governance/policies/{pid}/versions/{to}")
    return console.render("governance/policy_diff.html", {
        "policy_id": pid, "latest": latest, "start": start, "to": to, "before": before, "after": after,
        "changes": json_diff(_content(before), _content(after)),
        "before_json": _pretty(_content(before)), "after_json": _pretty(_content(after))})


@get("/governance/policies/{policy_id:str}/edit", name="console-policy-edit")
async def edit_policy(console: Console, policy_id: str) -> Response[str]:
    pid = _checked_id(policy_id)
    if not console.can("operator"):
        raise _not_allowed(console, "operator", "Editing a policy")
    found = await console.api.get(f"/governance/policies/{pid}")
    return _policy_form(console, Form.of(_policy_values(found)), [], policy_id=pid)


@post("/governance/policies/{policy_id:str}/edit", name="console-policy-update", status_code=200)
async def update_policy(console: Console, policy_id: str) -> Response[str]:
    """Saves the next version; `expectedVersion` (from when the form was opened) guards against lost updates."""
    pid = _checked_id(policy_id)
    form = await Form.read(console.request)
    body = _policy_body(form)
    if (expected := form.integer("expectedVersion", minimum=1)) is not None:
        body["expectedVersion"] = expected
    nested: list[tuple[str, str]] = []
    if form.ok:
        try:
            await console.api.send("PUT", f"/governance/policies/{pid}", body)
        except ApiError as err:
            nested = _fail_policy(form, err)
        else:
            return console.redirect(f"/console/governance/policies/{pid}")
    return _policy_form(console, form, nested, policy_id=pid, status=409 if form.message and not form.errors
                        else 422)


@post("/governance/policies/{policy_id:str}/delete", name="console-policy-delete", status_code=200)
async def delete_policy(console: Console, policy_id: str) -> Response[str]:
    """The policy stops applying; its page then shows it deleted, with its history."""
    pid = _checked_id(policy_id)
    await console.api.send("DELETE", f"/governance/policies/{pid}")
    return console.redirect(f"/console/governance/policies/{pid}")


# -- teams ----------------------------------------------------------------------------------------

_TEAM_FIELDS = ("name", "description", *_SETTINGS_FIELDS)
BUDGET_PERIODS = [("", "No budget"), ("daily", "daily"), ("weekly", "weekly"), ("monthly", "monthly")]


def _team_values(team: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": team.get("name", ""), "description": team.get("description") or "", **_settings_values(team)}


def _settings_values(found: Mapping[str, Any]) -> dict[str, Any]:
    """A team's or key's limits, budget and allowed models as form values."""
    values = {name: "" if found.get(name) is None else found[name] for name in _SETTINGS_FIELDS}
    values["allowedModels"] = ", ".join(found.get("allowedModels") or [])
    return values


def _settings_body(form: Form) -> dict[str, Any]:
    """Limits, budget and allowed models, as a team and a key both carry them (absent: none of their own)."""
    body: dict[str, Any] = {"allowedModels": form.words("allowedModels") or None,
                            "rpm": form.integer("rpm", minimum=1), "tpm": form.integer("tpm", minimum=1),
                            "maxConcurrent": form.integer("maxConcurrent", minimum=1),
                            "budgetPeriod": form.text("budgetPeriod")}
    if (raw := form.text("budgetUsd", max_chars=30)) is not None:
        try:
            amount = Decimal(raw.removeprefix("$").replace(",", ""))
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount <= 0:
            form.errors["budgetUsd"] = "An amount in US dollars above 0, e.g. 250 or 12.50"
        else:
            body["budgetUsd"] = format(amount, "f")  # a decimal string: exact, as the API keeps it
    return {k: v for k, v in body.items() if v is not None}


def _team_body(form: Form) -> dict[str, Any]:
    """The full team (a PUT replaces it: a field left empty is cleared)."""
    body: dict[str, Any] = {"name": form.text("name", required=True, max_chars=64),
                            "description": form.text("description", max_chars=500) or "", **_settings_body(form)}
    return body


def _fail_team(form: Form, err: ApiError) -> None:
    if err.status in (401, 403, 404):
        raise err
    if err.status == 409 and not err.errors:
        form.errors["name"] = err.message
        return
    form.fail(err, _TEAM_FIELDS)


def _team_form(console: Console, form: Form, *, team_id: str | None = None, status: int = 200) -> Response[str]:
    return console.render("governance/team_form.html", {"form": form, "team_id": team_id,
                                                        "periods": BUDGET_PERIODS}, status=status)


@get("/governance/teams", name="console-teams")
async def teams(console: Console) -> Response[str]:
    listing = await console.api.list("/governance/teams", list_query(console, _TEAM_FILTERS))
    return console.render("governance/teams.html", {"listing": listing})


@get("/governance/teams/new", name="console-team-new")
async def new_team(console: Console) -> Response[str]:
    if not console.can("admin"):
        raise _not_allowed(console, "admin", "Creating a team")
    return _team_form(console, Form.of({}))


@post("/governance/teams/new", name="console-team-create", status_code=200)
async def create_team(console: Console) -> Response[str]:
    form = await Form.read(console.request)
    body = _team_body(form)
    if form.ok:
        try:
            created = await console.api.send("POST", "/governance/teams", body)
        except ApiError as err:
            _fail_team(form, err)
        else:
            return console.redirect(f"/console/governance/teams/{created['id']}")
    return _team_form(console, form, status=422)


async def _team_page(console: Console, team_id: str, *, refusal: ApiError | None = None,
                     status: int = 200) -> Response[str]:
    team = await console.api.get(f"/governance/teams/{team_id}")
    team_keys = None
    if console.can("operator"):  # listing keys is operator's
        team_keys = await console.api.list("/governance/keys", {"teamId": team_id, "pageSize": 10})
    applying = await console.api.list("/governance/policies", {"team": team["name"], "pageSize": 20})
    dependents = (refusal.data or {}).get("dependents", []) if refusal and isinstance(refusal.data, dict) else []
    return console.render("governance/team.html", {"team": team, "keys": team_keys, "policies": applying,
                                                   "refusal": refusal, "dependents": dependents}, status=status)


@get("/governance/teams/{team_id:str}", name="console-team")
async def team(console: Console, team_id: str) -> Response[str]:
    return await _team_page(console, _checked_id(team_id))


@get("/governance/teams/{team_id:str}/edit", name="console-team-edit")
async def edit_team(console: Console, team_id: str) -> Response[str]:
    tid = _checked_id(team_id)
    if not console.can("admin"):
        raise _not_allowed(console, "admin", "Editing a team")
    found = await console.api.get(f"/governance/teams/{tid}")
    return _team_form(console, Form.of(_team_values(found)), team_id=tid)


@post("/governance/teams/{team_id:str}/edit", name="console-team-update", status_code=200)
async def update_team(console: Console, team_id: str) -> Response[str]:
    tid = _checked_id(team_id)
    form = await Form.read(console.request)
    body = _team_body(form)
    if form.ok:
        try:
            await console.api.send("PUT", f"/governance/teams/{tid}", body)
        except ApiError as err:
            _fail_team(form, err)
        else:
            return console.redirect(f"/console/governance/teams/{tid}")
    return _team_form(console, form, team_id=tid, status=422)


@post("/governance/teams/{team_id:str}/delete", name="console-team-delete", status_code=200)
async def delete_team(console: Console, team_id: str) -> Response[str]:
    """Refused (409) while the team has unrevoked keys, and for the default team: the page says why."""
    tid = _checked_id(team_id)
    try:
        await console.api.send("DELETE", f"/governance/teams/{tid}")
    except ApiError as err:
        if err.status != 409:
            raise
        return await _team_page(console, tid, refusal=err, status=409)
    return console.redirect("/console/governance/teams")


HANDLERS: list[Any] = [
    governance, keys, new_key, create_key, edit_key, update_key, rotate_key, revoke_key, audit,
    policies, policy_schema, new_policy, create_policy, policy, policy_version, policy_diff, edit_policy,
    update_policy, delete_policy,
    teams, new_team, create_team, team, edit_team, update_team, delete_team,
]
