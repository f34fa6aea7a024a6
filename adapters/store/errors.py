"""Errors the store raises; SQLAlchemy and driver errors are translated into these in one place.

    StoreError                    anything the store reports
    ├── StoreUnavailable          cannot reach / lost the database (callers answer 503)
    ├── DuplicateKey              a unique constraint refused the write (callers answer 409)
    ├── ConstraintViolation       another integrity constraint refused it (foreign key, check…)
    ├── InvalidValue              the database cannot store a value (NUL in text, number out of range)
    └── SchemaError               the schema and the code disagree
        ├── SchemaTooNew          the database holds a newer migration than this code knows: refuse to start
        ├── SchemaOutdated        migrations are pending and auto-migration is off: run `llmops migrate`
        └── MigrationPlanError    a module's migration list is malformed: a bug, fails at boot
"""

from __future__ import annotations

__all__ = [
    "ConstraintViolation",
    "DuplicateKey",
    "InvalidValue",
    "MigrationPlanError",
    "SchemaError",
    "SchemaOutdated",
    "SchemaTooNew",
    "StoreError",
    "StoreUnavailable",
]


class StoreError(Exception):
    """Base of every error the store reports."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or the connection broke mid-operation; retrying later may work."""


class DuplicateKey(StoreError):
    """A unique constraint refused the write (e.g. a policy name already in use)."""


class ConstraintViolation(StoreError):
    """A foreign-key, check or not-null constraint refused the write."""


class InvalidValue(StoreError):
    """The database refused a value itself (PostgreSQL rejects NUL in text): a client error."""


class SchemaError(StoreError):
    """The database schema and the running code disagree."""


class SchemaTooNew(SchemaError):
    def __init__(self, module: str, db_version: int, code_version: int) -> None:
        super().__init__(
            f"database schema of module {module!r} is at version {db_version}, but this code only knows "
            f"up to {code_version}: refusing to start (upgrade llmops, or point it at another database)"
        )
        self.module = module
        self.db_version = db_version
        self.code_version = code_version


class SchemaOutdated(SchemaError):
    def __init__(self, pending: list[tuple[str, int]]) -> None:
        listed = ", ".join(f"{module} v{version}" for module, version in pending)
        super().__init__(f"database schema needs migrations ({listed}): run `llmops migrate`")
        self.pending = pending


class MigrationPlanError(SchemaError):
    """A module declared migrations that cannot be applied in order (a programming error)."""
