"""Drive wrk (a C load generator, so the client is never the Python bottleneck) and parse its output.

wrk sends GETs by default; a tiny Lua script turns every request into the same
`POST /v1/chat/completions` with a JSON body. `--latency` adds the percentile
table that `parse_wrk` reads p50/p99 from.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests.procs import cpu_prefix

__all__ = [
    "WRK",
    "WrkError",
    "WrkResult",
    "chat_body",
    "lua_script",
    "parse_duration_ms",
    "parse_wrk",
    "run_wrk",
]

WRK = shutil.which("wrk") or "/usr/bin/wrk"


class WrkError(RuntimeError):
    """wrk failed to run or printed something `parse_wrk` cannot read."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; `errors` = socket errors + non-2xx/3xx answers."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: int = 0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def chat_body(model: str, stream: bool = False) -> str:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def lua_script(body: str, path: str = "/v1/chat/completions", headers: Mapping[str, str] | None = None) -> str:
    """A wrk script that POSTs `body` to `path` on every request (ASCII JSON strings are valid Lua)."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.path = {json.dumps(path)}",
        f"wrk.body = {json.dumps(body)}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items()]
    return "\n".join(lines) + "\n"


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = re.compile(r"^([0-9]*\.?[0-9]+)(us|ms|s|m|h)$")


def parse_duration_ms(text: str) -> float:
    """wrk prints latencies as `812.00us`, `1.23ms`, `2.01s`; return milliseconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise WrkError(f"unreadable wrk duration {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


_REQS = re.compile(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_PCT = re.compile(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> WrkResult:
    """Read requests, req/s, p50, p99 and errors from wrk's `--latency` output."""
    reqs, rps = _REQS.search(output), _RPS.search(output)
    pcts = {m.group(1): parse_duration_ms(m.group(2)) for m in _PCT.finditer(output)}
    if not reqs or not rps or "50" not in pcts or "99" not in pcts:
        raise WrkError(f"cannot parse wrk output (was --latency given?):\n{output[-1500:]}")
    socket = _SOCKET.search(output)
    non2xx = _NON2XX.search(output)
    return WrkResult(
        requests=int(reqs.group(1)),
        duration_s=parse_duration_ms(reqs.group(2) + reqs.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=pcts["50"],
        p99_ms=pcts["99"],
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in socket.groups()) if socket else 0,
    )


def run_wrk(
    url: str,
    body: str,
    *,
    connections: int,
    duration_s: float,
    cpus: Sequence[int] | None = None,
    path: str = "/v1/chat/completions",
    headers: Mapping[str, str] | None = None,
) -> WrkResult:
    """One bounded wrk run (one thread, `connections` keep-alive connections) against `url`."""
    with tempfile.TemporaryDirectory(prefix="llmops-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(body, path, headers), encoding="utf-8")
        argv = [
            *cpu_prefix(cpus),
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
        except subprocess.TimeoutExpired as exc:
            raise WrkError(f"wrk did not finish: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout[-500:]}")
    return parse_wrk(done.stdout)
