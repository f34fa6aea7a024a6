"""Runtime calls whose failure must not stop anything (a cleanup, the cancel of an attempt nothing should run)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

__all__ = ["quietly"]

log = logging.getLogger("llmops.training")


async def quietly(call: Awaitable[Any], what: str, job_id: str) -> bool:
    """Await ``call``; an error is logged (never with a secret: runtimes' messages carry none) and False returned."""
    try:
        await call
        return True
    except Exception as err:
        log.warning("training job %s: runtime %s failed (%s: %s)", job_id, what, type(err).__name__, err)
        return False
