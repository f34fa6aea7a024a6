"""Finished items into ``eval_items`` by group commit: each item is durable before its slot is free again.

``add`` returns only once the item's row is committed, so an item counts as in flight (holding one of the
run's ``concurrency`` slots) until it is stored, and a crash loses at most the items in flight, which the next
worker asks for again. Writes still come in batches: the first item to arrive while no write runs writes
everything waiting, and keeps writing what arrived meanwhile until nothing waits; the others wait for the
write that carries their row. Each batch is one ``INSERT … ON CONFLICT DO NOTHING RETURNING``: a row already
stored (by an earlier worker on this run) is skipped, and only rows actually inserted count towards
``done``/``failed``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from adapters.store import Store, utcnow
from control.evaluation.tables import items

__all__ = ["ItemWriter"]

_COLUMNS = tuple(c.name for c in items.columns)
_MAX_ROWS = 200  # per statement (18 columns each: far below SQLite's bound-variable limit)


class ItemWriter:
    def __init__(self, store: Store, *, done: int = 0, failed: int = 0) -> None:
        self._store = store
        self.done = done
        self.failed = failed
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writing = False

    async def add(self, values: dict[str, Any]) -> None:
        """Store one item; returns once it is committed (raises what the write raised)."""
        row = {name: values.get(name) for name in _COLUMNS}
        row["scores"] = values.get("scores") or {}
        row["created_at"] = values.get("created_at") or utcnow()
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, stored))
        if not self._writing:
            await self._write_all()
        await stored

    async def flush(self) -> None:
        """Write what waits (nothing, normally: every ``add`` waits for its own write)."""
        if not self._writing:
            await self._write_all()

    async def _write_all(self) -> None:
        self._writing = True
        try:
            while self._pending:
                batch, self._pending = self._pending[:_MAX_ROWS], self._pending[_MAX_ROWS:]
                try:
                    added = await self._insert([row for row, _ in batch])
                except BaseException as err:
                    for _, stored in batch:
                        if not stored.done():
                            stored.cancel() if isinstance(err, asyncio.CancelledError) else stored.set_exception(err)
                    raise
                self.done += len(added)
                self.failed += sum(1 for error in added if error is not None)
                for _, stored in batch:
                    if not stored.done():
                        stored.set_result(None)
        finally:
            self._writing = False

    async def _insert(self, rows: list[dict[str, Any]]) -> list[str | None]:
        async with self._store.begin() as conn:
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(items)
            return list((await conn.execute(insert.values(rows).on_conflict_do_nothing(
                index_elements=[items.c.run_id, items.c.target, items.c.idx]).returning(items.c.error))).scalars())
