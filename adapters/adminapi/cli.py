"""``llmops migrate`` and ``llmops admin create-key``: control-plane commands for the gateway's CLI.

The database comes from ``--database-url``, else ``LLMOPS_DATABASE_URL``, else the
SQLite file under ``--data-dir`` (default ``.llmops``) - the same resolution the
server uses, so both find the same database. Output meant for scripts (the new
key) goes to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from adapters.adminapi.audit import AuditWriter
from adapters.adminapi.auth import Actor, Principal, Role
from adapters.adminapi.host import ControlPlane, ModuleLoadError, load_control_plane
from adapters.adminapi.keys import create_key
from adapters.adminapi.settings import ControlCfg
from adapters.store import StoreError, ensure_schema, migrate

__all__ = ["register_cli"]


ConfigLoader = Callable[[str], ControlCfg]


def _add_db_args(parser: argparse.ArgumentParser, load_config: ConfigLoader | None) -> None:
    parser.add_argument("--database-url", help="postgresql://… or sqlite:///path (default: LLMOPS_DATABASE_URL, "
                                               "else a SQLite file in --data-dir)")
    parser.add_argument("--data-dir", help="directory of the default SQLite file (default .llmops)")
    if load_config is not None:
        parser.add_argument("--config", help="gateway config file: use its control section (flags still win)")
    parser.set_defaults(load_control_cfg=load_config)


def register_cli(subparsers: Any, load_config: ConfigLoader | None = None) -> None:
    """Add ``migrate`` and ``admin create-key`` to the ``llmops`` command's subparsers.

    ``load_config`` (path -> ``ControlCfg``, e.g. ``lambda p: load_config(p).control``)
    adds ``--config`` so the commands find the same database as ``llmops serve --config``.
    """
    mig = subparsers.add_parser("migrate", help="apply pending control-plane schema migrations")
    _add_db_args(mig, load_config)
    mig.add_argument("--check", action="store_true", help="only list pending migrations; exit 1 if any")
    mig.set_defaults(func=_migrate_cmd)

    admin = subparsers.add_parser("admin", help="control-plane administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    key = admin_sub.add_parser("create-key", help="create an admin API key and print it once")
    key.add_argument("--role", required=True, choices=[r.name for r in sorted(Role, reverse=True)])
    key.add_argument("--name", help="label shown in key lists and the audit log (default: cli-<role>)")
    _add_db_args(key, load_config)
    key.set_defaults(func=_create_key_cmd)


def _plane(args: argparse.Namespace) -> ControlPlane:
    loader: ConfigLoader | None = getattr(args, "load_control_cfg", None)
    path = getattr(args, "config", None)
    cfg = loader(path) if loader is not None and path else ControlCfg()
    overrides = {k: v for k, v in (("database_url", args.database_url), ("data_dir", args.data_dir)) if v}
    return load_control_plane(msgspec.structs.replace(cfg, **overrides))


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except (StoreError, ModuleLoadError, ValueError, OSError) as err:
        print(f"llmops: {err}", file=sys.stderr)
        return 1


def _migrate_cmd(args: argparse.Namespace) -> int:
    return _run(_migrate(_plane(args), check_only=args.check))


async def _migrate(plane: ControlPlane, *, check_only: bool) -> int:
    from adapters.store import check_schema

    store = plane.open_store()
    try:
        plan = plane.migration_plan()
        if check_only:
            pending = await check_schema(store, plan)
            for module, version in pending:
                print(f"pending: {module} v{version}", file=sys.stderr)
            print(f"{store.url}: {len(pending)} pending migration(s)", file=sys.stderr)
            return 1 if pending else 0
        applied = await migrate(store, plan)
        for m in applied:
            print(f"applied {m.module} v{m.version}: {m.description}", file=sys.stderr)
        print(f"{store.url}: schema up to date ({len(applied)} applied)", file=sys.stderr)
        return 0
    finally:
        await store.aclose()


def _create_key_cmd(args: argparse.Namespace) -> int:
    role = Role.parse(args.role)
    return _run(_create_key(_plane(args), role, args.name or f"cli-{role.name}"))


async def _create_key(plane: ControlPlane, role: Role, name: str) -> int:
    store = plane.open_store()
    try:
        await ensure_schema(store, plane.migration_plan(), auto_migrate=True)
        actor = Actor(Principal(key_id="cli", name="cli", role=Role.admin), request_id=f"cli-{uuid.uuid4().hex}")
        created = await create_key(store, AuditWriter(store), actor, name=name, role=role)
    finally:
        await store.aclose()
    print(f"created {role.name} key {created.id} ({name}); it is shown only once:", file=sys.stderr)
    print(created.key)
    return 0
