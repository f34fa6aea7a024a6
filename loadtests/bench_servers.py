"""Start the benchmark's servers: floor pass-through, llmops gateway, LiteLLM proxy, mock upstreams.

Each `start_*` returns a `Running` (where it listens + the process) or raises
`ProcessFailed` with the log tail; the caller stops every process it got. Config
files go in the run's temp dir. `gateway_config` is the one place to turn more
gateway features on as the gateway grows them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtests.passthrough import VARIANTS
from loadtests.procs import ProcessFailed, free_port, start_process, stop_process, wait_for_port

__all__ = [
    "Running",
    "gateway_config",
    "litellm_config",
    "probe",
    "start_floor",
    "start_gateway",
    "start_litellm",
    "start_mock",
]

_BIN = Path(sys.executable).parent
STREAM_CHUNKS = 50


@dataclass
class Running:
    """A started server: `base` is scheme://host:port; `proc` must be passed to `stop_process`."""

    label: str
    port: int
    proc: subprocess.Popen[bytes]
    detail: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def probe(base: str, body: str, path: str = "/v1/chat/completions", timeout_s: float = 30.0) -> bytes:
    """One POST that must answer 200: proves the whole chain works before load is put on it."""
    req = urllib.request.Request(
        base + path, data=body.encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        raise ProcessFailed(f"{base}{path} answered {exc.code}: {exc.read()[:400]!r}") from None
    except OSError as exc:
        raise ProcessFailed(f"{base}{path} failed: {exc}") from None


def _started(
    label: str,
    argv: Sequence[str],
    port: int,
    cpus: Sequence[int],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Running:
    proc = start_process(argv, cpus=cpus, env=env, log=log)
    try:
        wait_for_port(port, proc=proc, timeout_s=timeout_s)
    except ProcessFailed:
        stop_process(proc)
        raise
    return Running(label, port, proc)


def start_floor(key: str, upstream_url: str, cpus: Sequence[int], tmp: Path) -> Running:
    variant = VARIANTS[key]
    port = free_port()
    run = _started(
        f"floor: {variant.label}",
        variant.argv(port),
        port,
        cpus,
        tmp / "floor.log",
        env={"UPSTREAM_URL": upstream_url},
    )
    run.detail = key
    return run


def start_mock(tokens_per_s: float, cpus: Sequence[int], tmp: Path, name: str) -> Running:
    """The llmops mock upstream as a child: `STREAM_CHUNKS` one-token chunks per answer."""
    port = free_port()
    argv = [
        str(_BIN / "llmops"),
        "mock-upstream",
        "--port",
        str(port),
        "--tokens-per-s",
        str(tokens_per_s),
        "--completion-tokens",
        str(STREAM_CHUNKS),
        "--chunk-tokens",
        "1",
    ]
    return _started(f"mock upstream ({name})", argv, port, cpus, tmp / f"mock-{name}.log")


# `--gateway-plugins`: plug-in sets the gateway can run under, found through PLUGIN_PATH's dist-info.
PLUGIN_PATH = Path(__file__).resolve().parent / "plugins"
PLUGIN_SETS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "noop3": [{"name": "noop-a"}, {"name": "noop-b"}, {"name": "noop-c"}],  # every hook, three times
}


def gateway_config(
    port: int, chat_url: str, sse_url: str, mock_fast_url: str, mock_paced_url: str, plugins: str = "none"
) -> dict[str, Any]:
    """Routes: `bench` (nginx JSON), `bench-sse` (nginx canned SSE), `bench-ttft`/`bench-paced` (mock)."""

    def provider(name: str, url: str) -> dict[str, Any]:
        return {"name": name, "kind": "openai", "base_url": url}

    def route(name: str, provider_name: str) -> dict[str, Any]:
        return {"name": name, "targets": [{"provider": provider_name, "model": "canned"}]}

    return {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "providers": [
            provider("upstream", chat_url),
            provider("upstream-sse", sse_url),
            provider("mock-fast", mock_fast_url),
            provider("mock-paced", mock_paced_url),
        ],
        "routes": [
            route("bench", "upstream"),
            route("bench-sse", "upstream-sse"),
            route("bench-ttft", "mock-fast"),
            route("bench-paced", "mock-paced"),
        ],
        **({"plugins": PLUGIN_SETS[plugins]} if PLUGIN_SETS[plugins] else {}),
    }


def _plugin_env(config: dict[str, Any]) -> dict[str, str] | None:
    """Plug-ins are found by entry point: put the bench's plug-in package on the path."""
    if not config.get("plugins"):
        return None
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(PLUGIN_PATH), os.environ.get("PYTHONPATH")) if p)}


def start_gateway(config: dict[str, Any], cpus: Sequence[int], tmp: Path, *, workers: int = 1,
                  name: str = "gateway") -> Running:
    """`llmops serve` (`--workers N` when N > 1); config and log are `tmp/<name>.yaml` and `.log`."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    llmops = str(_BIN / "llmops")
    env = _plugin_env(config)
    check = subprocess.run([llmops, "check-config", str(path)], capture_output=True, text=True, timeout=60,
                           check=False, env=None if env is None else {**os.environ, **env})
    if check.returncode != 0:
        raise ProcessFailed(f"gateway config rejected: {check.stderr.strip() or check.stdout.strip()}")
    port = int(config["server"]["port"])
    argv = [llmops, "serve", "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    label = "llmops gateway" if workers == 1 else f"llmops gateway ({workers} workers)"
    run = _started(label, argv, port, cpus, tmp / f"{name}.log", env=env, timeout_s=60)
    _wait_ready(run, timeout_s=30)
    return run


def _wait_ready(run: Running, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(run.base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # no readiness endpoint: listening is all we can know
                return
            last = f"/readyz answered {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    stop_process(run.proc)
    raise ProcessFailed(f"{run.label} not ready after {timeout_s:.0f}s: {last}")


def litellm_config(chat_url: str, sse_url: str) -> dict[str, Any]:
    def model(name: str, url: str) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {"model": "openai/canned", "api_base": url, "api_key": "none"},
        }

    return {
        "model_list": [model("bench", chat_url), model("bench-sse", sse_url)],
        "litellm_settings": {"drop_params": True},
    }


def start_litellm(chat_url: str, sse_url: str, cpus: Sequence[int], tmp: Path) -> Running:
    """LiteLLM's proxy, one worker, offline (local price map, no telemetry)."""
    exe = shutil.which("litellm", path=str(_BIN))
    if exe is None:
        raise ProcessFailed("litellm is not installed (pip install 'llmops[loadtest]')")
    path = tmp / "litellm.yaml"
    path.write_text(json.dumps(litellm_config(chat_url, sse_url)), encoding="utf-8")
    port = free_port()
    # No master key, like the gateway's bench config (no keys yet); access log off, as the gateway's is.
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "NO_DOCS": "True",
    }
    log_config = tmp / "litellm-logging.json"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "loggers": {"uvicorn.access": {"level": "WARNING"}},
            }
        ),
        encoding="utf-8",
    )
    argv = [
        exe,
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--log_config",
        str(log_config),
    ]
    run = _started("LiteLLM proxy", argv, port, cpus, tmp / "litellm.log", env=env, timeout_s=120)
    try:
        version = subprocess.run(
            [sys.executable, "-c", "import importlib.metadata as m;print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except subprocess.TimeoutExpired:
        version = "?"
    run.detail = version
    return run
