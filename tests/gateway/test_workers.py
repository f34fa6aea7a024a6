"""`llmops serve --workers N`: metrics summed over workers, SIGHUP reloads each, SIGTERM drains, crashes restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from gateway.workers import cpu_count, parse_workers
from tests.conftest import free_port

MSG = [{"role": "user", "content": "hi"}]


def _config(base_url: str = "builtin:mock", route: str = "one") -> dict[str, Any]:
    return {"server": {"log_level": "info"}, "control": {"enabled": False},
            "providers": [{"name": "mock", "kind": "openai", "base_url": base_url}],
            "routes": [{"name": route, "targets": [{"provider": "mock", "model": "m"}]}]}


class _Served:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path, metrics_dir: Path) -> None:
        self.proc, self.base, self.log, self.metrics_dir = proc, base, log, metrics_dir

    def workers(self) -> set[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return {int(c) for c in children}

    def text(self) -> str:
        return self.log.read_text()


def _until(check: Callable[[], bool], what: str, deadline_s: float = 20) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _serve(tmp_path: Path, cfg: dict[str, Any], workers: int = 2,
           env: dict[str, str] | None = None) -> Iterator[_Served]:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log, metrics_dir = tmp_path / "serve.log", tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **(env or {})}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port),
             "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path, env=env)
    served = _Served(proc, f"http://127.0.0.1:{port}", log, metrics_dir)
    try:
        _until(lambda: served.text().count("serving") >= workers, "every worker to start")
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, served.text()[-3000:]
    assert "Traceback" not in served.text(), served.text()[-3000:]


def _requests_total(base: str, route: str) -> float:
    text = httpx.get(base + "/metrics", headers={"connection": "close"}, timeout=5).text
    return sum(s.value for family in text_string_to_metric_families(text) if family.name == "llmops_requests"
               for s in family.samples if s.name == "llmops_requests_total" and s.labels["route"] == route)


def _served_by(metrics_dir: Path, route: str) -> set[int]:
    """Pids of the workers whose own metrics file counts a request on `route` (published each second)."""
    pids = set()
    for f in metrics_dir.glob("counter_stats-*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(f)):
            _, name, labels, _ = json.loads(key)
            if name == "llmops_requests_total" and labels.get("route") == route and value > 0:
                pids.add(int(f.stem.rsplit("-", 1)[1]))
    return pids


def test_parse_workers() -> None:
    assert parse_workers("3") == 3
    assert parse_workers("auto") == cpu_count() >= 1
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError):
            parse_workers(bad)


def test_requests_total_is_the_sum_over_workers_whichever_answers(tmp_path: Path) -> None:
    with _serve(tmp_path, _config()) as s:
        sent = 0

        async def burst() -> None:
            nonlocal sent
            # A fresh connection per request, several at once: the kernel hands them to both workers.
            async with httpx.AsyncClient(base_url=s.base, limits=httpx.Limits(max_keepalive_connections=0)) as h:
                rs = await asyncio.gather(*(h.post("/v1/chat/completions", json={"model": "one", "messages": MSG})
                                            for _ in range(20)))
            assert all(r.status_code == 200 for r in rs)
            sent += len(rs)

        def both_served() -> bool:
            asyncio.run(burst())
            return len(list(s.metrics_dir.glob("counter_stats-*.db"))) >= 2

        _until(both_served, "requests answered by both workers")
        _until(lambda: _requests_total(s.base, "one") == sent, f"llmops_requests_total == {sent}")
        for _ in range(10):  # every scrape, whichever worker answers it, sees every worker's requests
            assert _requests_total(s.base, "one") == sent


def test_sighup_reloads_every_worker(tmp_path: Path) -> None:
    with _serve(tmp_path, _config(route="one")) as s:
        (tmp_path / "gw.yaml").write_text(yaml.safe_dump(_config(route="two")))
        s.proc.send_signal(signal.SIGHUP)
        _until(lambda: s.text().count("config reloaded") == 2, "both workers to reload")
        for _ in range(20):
            r = httpx.get(s.base + "/v1/models", headers={"connection": "close"})
            assert [m["id"] for m in r.json()["data"]] == ["two"]


def test_admin_reload_reloads_every_worker(tmp_path: Path) -> None:
    cfg = {**_config(route="one"), "control": {"data_dir": str(tmp_path / "ctl"), "modules": ["governance"]}}
    with _serve(tmp_path, cfg, env={"LLMOPS_ADMIN_KEY": "adm-secret"}) as s:
        (tmp_path / "gw.yaml").write_text(yaml.safe_dump({**cfg, "routes": _config(route="two")["routes"]}))
        r = httpx.post(s.base + "/llm-ops/v1/gateway/reload", headers={"authorization": "Bearer adm-secret"})
        assert r.status_code == 200 and r.json()["data"]["routes"] == ["two"], r.text
        # The answering worker reloaded before answering, the other one on the supervisor's word: once each.
        _until(lambda: s.text().count("config reloaded") == 2, "both workers to reload")

        def both_serve_two() -> bool:
            for _ in range(10):  # a fresh connection each: the kernel spreads them over both workers
                r = httpx.post(s.base + "/v1/chat/completions", json={"model": "two", "messages": MSG},
                               headers={"connection": "close"})
                assert r.status_code == 200, r.text
            return _served_by(s.metrics_dir, "two") == s.workers()

        _until(both_serve_two, "requests for the new route answered by both workers")
        assert s.text().count("config reloaded") == 2


def test_killed_worker_is_restarted(tmp_path: Path) -> None:
    with _serve(tmp_path, _config()) as s:
        first = s.workers()
        assert len(first) == 2
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        _until(lambda: len(s.workers()) == 2 and victim not in s.workers(), "a replacement worker")
        _until(lambda: s.text().count("serving") == 3, "the replacement to start")
        for _ in range(10):
            r = httpx.post(s.base + "/v1/chat/completions", json={"model": "one", "messages": MSG},
                           headers={"connection": "close"})
            assert r.status_code == 200


async def test_sigterm_lets_an_inflight_stream_finish(tmp_path: Path, mock: Any) -> None:
    mock.config = msgspec.structs.replace(mock.config, tokens_per_s=20, completion_tokens=20)  # ~1 s stream
    with _serve(tmp_path, _config(mock.url)) as s:
        async with httpx.AsyncClient(base_url=s.base, timeout=20) as h:
            async def stream() -> str:
                r = await h.post("/v1/chat/completions", json={"model": "one", "stream": True, "messages": MSG})
                return r.text

            task = asyncio.create_task(stream())
            async with asyncio.timeout(10):
                while mock.active < 1:
                    await asyncio.sleep(0.01)
            s.proc.send_signal(signal.SIGTERM)
            text = await task
            assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text
            assert len(text.split("data: ")) > 20
            rc = await asyncio.to_thread(s.proc.wait, 30)
        assert rc == 0
