"""Real PostgreSQL and Redis servers for tests: started once per session, on free loopback ports.

Load with ``pytest_plugins = ["tests.servers"]`` in the top-level conftest. Fixtures:

* ``postgres_server`` (session): a throwaway cluster (initdb + pg_ctl, fsync off) in
  a temp dir; stopped cleanly at the end of the session.
* ``redis_server`` (session): ``redis-server`` without persistence; shut down at the end.
* ``database_url`` (function, parametrized ``sqlite`` / ``postgresql``): a fresh,
  empty database per test, so every store test runs against both backends.
  The SQLite side is a file under ``tmp_path``; the PostgreSQL side a database on
  the session server, emptied afterwards (schema dropped, stray sessions
  terminated) and reused by a later test.
* ``start_postgres()``: a context manager for tests that need a server of their own,
  e.g. to stop it mid-test and check the outage handling.

Without the server binaries (``apt-get install postgresql redis-server``; ``./dev
test`` installs them) the PostgreSQL/Redis cases are skipped with that reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "PostgresServer",
    "RedisServer",
    "database_url",
    "free_port",
    "postgres_server",
    "redis_server",
    "start_postgres",
    "start_redis",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; drop to the ``postgres`` user the Debian package creates."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    _free: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(
            _as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                          "-w", "-t", "30", "-o", opts, "start"]),
            check=True, capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30",
                          "stop"]),
            check=False, capture_output=True,
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return done.stdout.strip()

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def acquire_database(self) -> str:
        """An empty database: a recycled one when available (CREATE DATABASE costs ~0.5 s, a reset ~30 ms)."""
        return self._free.pop() if self._free else self.create_database()

    def release_database(self, name: str) -> None:
        """Empty the database and keep it for the next test; drop it if that fails."""
        try:
            self.psql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                "AND pid <> pg_backend_pid(); SET lock_timeout = '5s'; "
                "DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
                database=name,
            )
        except subprocess.CalledProcessError:
            self.drop_database(name)
            return
        self._free.append(name)

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already gone with a stopped server
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="llmops-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PostgresServer(bin_dir, root, free_port())
    try:
        subprocess.run(
            _as_postgres([str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "postgres", "-A", "trust",
                          "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]),
            check=True, capture_output=True,
        )
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RedisServer:
    root: Path
    port: int
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Run in the foreground as our child, so stopping it can also reap it."""
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no", "--save", "",
             "--appendonly", "no", "--dir", str(self.root), "--logfile", str(self.root / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port} (see {self.root / 'redis.log'})")

    def stop(self) -> None:
        if self._process is None:
            return
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False, capture_output=True)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


@contextlib.contextmanager
def start_redis() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="llmops-redis-"))
    server = RedisServer(root, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with start_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with start_redis() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database per test: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'llmops.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.acquire_database()
    try:
        yield server.url(name)
    finally:
        server.release_database(name)
