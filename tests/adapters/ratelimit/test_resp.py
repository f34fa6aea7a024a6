"""The limiter's own RESP connection: URLs, authentication and databases against a real redis-server with
a password, pipelined calls answered in order, and no redis-py (nor OpenTelemetry) imported by the
built-in plug-in."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.ratelimit.resp import RedisAddress, RespConnection, RespError, parse_redis_url
from tests.servers import RedisServer, start_redis


@pytest.mark.parametrize(("url", "address"), [
    ("redis://cache", RedisAddress("cache")),
    ("rediss://app:p%40ss@cache:6380/2", RedisAddress("cache", 6380, "app", "p@ss", 2, True)),
    ("redis://:secret@10.0.0.5/1", RedisAddress("10.0.0.5", 6379, None, "secret", 1)),
])
def test_urls(url: str, address: RedisAddress) -> None:
    assert parse_redis_url(url) == address


@pytest.mark.parametrize(("url", "why"), [
    ("http://cache", "redis:// or rediss://"), ("redis://cache:port", "port"),
    ("redis://:hunter2@cache/zero", "database"),
])
def test_bad_urls_are_refused_without_echoing_them(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as refused:
        parse_redis_url(url)
    assert "hunter2" not in str(refused.value)


@pytest.fixture
def protected() -> Iterator[RedisServer]:
    """A redis-server that wants a password."""
    with start_redis() as server:
        server.stop()
        assert server._process is None
        argv = ["redis-server", "--port", str(server.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--requirepass", "s3cret", "--dir", str(server.root)]
        server._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                subprocess.run(["redis-cli", "-p", str(server.port), "-a", "s3cret", "--no-auth-warning", "ping"],
                               check=True, capture_output=True, timeout=5)
                break
            except subprocess.CalledProcessError:
                time.sleep(0.05)  # polling for the server to listen
        try:
            yield server
        finally:
            server._process.kill()
            server._process.wait()
            server._process = None


async def test_password_and_database_and_pipelined_calls(protected: RedisServer) -> None:
    conn = await RespConnection.open(f"redis://:s3cret@127.0.0.1:{protected.port}/3", 2.0)
    try:
        replies = await asyncio.gather(*(conn.call(b"SET", f"k{i}", f"v{i}") for i in range(50)),
                                       *(conn.call(b"GET", f"k{i}") for i in range(50)))
        assert replies == [b"OK"] * 50 + [f"v{i}".encode() for i in range(50)]  # in order, all in flight at once
        assert await conn.call(b"INCRBY", "n", 5) == 5
        assert await conn.call(b"GET", "missing") is None
        with pytest.raises(RespError, match="WRONGTYPE"):
            await conn.call(b"LPUSH", "n", "x")
        assert await conn.call(b"CLIENT", b"INFO") is not None  # the connection is still in step after an error
        assert (await conn.call(b"CLIENT", b"INFO")).decode().count("db=3") == 1
    finally:
        conn.close()
    with pytest.raises(RespError, match=r"WRONGPASS|invalid password"):
        await RespConnection.open(f"redis://:wrong@127.0.0.1:{protected.port}/0", 2.0)


async def test_a_lost_connection_fails_every_waiting_call(redis_server: RedisServer) -> None:
    conn = await RespConnection.open(redis_server.url, 2.0)
    waiting = [conn.call(b"BLPOP", "never", "5") for _ in range(3)]
    conn.close()
    for call in waiting:
        with pytest.raises(ConnectionError):
            await call
    with pytest.raises(ConnectionError):
        await conn.call(b"PING")


def test_the_builtin_plugin_imports_no_redis_client_and_no_opentelemetry() -> None:
    """Imported by every gateway: redis-py's import alone takes ~0.8 s and loads OpenTelemetry."""
    script = ("import sys, json; import gateway.policy.limits; "
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'opentelemetry'))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
