from __future__ import annotations

from pathlib import Path

import pytest

from adapters.store import redact_url, resolve_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
    ],
)
def test_resolve_database_url_picks_async_drivers(given: str, expected: str) -> None:
    assert resolve_database_url(given, "/unused") == expected


def test_none_means_sqlite_file_in_data_dir(tmp_path: Path) -> None:
    url = resolve_database_url(None, tmp_path / "d")
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'd' / 'llmops.db'}"
    assert (tmp_path / "d").is_dir()


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "no-scheme", "http://x"])
def test_unsupported_urls_are_refused_without_leaking_passwords(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_database_url(bad, "/unused")
    assert "secret" not in str(info.value)


def test_redact_url_masks_password() -> None:
    assert redact_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert "secret" not in redact_url("::not a url secret")
