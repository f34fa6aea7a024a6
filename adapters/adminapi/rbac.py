"""Roles, and the one permission table every admin request is checked against.

A key carries a list of roles (``gateway_keys.roles``). Four of them rank for the admin API,
``viewer < developer < operator < admin``; a key's *admin role* is the highest it holds. The fifth,
``inference``, is the data plane's: it is what ``/v1/*`` needs, and it ranks below ``viewer``, so a key
holding only ``inference`` (an application's key) gets 403 on every admin path. A person who also calls
models holds both, e.g. ``["developer", "inference"]``. Admin roles alone do not reach the data plane:
creating an admin key never switches data-plane authentication on.

The permission table maps each admin operation, ``(METHOD, path template)`` relative to ``/llm-ops/v1``,
to its minimum role (``None``: public). Handlers declare their minimum beside their code
(``opt=requires(Role.admin)``; without it reads need ``viewer`` and writes ``operator``); the control plane
compiles them once, at start-up, into a ``PermissionTable``, and its single guard looks each request up
there. The OpenAPI document's 401/403 declarations and docs/admin-api.md's table come from the same table.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import IntEnum
from typing import Any, Final

from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute
from litestar.types import ControllerRouterHandler

__all__ = [
    "ADMIN_ROLE_NAMES",
    "DATA_PLANE_ROLE",
    "ROLE_NAMES",
    "PermissionTable",
    "Role",
    "admin_role",
    "may_use_data_plane",
    "required_role",
    "requires",
]

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(IntEnum):
    """Admin rank. ``inference`` is below every admin role: such a key reaches no admin path."""

    inference = 0
    viewer = 1
    developer = 2
    operator = 3
    admin = 4

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        return value if isinstance(value, Role) else cls[value]


DATA_PLANE_ROLE: Final = Role.inference.name
ADMIN_ROLE_NAMES: Final = tuple(r.name for r in Role if r is not Role.inference)
ROLE_NAMES: Final = tuple(r.name for r in Role)


def admin_role(roles: Iterable[str]) -> Role:
    """The highest admin role in ``roles``; ``Role.inference`` when there is none (data-plane only)."""
    return max((Role[r] for r in roles if r in Role.__members__), default=Role.inference)


def may_use_data_plane(roles: Iterable[str]) -> bool:
    """The data plane's permission: the key holds ``inference`` (admin roles do not imply it)."""
    return DATA_PLANE_ROLE in roles


def requires(role: Role | str) -> dict[str, Any]:
    """Route option stating the minimum role: ``@post("/x", opt=requires(Role.admin))``."""
    return {"min_role": Role.parse(role)}


def required_role(handler: BaseRouteHandler) -> Role | None:
    """What a handler declares: its ``min_role``, else viewer for reads and operator otherwise; ``None``: public."""
    opt = handler.opt
    if opt.get("public"):
        return None
    if "min_role" in opt:
        return Role.parse(opt["min_role"])
    methods: set[str] = set(getattr(handler, "http_methods", ()) or ())
    return Role.viewer if methods and methods <= _READ_METHODS else Role.operator


class PermissionTable(Mapping[tuple[str, str], "Role | None"]):
    """``(METHOD, path template) -> minimum role`` for every admin operation; built once, read per request.

    Paths are relative to the admin prefix when built with ``prefix`` (``/governance/keys/{keyId}``).
    """

    def __init__(self, rows: Mapping[tuple[str, str], Role | None], prefix: str = "") -> None:
        self._rows = dict(sorted(rows.items()))
        self._prefix = prefix

    @classmethod
    def from_routes(cls, handlers: Iterable[ControllerRouterHandler], prefix: str = "") -> PermissionTable:
        """Compile the table from routers (as the control plane builds them)."""
        rows: dict[tuple[str, str], Role | None] = {}
        for router in handlers:
            for route in getattr(router, "routes", ()):
                if not isinstance(route, HTTPRoute):
                    continue
                for handler in route.route_handlers:
                    resolved = copy.copy(handler)
                    resolved.resolve_opts()  # what Litestar does at registration: handler opt over its layers'
                    path = route.path_format.removeprefix(prefix) or "/"
                    for method in handler.http_methods:
                        rows[(method.upper(), path)] = required_role(resolved)
        return cls(rows, prefix)

    def minimum(self, method: str, path_template: str) -> tuple[bool, Role | None]:
        """``(known, minimum role)`` for a request; ``path_template`` as routed (prefix included)."""
        key = (method.upper(), path_template.removeprefix(self._prefix) or "/")
        if key in self._rows:
            return True, self._rows[key]
        return False, None

    def __getitem__(self, key: tuple[str, str]) -> Role | None:
        return self._rows[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def markdown(self, paths: Sequence[str] | None = None) -> str:
        """The table as docs/admin-api.md shows it (only paths starting with one of ``paths``, if given)."""
        lines = ["| Method | Path | Minimum role |", "|---|---|---|"]
        order = {m: i for i, m in enumerate(("GET", "POST", "PUT", "PATCH", "DELETE"))}
        for (method, path), role in sorted(self._rows.items(), key=lambda r: (r[0][1], order.get(r[0][0], 9))):
            if method in {"HEAD", "OPTIONS"} or (paths and not path.startswith(tuple(paths))):
                continue
            lines.append(f"| {method} | `{path}` | {'public' if role is None else role.name} |")
        return "\n".join(lines)
