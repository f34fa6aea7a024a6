"""adapters/store/sql.py: PostgreSQL's connection and shutdown SQLSTATEs mean "unavailable", whichever class
SQLAlchemy's asyncpg adapter wrapped them in (e.g. "the database system is shutting down" while connecting)."""

from __future__ import annotations

import pytest
from sqlalchemy import exc

from adapters.store.sql import _is_unavailable


class _Cause(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _wrapped(sqlstate: str) -> exc.DBAPIError:
    """What SQLAlchemy raises for an asyncpg error it has no class for: its generic adapted `Error`."""
    adapted = Exception("the database system is shutting down")
    adapted.__cause__ = _Cause(sqlstate)
    return exc.DBAPIError("SELECT 1", None, adapted)


@pytest.mark.parametrize("sqlstate", ["57P03", "57P01", "08006", "08001"])
def test_connection_and_shutdown_states_are_outages(sqlstate: str) -> None:
    assert _is_unavailable(_wrapped(sqlstate))


@pytest.mark.parametrize("sqlstate", ["42601", "23505", "22003"])
def test_statement_errors_are_not(sqlstate: str) -> None:
    assert not _is_unavailable(_wrapped(sqlstate))
