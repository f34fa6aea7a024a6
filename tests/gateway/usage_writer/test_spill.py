"""gateway/usage_writer/spill.py: durable appends, torn lines, the byte bound, and claiming dead processes' files."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from adapters.usage_store import UsageRow
from gateway.usage_writer.spill import SpillDir


def row(i: int) -> UsageRow:
    return UsageRow(record_id=f"rec-{i}", request_id=f"req-{i}", ts=1_767_225_600.0 + i, endpoint="chat",
                    route="r", model="m", provider="p", status=200, latency_s=0.1, usage_source="upstream")


def spill_dir(tmp_path: Path, max_bytes: int = 1 << 20) -> SpillDir:
    d = SpillDir(tmp_path / "spill", max_bytes)
    d.open()
    return d


def files(d: SpillDir) -> list[Path]:
    return sorted(d.root.glob("*.jsonl"))


def test_rows_round_trip_in_batches(tmp_path: Path) -> None:
    d = spill_dir(tmp_path)
    assert d.append([row(i) for i in range(5)], now=1.0) == 5
    assert d.append([row(i) for i in range(5, 8)], now=2.0) == 3
    (path,) = files(d)
    assert path.read_bytes().count(b"\n") == 8 and d.total_bytes() == path.stat().st_size
    f = d.seal()
    assert f is not None and f.since == 1.0
    first = d.read(f, 6)
    assert [r.record_id for r in first.rows] == [f"rec-{i}" for i in range(6)] and not first.eof
    f.offset = first.next_offset
    rest = d.read(f, 6)
    assert [r.record_id for r in rest.rows] == ["rec-6", "rec-7"] and rest.eof and rest.bad_lines == 0
    d.remove(f)
    assert files(d) == [] and d.total_bytes() == 0


def test_a_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    d = spill_dir(tmp_path)
    d.append([row(1), row(2)], now=1.0)
    (path,) = files(d)
    whole = msgspec.json.encode(row(3))
    with path.open("ab") as fh:  # killed mid-write: half a line, no newline
        fh.write(whole[: len(whole) // 2])
    f = d.seal()
    assert f is not None
    got = d.read(f, 100)
    assert [r.record_id for r in got.rows] == ["rec-1", "rec-2"]
    assert (got.bad_lines, got.eof, got.next_offset) == (1, True, path.stat().st_size)
    with path.open("ab") as fh:  # a complete last line without its newline is not torn
        fh.write(b"\n" + whole + b"\n" + b"{not json}\n" + whole)
    f.offset = got.next_offset
    more = d.read(f, 100)
    assert [r.record_id for r in more.rows] == ["rec-3", "rec-3"] and more.bad_lines == 1


def test_the_byte_bound_takes_what_fits(tmp_path: Path) -> None:
    line = len(msgspec.json.encode(row(0))) + 1
    d = spill_dir(tmp_path, max_bytes=3 * line + 5)
    assert d.append([row(i) for i in range(5)], now=1.0) == 3  # the prefix that fits
    assert d.append([row(9)], now=1.0) == 0
    assert d.total_bytes() == 3 * line


def test_a_failed_write_leaves_the_file_line_aligned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = spill_dir(tmp_path)
    d.append([row(1)], now=1.0)
    size = d.total_bytes()

    def disk_error(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", disk_error)
    with pytest.raises(OSError):
        d.append([row(2), row(3)], now=1.0)
    monkeypatch.undo()
    assert d.total_bytes() == size  # the half-durable batch was cut off again
    d.append([row(4)], now=1.0)
    f = d.seal()
    assert f is not None
    assert [r.record_id for r in d.read(f, 10).rows] == ["rec-1", "rec-4"]


def test_claims_only_files_whose_owner_is_gone(tmp_path: Path) -> None:
    mine = spill_dir(tmp_path)
    mine.append([row(1)], now=1.0)
    root = mine.root
    (root / "usage-1-1-dead.jsonl").write_bytes(msgspec.json.encode(row(2)) + b"\n")  # nobody holds it
    (root / "usage-2-1-dead.new").write_bytes(b"")  # died between creating and naming a file
    os.utime(root / "usage-2-1-dead.new", (1.0, 1.0))  # long ago (a fresh one may be being named right now)
    (root / "usage-4-1-naming.new").write_bytes(b"")
    alive = root / "usage-3-1-alive.jsonl"
    alive.write_bytes(msgspec.json.encode(row(3)) + b"\n")
    holder = os.open(alive, os.O_RDWR)  # a live owner: another open file description holds the lock
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        other = SpillDir(root, 1 << 20)  # e.g. another worker
        claimed = other.claim_dead()
        assert [f.path.name for f in claimed] == ["usage-1-1-dead.jsonl"]
        assert not (root / "usage-2-1-dead.new").exists() and (root / "usage-4-1-naming.new").exists()
        assert other.claim_dead() == []  # held now
        assert mine.claim_dead() == []  # and the first one's own file is its own
        other.remove(claimed[0])
        left = [p.name for p in files(mine)]
        assert len(left) == 2 and "usage-3-1-alive.jsonl" in left
        assert any(name.startswith(f"usage-{os.getpid()}-") for name in left)
    finally:
        os.close(holder)
    assert [f.path.name for f in SpillDir(root, 1 << 20).claim_dead()] == ["usage-3-1-alive.jsonl"]


def test_a_killed_process_file_is_claimed_once_it_is_dead(tmp_path: Path) -> None:
    """A real second process spills and stays alive: its file is not claimable; SIGKILL it and it is."""
    root = tmp_path / "spill"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from pathlib import Path
        from gateway.usage_writer.spill import SpillDir
        from tests.gateway.usage_writer.test_spill import row
        d = SpillDir(Path({str(root)!r}), 1 << 20)
        d.open()
        d.append([row(i) for i in range(3)], now=1.0)
        print("spilled", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"spilled\n"
        d = SpillDir(root, 1 << 20)
        assert d.claim_dead() == []
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        (f,) = d.claim_dead()
        assert [r.record_id for r in d.read(f, 10).rows] == ["rec-0", "rec-1", "rec-2"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
