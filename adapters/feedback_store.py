"""Feedback in the store: find the usage records a caller may rate, and write one ``feedback`` row.

``POST /v1/feedback`` (``gateway/feedback``) holds no SQL; it calls these two functions. Both run one
unit of work under the deadline the caller gives (``timeout_s``), and raise the store's errors
(``StoreUnavailable`` when the database is down or past the deadline).

Which records count: rows of ``usage_records`` with ``attempts > 0``, i.e. data-plane requests that
were routed to an upstream (answered or failed there). Requests refused before routing (401, 400, 429)
and the responses Litestar serves (``/v1/models``, the feedback calls themselves: ``attempts = 0``) are
not rateable. ``key_id`` restricts them to one key's records; None means any record (authentication off).
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy import func, insert, select

from adapters.dataplane import feedback, usage_records
from adapters.store import Store

__all__ = ["MAX_LISTED", "FeedbackRow", "Rated", "find_rated", "insert_feedback"]

MAX_LISTED = 100
"""At most this many request ids are listed for an episode (the most recent); ``Rated.requests`` counts all."""


class Rated(msgspec.Struct, frozen=True, kw_only=True):
    """What one feedback attaches to: the rated requests and the experiment arm they ran under.

    For an episode, ``experiment`` and ``variant`` are set only when every record agrees: one
    (experiment, variant) pair gives both; one experiment with several variants (a ramp, a rollback
    mid-episode) gives the experiment alone; anything else gives neither."""

    request_ids: list[str]  # distinct, most recent first, at most MAX_LISTED
    requests: int  # how many records the feedback covers
    experiment: str | None
    variant: str | None


class FeedbackRow(msgspec.Struct, frozen=True, kw_only=True):
    """One ``feedback`` row as written (``adapters.dataplane.feedback``)."""

    feedback_id: str
    ts: datetime
    request_id: str | None
    episode_id: str | None
    experiment: str | None
    variant: str | None
    key_id: str | None
    team: str | None
    score: float | None
    label: str | None
    positive: bool | None
    comment: str | None


_rateable = usage_records.c.attempts > 0
_newest_first = (usage_records.c.ts.desc(), usage_records.c.id.desc())


async def find_rated(
    store: Store, *, request_id: str | None = None, episode_id: str | None = None, key_id: str | None,
    timeout_s: float,
) -> Rated | None:
    """The records ``request_id`` (its most recent one: clients may reuse an id) or ``episode_id`` (all
    of them) names, among ``key_id``'s own (None: anyone's); None when there is none (yet)."""
    if (request_id is None) == (episode_id is None):
        raise ValueError("name exactly one of request_id and episode_id")
    t = usage_records.c
    where = [_rateable, t.request_id == request_id if request_id is not None else t.episode_id == episode_id]
    if key_id is not None:
        where.append(t.key_id == key_id)
    async with store.read(timeout_s=timeout_s) as conn:
        if request_id is not None:
            row = (await conn.execute(select(t.experiment, t.variant).where(*where)
                                      .order_by(*_newest_first).limit(1))).first()
            if row is None:
                return None
            return Rated(request_ids=[request_id], requests=1, experiment=row.experiment, variant=row.variant)
        arms = (await conn.execute(select(t.experiment, t.variant, func.count()).where(*where)
                                   .group_by(t.experiment, t.variant))).all()
        if not arms:
            return None
        ids = (await conn.execute(select(t.request_id).where(*where).order_by(*_newest_first)
                                  .limit(MAX_LISTED * 4))).scalars().all()
    experiments = {e for e, _, _ in arms}
    experiment = next(iter(experiments)) if len(experiments) == 1 else None
    variant = arms[0][1] if len(arms) == 1 else None
    return Rated(request_ids=list(dict.fromkeys(ids))[:MAX_LISTED], requests=sum(n for _, _, n in arms),
                 experiment=experiment, variant=variant)


async def insert_feedback(store: Store, row: FeedbackRow, *, timeout_s: float) -> None:
    """Write ``row`` in one transaction: after an error nothing of it is stored."""
    async with store.begin(timeout_s=timeout_s) as conn:
        await conn.execute(insert(feedback).values(msgspec.structs.asdict(row)))
