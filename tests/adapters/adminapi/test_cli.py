"""``llmops migrate`` and ``llmops admin create-key`` against both databases."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest
from sqlalchemy import insert

from adapters.adminapi.auth import Authenticator, Role
from adapters.adminapi.cli import register_cli
from adapters.store import open_store, utcnow
from adapters.store.migrations import schema_migrations, schema_versions


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="llmops")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def _versions(url: str) -> dict[str, int]:
    async def read() -> dict[str, int]:
        store = open_store(url, feed_mode="local")
        try:
            async with store.read() as conn:
                return await schema_versions(conn)
        finally:
            await store.aclose()

    return asyncio.run(read())


def test_migrate_applies_all_installed_and_check_reports(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("migrate", "--check", "--database-url", database_url) == 1
    assert "pending: governance v1" in capsys.readouterr().err
    assert run_cli("migrate", "--database-url", database_url) == 0
    assert {"store": 2, "admin": 3, "governance": 1}.items() <= _versions(database_url).items()
    assert run_cli("migrate", "--database-url", database_url) == 0
    assert "(0 applied)" in capsys.readouterr().err
    assert run_cli("migrate", "--check", "--database-url", database_url) == 0


def test_migrate_refuses_a_newer_schema(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("migrate", "--database-url", database_url) == 0

    async def from_the_future() -> None:
        store = open_store(database_url, feed_mode="local")
        async with store.begin() as conn:
            await conn.execute(insert(schema_migrations).values(
                module="governance", version=99, description="future", applied_at=utcnow()))
        await store.aclose()

    asyncio.run(from_the_future())
    capsys.readouterr()
    assert run_cli("migrate", "--database-url", database_url) == 1
    assert "refusing to start" in capsys.readouterr().err


def test_create_key_prints_a_working_key_once(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("admin", "create-key", "--role", "operator", "--name", "ops", "--database-url", database_url) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("llmops_") and token not in err and "operator" in err

    async def check() -> None:
        store = open_store(database_url, feed_mode="local")
        try:
            principal = await Authenticator(store, None).authenticate(token)
        finally:
            await store.aclose()
        assert (principal.name, principal.role) == ("ops", Role.operator)

    asyncio.run(check())


def test_default_database_is_the_sqlite_file_in_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOPS_DATABASE_URL", raising=False)
    assert run_cli("admin", "create-key", "--role", "viewer", "--data-dir", str(tmp_path)) == 0
    assert (tmp_path / "llmops.db").exists()
    assert "cli-viewer" in capsys.readouterr().err


def test_bad_role_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        run_cli("admin", "create-key", "--role", "root")
    assert info.value.code == 2


def test_config_loader_supplies_the_control_section_and_flags_win(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.adminapi import ControlCfg

    seen: list[str] = []

    def load(path: str) -> ControlCfg:
        seen.append(path)
        return ControlCfg(data_dir=str(tmp_path / "from-config"))

    parser = argparse.ArgumentParser(prog="llmops")
    register_cli(parser.add_subparsers(dest="command", required=True), load_config=load)
    args = parser.parse_args(["migrate", "--config", "gateway.yaml"])
    assert args.func(args) == 0 and seen == ["gateway.yaml"]
    assert (tmp_path / "from-config" / "llmops.db").exists()
    args = parser.parse_args(["migrate", "--config", "gateway.yaml", "--data-dir", str(tmp_path / "flag")])
    assert args.func(args) == 0
    assert (tmp_path / "flag" / "llmops.db").exists()
