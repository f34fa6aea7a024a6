"""``Snapshot``: a value loaded from the store and reloaded when its topics change.

This is how request paths read control-plane data without touching the database:
``snapshot.value`` is a plain attribute read. A reload that fails (database down,
bad row) keeps serving the previous value and logs; the next change or resync
tries again. Readers therefore see stale-but-consistent data during an outage,
never a half-loaded one, because the loader builds a new object and the swap is
a single assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

from sqlalchemy.exc import SQLAlchemyError

from adapters.store.changes import ChangeFeed
from adapters.store.errors import StoreError

__all__ = ["Snapshot"]

log = logging.getLogger("llmops.store.snapshot")
T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(self, feed: ChangeFeed, topics: tuple[str, ...], loader: Callable[[], Awaitable[T]]) -> None:
        self._feed = feed
        self._topics = topics
        self._loader = loader
        self._value: T | None = None
        self._task: asyncio.Task[None] | None = None
        self.generation = 0  # bumps on every successful (re)load; lets callers and tests see progress
        self.reloaded = asyncio.Condition()

    @property
    def value(self) -> T:
        if self.generation == 0:
            raise RuntimeError("Snapshot.value read before start()")
        return cast(T, self._value)  # None only before the first load, checked above

    async def start(self) -> None:
        """Load once (errors propagate: starting without data is a failure), then follow the feed."""
        subscription = self._feed.subscribe(*self._topics)  # before loading, so no change slips between
        try:
            await self._load()
        except BaseException:
            subscription.close()
            raise
        self._task = asyncio.create_task(self._follow(subscription), name=f"llmops-snapshot-{self._topics}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_for_generation(self, generation: int, timeout_s: float = 5.0) -> None:
        """Wait until at least ``generation`` loads happened (tests, and callers that just wrote)."""
        async with asyncio.timeout(timeout_s), self.reloaded:
            await self.reloaded.wait_for(lambda: self.generation >= generation)

    async def _load(self) -> None:
        value = await self._loader()
        self._value = value
        self.generation += 1
        async with self.reloaded:
            self.reloaded.notify_all()

    async def _follow(self, subscription: object) -> None:
        from adapters.store.changes import Subscription

        assert isinstance(subscription, Subscription)
        with subscription:
            async for _topics in subscription:
                try:
                    await self._load()
                except (StoreError, SQLAlchemyError) as err:
                    log.warning("snapshot %s reload failed, keeping the old value: %s", self._topics, err)
