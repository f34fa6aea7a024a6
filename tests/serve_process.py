"""Real `llmops serve` processes for tests that need several (replicas on one database, a restart)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import free_port

__all__ = ["serve", "stop", "until", "wait_ready"]


def serve(tmp_path: Path, name: str, config: Mapping[str, Any],
          env: Mapping[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Write `config` to `tmp_path/<name>.yaml` and start `llmops serve` on a free port; (process, base URL)."""
    port = free_port()
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(config)))
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**os.environ, **(env or {})})
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(url: str, proc: subprocess.Popen[bytes], within_s: float = 60.0, poll_s: float = 0.05) -> None:
    """Until `/readyz` answers 200; a process that exits, or never gets there, fails with its stderr."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    proc.kill()
    raise AssertionError(f"{url} never came up: {proc.communicate()[1].decode()[-2000:]}")


def until(check: Callable[[], Any], within_s: float) -> float:
    """Poll `check` until true; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within_s, f"not seen within {within_s} s"
        time.sleep(0.01)
    return time.monotonic() - start


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """SIGTERM each, wait for them, and fail on a traceback in any one's stderr."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        assert b"Traceback" not in err, err.decode()[-3000:]
