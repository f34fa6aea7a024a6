"""Append-only spill files: usage rows the store could not take, kept on local disk until it can.

One JSON line per row (``adapters.usage_store.UsageRow``). Each process appends to a file of its
own, ``usage-<pid>-<n>-<random>.jsonl``, and holds an exclusive ``flock`` on every file it has
open, from the moment the file exists (it is created under a ``.new`` name, locked, then renamed)
until it is deleted. A file nobody holds a lock on belongs to a process that died (a killed
worker, the previous run): any process may claim it (the lock decides who) and replay it. Locks
die with their process, so a crash never leaves a file claimed.

A batch is written with one ``write`` and made durable with ``fdatasync`` before the call
returns. A failed write is cut back off, so the file only ever ends in a torn line when the
process died mid-write; readers skip lines that do not decode and report how many.

All methods block (disk I/O, fsync): call them from a thread. One lock makes them safe to call
from several threads and makes ``close`` wait for a read or write in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from adapters.usage_store import UsageRow

__all__ = ["SpillDir", "SpillFile", "SpillRead"]

log = logging.getLogger("llmops.metering")

_SUFFIX = ".jsonl"
_NEW = ".new"
_READ_BLOCK = 1 << 20
_NEW_GRACE_S = 60.0
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(UsageRow).decode


@dataclass(eq=False)
class SpillFile:
    """A spill file this process holds locked. ``offset``: how far it has been replayed."""

    path: Path
    fd: int
    size: int
    since: float  # wall clock of its oldest row's spilling (a claimed file: its last write, a lower bound)
    offset: int = 0


@dataclass(frozen=True)
class SpillRead:
    rows: list[UsageRow]
    bad_lines: int  # torn (killed mid-write) or otherwise undecodable, skipped
    next_offset: int  # where the next read starts, once these rows are safely in the store
    eof: bool


class SpillDir:
    """The spill directory as one process sees it; ``max_bytes`` bounds every file in it together."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._active: SpillFile | None = None  # the file appends go to
        self._held: dict[Path, SpillFile] = {}  # every file this process has open and locked
        self._seq = 0

    def open(self) -> None:
        """Create the directory (and parents); raises ``OSError`` when it cannot."""
        self.root.mkdir(parents=True, exist_ok=True)

    def append(self, rows: Sequence[UsageRow], now: float) -> int:
        """Append ``rows`` durably; returns how many were written: all of them, or the prefix that
        fits under ``max_bytes``. Raises ``OSError`` (disk full, I/O error) with nothing written."""
        lines = [_encode(r) + b"\n" for r in rows]
        with self._lock:
            room = self.max_bytes - self._total_bytes()
            take = 0
            for line in lines:
                if len(line) > room:
                    break
                room -= len(line)
                take += 1
            if not take:
                return 0
            f = self._active or self._new_file(now)
            data = b"".join(lines[:take]) if take < len(lines) else b"".join(lines)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(f.fd, view):]
                os.fdatasync(f.fd)
            except OSError:
                with contextlib.suppress(OSError):  # keep the file line-aligned for whoever reads it
                    os.ftruncate(f.fd, f.size)
                raise
            f.size += len(data)
            return take

    def seal(self) -> SpillFile | None:
        """Stop appending to the active file and hand it over for replay (None when there is none)."""
        with self._lock:
            f, self._active = self._active, None
            return f

    def claim_dead(self) -> list[SpillFile]:
        """Lock and return the files of processes that are gone (no lock held on them), oldest first."""
        found = []
        with self._lock:
            try:
                entries = sorted(os.scandir(self.root), key=lambda e: e.name)
            except FileNotFoundError:
                return []
            for entry in entries:
                path = Path(entry.path)
                if path in self._held:
                    continue
                if entry.name.endswith(_NEW):  # died between creating and naming it: empty
                    with contextlib.suppress(FileNotFoundError):  # (a minute old: not one being named now)
                        if time.time() - entry.stat().st_mtime > _NEW_GRACE_S:
                            self._remove_if_dead(path)
                elif entry.name.endswith(_SUFFIX) and (f := self._claim(path)) is not None:
                    found.append(f)
        return found

    def read(self, f: SpillFile, max_rows: int) -> SpillRead:
        """Up to ``max_rows`` rows from ``f.offset`` on; ``f.offset`` is left for the caller to advance."""
        rows: list[UsageRow] = []
        bad = 0
        with self._lock:
            offset = f.offset
            pending = b""
            while len(rows) < max_rows:
                block = os.pread(f.fd, _READ_BLOCK, offset + len(pending))
                if not block:  # end of file: a last line without its newline is complete or torn
                    if pending:
                        bad += _decode_into(pending, rows)
                        offset += len(pending)
                    return SpillRead(rows, bad, offset, eof=True)
                pending += block
                start = 0
                while len(rows) < max_rows and (end := pending.find(b"\n", start)) >= 0:
                    if end > start:
                        bad += _decode_into(pending[start:end], rows)
                    start = end + 1
                offset += start
                pending = pending[start:]
            eof = offset >= os.fstat(f.fd).st_size
            return SpillRead(rows, bad, offset, eof=eof)

    def remove(self, f: SpillFile) -> None:
        """Delete a replayed file (while still holding its lock, so nobody claims it in between)."""
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.path)
            self._release(f)

    def total_bytes(self) -> int:
        with self._lock:
            return self._total_bytes()

    def close(self) -> None:
        """Release every file (they stay on disk, for this process's successor to replay)."""
        with self._lock:
            for f in list(self._held.values()):
                self._release(f)
            self._active = None

    # -- under self._lock ------------------------------------------------------------------------

    def _total_bytes(self) -> int:
        total = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.endswith(_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
        return total

    def _new_file(self, now: float) -> SpillFile:
        self._seq += 1
        name = f"usage-{os.getpid()}-{self._seq}-{secrets.token_hex(4)}"
        tmp, path = self.root / (name + _NEW), self.root / (name + _SUFFIX)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows the name yet: never blocks
            os.rename(tmp, path)  # only now can another process see it, and it is locked
            _fsync_dir(self.root)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        f = self._active = self._held[path] = SpillFile(path, fd, 0, now)
        return f

    def _claim(self, path: Path) -> SpillFile | None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            st = os.fstat(fd)
            if os.stat(path).st_ino != st.st_ino:  # replayed and deleted (a new file took the name)
                raise FileNotFoundError(path)
        except (BlockingIOError, FileNotFoundError):  # its owner is alive, or someone replayed it
            os.close(fd)
            return None
        f = self._held[path] = SpillFile(path, fd, st.st_size, st.st_mtime)
        log.info("claimed spill file %s (%d bytes) left by a process that is gone", path.name, st.st_size)
        return f

    def _remove_if_dead(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
            finally:
                os.close(fd)

    def _release(self, f: SpillFile) -> None:
        self._held.pop(f.path, None)
        if self._active is f:
            self._active = None
        with contextlib.suppress(OSError):
            os.close(f.fd)  # drops the lock


def _decode_into(line: bytes, rows: list[UsageRow]) -> int:
    """Append the decoded row; 1 when the line does not decode (torn), else 0."""
    try:
        rows.append(_decode(line))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 1
    return 0


def _fsync_dir(path: Path) -> None:
    """Make a new file's name durable, not only its contents."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
