"""`UsageWriter`: the usage consumer that gets every record into the store, exactly once.

    UsageQueue worker ──consume()──► buffer ──every flush_interval_s / batch_size──► write_usage ──► store
                                       │ full                         │ down, slow (write_timeout_s)
                                       ▼                              ▼
                                  spill file ◄─────────────────── spill file
                                       │ store answers again (probed every second)
                                       └──► replay (the same exactly-once insert) ──► delete the file

`consume` only mints record ids and appends: it never awaits I/O. The flush task writes batches;
when a write fails (store down, or past `write_timeout_s`) the batch goes to this process's spill
file and so does everything after it, until a probe finds the store answering again. The replay
task then replays the sealed spill files, and any spill file a dead process left behind, through
the same insert that skips record ids already stored, so a replay interrupted anywhere (even
between the insert and the file's deletion) never counts a record twice.

Bounds: at most `buffer_max_records` records wait in the buffer; when it fills, its contents go to
the spill file at once (one overflow write at a time, so memory stays under about twice the bound).
The spill directory holds at most `spill_max_bytes`. Records that fit in neither are dropped,
counted in `llmops_usage_records_dropped_total` and logged (at most once per 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from sqlalchemy import text

from adapters.store import Store, StoreError, StoreUnavailable
from adapters.usage import UsageRecord
from adapters.usage_store import UsageRow, row_from_record, write_usage
from gateway.access import HTTP_ENDPOINT
from gateway.config import GatewayCfg, MeteringCfg
from gateway.metrics import GatewayMetrics
from gateway.usage_writer.metrics import WriterMetrics
from gateway.usage_writer.spill import SpillDir, SpillFile

__all__ = ["UsageWriter", "usage_writer_for", "writer_lifespan"]

log = logging.getLogger("llmops.metering")

PROBE_INTERVAL_S = 1.0  # how often dead processes' spill files are looked for, and a down store first retried
PROBE_BACKOFF_MAX = 5  # a store that stays down is retried every 5 probe intervals (each try logs a warning)
DROP_LOG_INTERVAL_S = 10.0


def usage_writer_for(cfg: GatewayCfg, metrics: GatewayMetrics) -> UsageWriter | None:
    """The writer for this config: None without a control-plane store or with metering off."""
    if not (cfg.control.enabled and cfg.metering.enabled):
        return None
    spill_dir = Path(cfg.metering.spill_dir) if cfg.metering.spill_dir else Path(cfg.control.data_dir) / "usage-spill"
    return UsageWriter(cfg.metering, spill_dir, metrics)


@contextlib.asynccontextmanager
async def writer_lifespan(writer: UsageWriter | None, store: Store | None) -> AsyncIterator[None]:
    """Run `writer` against `store` for the block; at exit, flush what it holds (store or spill)."""
    if writer is None or store is None:
        yield
        return
    await writer.start(store)
    try:
        yield
    finally:
        await writer.aclose()


def _mint_ids(records: Sequence[UsageRecord]) -> None:
    """Give each record without one a ``record_id`` of 32 hex digits, as ``new_record_id()``'s: here
    12 of the minting time in milliseconds, then 20 random (80 bits, drawn for the whole batch in one
    read of the system's random source). Ids minted later sort later, so the store's unique index on
    ``record_id`` takes each batch at its right edge, a few pages, instead of one random page per row."""
    missing = [r for r in records if not r.record_id]
    if not missing:
        return
    prefix = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    digits = secrets.token_hex(10 * len(missing))
    for i, r in enumerate(missing):
        r.record_id = prefix + digits[20 * i:20 * i + 20]


class UsageWriter:
    def __init__(self, cfg: MeteringCfg, spill_dir: Path, metrics: GatewayMetrics, *,
                 probe_interval_s: float = PROBE_INTERVAL_S) -> None:
        if cfg.flush_interval_s <= 0 or cfg.write_timeout_s <= 0:
            raise ValueError("metering.flush_interval_s and metering.write_timeout_s must be positive")
        if cfg.batch_size < 1 or cfg.buffer_max_records < cfg.batch_size or cfg.spill_max_bytes < 0:
            raise ValueError("metering: batch_size must be at least 1 and at most buffer_max_records, "
                             "spill_max_bytes not negative")
        self._cfg = cfg
        self._probe_s = probe_interval_s
        self.spill = SpillDir(spill_dir, cfg.spill_max_bytes)
        self.metrics = WriterMetrics(metrics)
        self._store: Store | None = None
        self._pending: deque[tuple[float, Sequence[UsageRecord]]] = deque()  # (arrival, records)
        self._count = 0
        self._inflight: tuple[float, int] | None = None  # (arrival of its oldest record, size) being written
        self._overflow: asyncio.Task[None] | None = None
        self._overflow_load: tuple[float, int] | None = None
        self._wake = asyncio.Event()
        self._healthy = True
        self._probe_backoff = 1
        self._next_probe = 0.0
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._replaying: list[SpillFile] = []  # sealed and claimed files, replayed in order
        self._active_since: float | None = None  # when this process's current spill file got its first row
        self._dropped_unlogged = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL_S
        self._drop_reason = ""

    @property
    def healthy(self) -> bool:
        """Whether batches go to the store (False: to the spill file, until a probe answers)."""
        return self._healthy

    # -- the consumer -----------------------------------------------------------------------------

    async def consume(self, records: Sequence[UsageRecord]) -> None:
        if any(r.endpoint == HTTP_ENDPOINT for r in records):  # probes, scrapes, admin calls: counted, not usage
            records = [r for r in records if r.endpoint != HTTP_ENDPOINT]
        _mint_ids(records)
        n = len(records)
        if not n:
            return
        if self._count + n > self._cfg.buffer_max_records:
            if self._overflow is None or self._overflow.done():
                self._spill_overflow(records)
            else:  # the last overflow is still being written: the disk cannot keep up either
                self._drop(n, "the buffer is full and the spill file busy")
            return
        self._pending.append((time.time(), records))
        self._count += n
        if self._count >= self._cfg.batch_size:
            self._wake.set()

    def _spill_overflow(self, records: Sequence[UsageRecord]) -> None:
        """Move the buffer, plus `records`, to the spill file in the background."""
        since, taken = self._take(self._count)
        taken.extend(records)
        since = time.time() if since is None else since
        self._overflow_load = (since, len(taken))
        self._overflow = asyncio.create_task(self._spill_records(taken, since), name="llmops-usage-overflow")

    def _take(self, limit: int) -> tuple[float | None, list[UsageRecord]]:
        """Up to `limit` records from the buffer, oldest first, with the oldest one's arrival time."""
        out: list[UsageRecord] = []
        first: float | None = None
        while self._pending and len(out) < limit:
            arrived, chunk = self._pending.popleft()
            first = arrived if first is None else first
            room = limit - len(out)
            if len(chunk) > room:
                self._pending.appendleft((arrived, chunk[room:]))
                chunk = chunk[:room]
            out.extend(chunk)
        self._count -= len(out)
        return first, out

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, store: Store) -> None:
        """Open the spill directory (raises `OSError` when it cannot) and start writing to `store`."""
        await asyncio.to_thread(self.spill.open)
        self._store = store
        self._tasks = [asyncio.create_task(self._flush_loop(), name="llmops-usage-writer"),
                       asyncio.create_task(self._replay_loop(), name="llmops-usage-replay")]

    async def aclose(self) -> None:
        """Flush the buffer (to the store, or to the spill file while it is down), then stop.

        Bounded: a store that does not answer costs one `write_timeout_s`, then the rest spills."""
        self._closing = True
        self._wake.set()
        if self._tasks:
            flush, replay = self._tasks
            replay.cancel()  # an interrupted replay resumes in the next run, without double counting
            with contextlib.suppress(asyncio.CancelledError):
                await replay
            await flush  # ends after its current pass: a write in progress completes or spills
        if self._overflow is not None:
            await self._overflow
        if self._store is not None:
            await self._flush()
        self._log_drops(force=True)
        self._publish()
        await asyncio.to_thread(self.spill.close)

    # -- writing ----------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception:  # a bug here must not end metering: say so, the next pass retries
                log.exception("usage writer pass failed")
            self._publish()

    async def _flush(self) -> None:
        while self._count:
            if not self._healthy:
                since, records = self._take(self._count)
                await self._spill_records(records, since or time.time())
                continue
            since, records = self._take(self._cfg.batch_size)
            since = since or time.time()
            self._inflight = (since, len(records))
            try:
                rows = self._rows(records)
                if await self._write(rows):
                    self.metrics.written.inc(len(rows))
                else:
                    await self._spill_rows(rows, since)
            finally:
                self._inflight = None

    def _rows(self, records: list[UsageRecord]) -> list[UsageRow]:
        """Stored rows of `records`; one a plug-in broke (a field of the wrong type) is dropped, not its batch."""
        try:
            return [row_from_record(r) for r in records]
        except Exception:  # rare: find the culprits one by one
            rows = []
            for r in records:
                try:
                    rows.append(row_from_record(r))
                except Exception:
                    log.exception("usage record %s cannot be stored, dropped", r.record_id)
                    self._drop(1, "a record with a malformed field")
            return rows

    async def _write(self, rows: list[UsageRow]) -> bool:
        """One batch into the store; False when the store is down or too slow (it is then marked down).
        Rows the store refuses outright (a value it cannot hold) are dropped, loudly, not retried forever."""
        assert self._store is not None
        started = time.perf_counter()
        try:
            await write_usage(self._store, rows, timeout_s=self._cfg.write_timeout_s)
        except StoreUnavailable as err:
            self._mark_down(str(err))
            return False
        except StoreError as err:  # a row it refuses: find it, write the rest
            return await self._write_isolating(rows, err)
        except Exception as err:  # a driver error the store does not classify: keep the rows, say why
            log.exception("usage batch write failed")
            self._mark_down(type(err).__name__)
            return False
        finally:
            self.metrics.write_seconds.observe(time.perf_counter() - started)
        return True

    async def _write_isolating(self, rows: list[UsageRow], err: StoreError) -> bool:
        if len(rows) == 1:
            log.error("usage record %s refused by the store, dropped: %s", rows[0].record_id, err)
            self._drop(1, "the store refused a record")
            return True
        half = len(rows) // 2
        return await self._write(rows[:half]) and await self._write(rows[half:])

    def _mark_down(self, why: str) -> None:
        if self._healthy:
            self._healthy = False
            log.warning("usage store unavailable (%s): spilling usage records to %s until it answers",
                        why, self.spill.root)

    async def _spill_records(self, records: list[UsageRecord], since: float) -> None:
        """Convert and spill in a thread: a full buffer is too much work for the event loop in one go."""
        try:
            written = await asyncio.to_thread(self._convert_and_append, records, since)
        except OSError as err:
            log.error("usage spill to %s failed: %s", self.spill.root, err)
            written = 0
        finally:
            if self._overflow_load is not None and asyncio.current_task() is self._overflow:
                self._overflow_load = None
        self._after_spill(written, len(records), since)

    def _convert_and_append(self, records: list[UsageRecord], since: float) -> int:
        return self.spill.append(self._rows(records), since)

    async def _spill_rows(self, rows: list[UsageRow], since: float) -> None:
        try:
            written = await asyncio.to_thread(self.spill.append, rows, since)
        except OSError as err:
            log.error("usage spill to %s failed: %s", self.spill.root, err)
            written = 0
        self._after_spill(written, len(rows), since)

    def _after_spill(self, written: int, total: int, since: float) -> None:
        if written:
            self.metrics.spilled.inc(written)
            self._active_since = since if self._active_since is None else min(self._active_since, since)
        if written < total:
            self._drop(total - written, f"the spill directory is full ({self.spill.max_bytes} bytes) or failing")

    # -- replaying --------------------------------------------------------------------------------

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self._probe_s)
            try:
                await self._replay_once()
                self.metrics.spill_bytes.set(await asyncio.to_thread(self.spill.total_bytes))
            except Exception:  # a bug here must not end replaying: say so, the next round retries
                log.exception("usage spill replay failed")

    async def _replay_once(self) -> None:
        if not self._healthy:
            now = time.monotonic()
            if now < self._next_probe:
                return
            if not await self._probe():  # tried again after 1, 2, 4, then every 5 probe intervals
                self._probe_backoff = min(self._probe_backoff * 2, PROBE_BACKOFF_MAX)
                self._next_probe = now + self._probe_s * self._probe_backoff
                return
            self._healthy, self._probe_backoff, self._next_probe = True, 1, 0.0
            log.info("usage store answers again: writing usage records to it, replaying spilled ones")
        sealed = await asyncio.to_thread(self.spill.seal) if self._active_since is not None else None
        if sealed is not None:
            sealed.since, self._active_since = self._active_since or sealed.since, None
            self._replaying.append(sealed)
        self._replaying += await asyncio.to_thread(self.spill.claim_dead)
        while self._replaying and self._healthy:
            if not await self._replay_file(self._replaying[0]):
                return

    async def _probe(self) -> bool:
        assert self._store is not None
        try:
            async with self._store.read(timeout_s=self._cfg.write_timeout_s) as conn:
                await conn.execute(text("SELECT 1"))
        except StoreError:
            return False
        return True

    async def _replay_file(self, f: SpillFile) -> bool:
        """Replay one file batch by batch, then delete it; False when the store failed (it resumes there)."""
        while True:
            got = await asyncio.to_thread(self.spill.read, f, self._cfg.batch_size)
            if got.rows:
                if not await self._write(got.rows):
                    return False
                self.metrics.replayed.inc(len(got.rows))
            if got.bad_lines:
                log.warning("skipped %d unreadable line(s) in %s (a process killed mid-write)",
                            got.bad_lines, f.path.name)
                self._drop(got.bad_lines, "torn spill line")
            f.offset = got.next_offset
            if got.eof:
                break
        # Every row is stored now: it no longer counts toward the lag, even if a shutdown cancels the
        # removal below (the file then stays for a successor, whose replay the record ids make a no-op).
        self._replaying.remove(f)
        await asyncio.to_thread(self.spill.remove, f)
        log.info("replayed and removed spill file %s", f.path.name)
        return True

    # -- accounting -------------------------------------------------------------------------------

    def _drop(self, n: int, why: str) -> None:
        self.metrics.dropped.inc(n)
        self._dropped_unlogged += n
        self._drop_reason = why
        self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._dropped_unlogged and (force or now - self._drop_logged_at >= DROP_LOG_INTERVAL_S):
            log.error("dropped %d usage record(s): %s (buffer_max_records %d, spill_max_bytes %d)",
                      self._dropped_unlogged, self._drop_reason, self._cfg.buffer_max_records,
                      self._cfg.spill_max_bytes)
            self._dropped_unlogged = 0
            self._drop_logged_at = now

    def _publish(self) -> None:
        """Buffer depth and writer lag (the spill size is set by the replay task, which scans the disk)."""
        held = self._count + (self._inflight[1] if self._inflight else 0)
        held += self._overflow_load[1] if self._overflow_load else 0
        self.metrics.buffer.set(held)
        oldest = [t for t in (self._pending[0][0] if self._pending else None,
                              self._inflight[0] if self._inflight else None,
                              self._overflow_load[0] if self._overflow_load else None,
                              self._active_since, *(f.since for f in self._replaying)) if t is not None]
        self.metrics.lag.set(max(0.0, time.time() - min(oldest)) if oldest else 0.0)
        self._log_drops()
