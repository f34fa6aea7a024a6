"""Column types and id helpers that behave the same on SQLite and PostgreSQL.

SQLite has no timestamp-with-time-zone and stores JSON as text, so modules that
used plain ``DateTime``/``JSON`` would see naive datetimes on one backend and
aware ones on the other. These types hide that difference.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

__all__ = ["AutoId", "Json", "UsdAmount", "UtcDateTime", "new_id", "utcnow"]

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

# JSONB on PostgreSQL (indexable, compact); JSON-as-text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC instants; always hands back timezone-aware UTC datetimes.

    Naive datetimes are refused on the way in: they are a bug waiting to be
    interpreted in someone's local time zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UtcDateTime needs a timezone-aware datetime")
        value = value.astimezone(UTC)
        # SQLite keeps the text "YYYY-MM-DD HH:MM:SS.ffffff"; without the offset it sorts correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class UsdAmount(TypeDecorator[Decimal]):
    """A dollar amount: ``Decimal`` in Python, whole nano-dollars (BIGINT) in the database.

    Why integers: SQLite has no exact decimal type (NUMERIC becomes a float), and
    cost reports sum in SQL. Nano-dollars keep per-token prices exact (a price of
    $0.15 per million tokens is 150 nano-dollars a token) and still sum to about
    nine billion dollars. Sums in SQL come back in nano-dollars; wrap them with
    ``type_coerce(func.sum(col), UsdAmount)`` to get dollars. Finer fractions round half-even.
    """

    impl = BigInteger
    cache_ok = True
    _NANO = Decimal(1_000_000_000)

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("UsdAmount takes Decimal or int, not float (floats cannot hold cents exactly)")
        return int((Decimal(value) * self._NANO).to_integral_value(ROUND_HALF_EVEN))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(int(value)) / self._NANO


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """``prefix_`` + 12 hex digits of milliseconds + 12 random hex digits.

    Time-ordered so ids sort roughly by creation (friendly to B-tree indexes and
    to humans reading logs); 48 random bits make collisions within one
    millisecond negligible, and the unique constraint catches the rest.
    """
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"
