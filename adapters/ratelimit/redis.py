"""The Redis backend: every check of a request in one Lua script, on Redis's clock.

One round trip per request, shared: requests that arrive while a round trip is in flight wait
for the next one, and each round trip carries every waiting request's ``Demand`` to one
``EVALSHA`` of ``reserve.lua``, which decides them one after another, atomically (so one request's
checks are never split, and no replica sees another's half-done). On a busy replica that turns
Redis calls per second into a small constant while each request still pays one round trip.
``settle.lua`` settles batches the same way, off the request path.

Scripts are loaded by SHA (``EVALSHA``, ``SCRIPT LOAD`` on ``NOSCRIPT``: a restarted or failed-over
Redis), so two code versions in a rolling deploy each run their own script. Keys carry
``LAYOUT``, the version of what they hold: versions that agree on it share counters, and a change
of layout bumps it, so no script ever reads a key shaped by another. Times come from ``TIME``
inside the script, never from a replica's clock. Expiry is built in: a token bucket refills by
itself, a concurrency slot is a sorted-set member scored by when it expires, and a spend
reservation a member of one (its amount in its name), dropped and subtracted when found expired.

Failure: any error (connection, timeout, script) raises ``BackendUnavailable``; connection errors
and timeouts also mark the backend down, after which calls fail at once (no request waits for a
timeout) until the probe (``PING`` every ``probe_interval_s``) has succeeded twice in a row. The
state is in ``status()`` for ``/readyz``. Needs a standalone Redis (or a Sentinel-managed one): the
scripts name keys they derive, which Redis Cluster does not route.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.ratelimit.base import BackendUnavailable
from policies.limits import Demand, Fired, Settlement, Verdict

__all__ = ["LAYOUT", "RESERVE", "SETTLE", "RedisRateLimiter", "Script", "connect"]

log = logging.getLogger("llmops.ratelimit")

LAYOUT: Final = "1"  # bump when what a key holds changes shape; keys are "<prefix>:<LAYOUT>:..."
_HERE = Path(__file__).resolve().parent
_RECOVER_AFTER = 2  # successful probes in a row before a down backend is trusted again
_LOG_EVERY_S = 60.0  # while down, one reminder a minute rather than one line per request


class Script:
    """A Lua script with its SHA-1, the name ``EVALSHA`` calls it by."""

    def __init__(self, *names: str) -> None:
        self.text = "\n".join((_HERE / n).read_text(encoding="utf-8") for n in names)
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()


RESERVE = Script("common.lua", "reserve.lua")
SETTLE = Script("common.lua", "settle.lua")

_encode = msgspec.json.Encoder().encode
_OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


def connect(url: str, timeout_s: float) -> Redis:
    """A client that fails fast: no retries of its own (the caller decides), bounded connects."""
    return Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                          retry=Retry(NoBackoff(), 0), health_check_interval=0)


class RedisRateLimiter:
    """``client``: a ``redis.asyncio.Redis`` (``connect``); closed by ``aclose``. ``on_error(kind)``
    is called for every failed call (``connection``, ``timeout``, ``script``, ``down``: refused
    without trying), for the caller's metric."""

    name = "redis"

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "llmops:rl",
        timeout_s: float = 0.25,
        max_batch: int = 256,
        max_inflight: int = 2,
        probe_interval_s: float = 1.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self.prefix = f"{prefix}:{LAYOUT}:"
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._probe_interval_s = probe_interval_s
        self._on_error = on_error or (lambda kind: None)
        self._pending: list[tuple[Demand, asyncio.Future[Verdict]]] = []
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._probe: asyncio.Task[None] | None = None
        self.available = True
        self.down_since: float | None = None
        self.last_error = ""
        self._last_log = 0.0
        self.round_trips = 0  # for tests and the benchmark: reserve batches sent

    # -- the protocol ---------------------------------------------------------------------------

    async def reserve(self, demand: Demand) -> Verdict:
        if not self.available:
            self._on_error("down")
            raise BackendUnavailable(self._why())
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Verdict] = loop.create_future()
        self._pending.append((demand, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._kick)  # this loop pass's other requests join the same round trip
        return await fut

    async def settle(self, settlements: Sequence[Settlement]) -> list[list[Fired]]:
        out: list[list[Fired]] = []
        for i in range(0, len(settlements), self._max_batch):
            reply = await self._call(SETTLE, settlements[i:i + self._max_batch])
            out.extend([Fired(flat[k].decode(), int(flat[k + 1])) for k in range(0, len(flat), 2)]
                       for flat in reply)
        return out

    def status(self) -> dict[str, Any]:
        if self.available:
            return {"backend": self.name, "state": "ok"}
        since = time.monotonic() - (self.down_since or time.monotonic())
        return {"backend": self.name, "state": "unavailable", "down_for_s": round(since, 1), "error": self.last_error}

    def start(self) -> None:
        """Start the probe that brings a down backend back (call inside the running loop)."""
        if self._probe is None:
            self._probe = asyncio.create_task(self._probe_forever(), name="llmops-ratelimit-probe")

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                return bool(await self._client.ping())
        except (RedisError, *_OUTAGE):
            return False

    # -- batching -------------------------------------------------------------------------------

    def _kick(self) -> None:
        self._scheduled = False
        while self._pending and self._inflight < self._max_inflight:
            batch = self._pending[:self._max_batch]
            del self._pending[:self._max_batch]
            batch = [(d, f) for d, f in batch if not f.done()]  # cancelled before it was sent: nothing taken
            if not batch:
                continue
            self._inflight += 1
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Demand, asyncio.Future[Verdict]]]) -> None:
        try:
            self.round_trips += 1
            reply = await self._call(RESERVE, [d for d, _ in batch])
            for (_, fut), raw in zip(batch, reply, strict=True):
                if not fut.done():
                    fut.set_result(_verdict(raw))
        except BackendUnavailable as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(BackendUnavailable(str(exc)))
        except Exception as exc:  # a malformed reply is a bug here, not the request's: fail it cleanly
            log.exception("rate limiter: unexpected reply from Redis")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(BackendUnavailable(f"unexpected reply ({type(exc).__name__})"))
        finally:
            self._inflight -= 1
            if self._pending:
                self._kick()

    async def _call(self, script: Script, items: Sequence[msgspec.Struct]) -> Any:
        if not self.available:
            self._on_error("down")
            raise BackendUnavailable(self._why())
        payload = _encode(items)
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    return await self._client.evalsha(script.sha, 0, self.prefix, payload)
                except NoScriptError:  # a restarted Redis: load it, once, and call again
                    await self._client.script_load(script.text)
                    return await self._client.evalsha(script.sha, 0, self.prefix, payload)
        except _OUTAGE as exc:
            kind = "timeout" if isinstance(exc, TimeoutError | RedisTimeoutError) else "connection"
            self._down(kind, exc)
            raise BackendUnavailable(self._why()) from None
        except RedisError as exc:  # the server answered an error (script, OOM, ...): not down, but no decision
            self._on_error("script")
            self._log(f"Redis refused the rate-limit script: {type(exc).__name__}: {exc}")
            raise BackendUnavailable(f"Redis refused the rate-limit script ({type(exc).__name__})") from None

    # -- health ---------------------------------------------------------------------------------

    def _why(self) -> str:
        return f"the rate-limit backend (Redis) is unavailable: {self.last_error or 'down'}"

    def _down(self, kind: str, exc: BaseException) -> None:
        self._on_error(kind)
        # the client's own message, never its URL (which may hold a password)
        self.last_error = kind if kind == "timeout" else f"{kind} error ({type(exc).__name__})"
        if self.available:
            self.available = False
            self.down_since = time.monotonic()
            self._last_log = 0.0
            self._log(f"rate-limit backend Redis is down ({self.last_error}); probing every "
                      f"{self._probe_interval_s:g} s")
            self.start()

    def _log(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.warning(message)

    async def _probe_forever(self) -> None:
        good = 0
        while True:
            await asyncio.sleep(self._probe_interval_s)
            if self.available:
                good = 0
                continue
            good = good + 1 if await self.ping() else 0
            if good >= _RECOVER_AFTER:
                down_for = time.monotonic() - (self.down_since or time.monotonic())
                self.available, self.down_since, self.last_error, good = True, None, "", 0
                log.warning("rate-limit backend Redis is back after %.1f s", down_for)
            elif not good:
                self._log(f"rate-limit backend Redis is still down ({self.last_error})")


def _verdict(raw: list[Any]) -> Verdict:
    ok, kind, index, retry_ms, levels, periods, spent, reserved = raw
    return Verdict(
        bool(ok), kind.decode(), int(index), retry_ms / 1000,
        [(int(levels[k]), levels[k + 1] / 1000) for k in range(0, len(levels), 2)],
        [(periods[k].decode(), periods[k + 1] / 1000) for k in range(0, len(periods), 2)],
        int(spent), int(reserved),
    )
