"""Finished items into ``eval_items``, a few dozen per transaction instead of one each.

An item is written once its calls are over, in a batch of up to ``max_rows`` or once the oldest waiting one is
``max_delay_s`` old (checked as items arrive, and by the job's progress tick), and always before a job ends or
stops. Each batch is one ``INSERT … ON CONFLICT DO NOTHING RETURNING``: a row already stored (by an earlier
worker on this run) is skipped, and only rows actually inserted count towards ``done``/``failed``. A crash
loses at most the waiting batch: those rows were never stored, so the next worker asks for them again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from adapters.store import Store, utcnow
from control.evaluation.tables import items

__all__ = ["ItemWriter"]

_COLUMNS = tuple(c.name for c in items.columns)


class ItemWriter:
    def __init__(self, store: Store, *, done: int = 0, failed: int = 0, max_rows: int = 32,
                 max_delay_s: float = 0.1) -> None:
        self._store = store
        self.done = done
        self.failed = failed
        self._max_rows = max_rows
        self._max_delay_s = max_delay_s
        self._pending: list[dict[str, Any]] = []
        self._oldest = 0.0
        self._lock = asyncio.Lock()

    async def add(self, values: dict[str, Any]) -> None:
        row = {name: values.get(name) for name in _COLUMNS}
        row["scores"] = values.get("scores") or {}
        row["created_at"] = values.get("created_at") or utcnow()
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append(row)
        if len(self._pending) >= self._max_rows or self.due():
            await self.flush()

    def due(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._oldest >= self._max_delay_s

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            rows, self._pending = self._pending, []
            try:
                async with self._store.begin() as conn:
                    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(items)
                    added = (await conn.execute(insert.values(rows).on_conflict_do_nothing(
                        index_elements=[items.c.run_id, items.c.target, items.c.idx]).returning(items.c.error))).all()
            except BaseException:
                self._pending = rows + self._pending  # not stored: try again with the next flush
                raise
        self.done += len(added)
        self.failed += sum(1 for (error,) in added if error is not None)
