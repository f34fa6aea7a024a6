"""Instructions per request of a whole server process under load: what this shared machine's timings cannot give.

    python -m loadtests.server_callgrind [--floor] [--tree DIR] [--extra JSON] [--load-s 40] [--window-s 50]

Runs one server (the llmops gateway from the tree `--tree`, default this one, with the bench's config
plus `--extra`; or, with `--floor`, the bench's bare pass-through) under `valgrind --tool=callgrind`,
pinned to core 1, against the canned nginx upstream, and counts the instructions of every thread of it:

1. warm up (20 s of load), then wait for the usage writer to flush what the warm-up left;
2. an idle window of `--window-s` (timers only: watchdog, usage worker, writer, change feed);
3. a window of the same length with `--load-s` of wrk at c=64 in it and the writer's last flush after it.

Per request = (loaded window - idle window) / requests. Valgrind runs the server ~40x slower, so the
gateway's time-based batching is scaled to keep batches as large as at full speed (usage queue 2 s,
metering.flush_interval_s 8 s) and the watchdog arms no watcher tasks (real requests end long before its
0.5 s); without that, per-batch and per-tick work would be spread over 40x fewer requests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from loadtests import bench_servers as servers
from loadtests.passthrough import FLOOR, VARIANTS
from loadtests.procs import free_port, start_process, stop_process, wait_for_port
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body, run_wrk

__all__ = ["main"]

_HERE = Path(__file__).resolve().parent.parent
# Runs inside the valgrinded process, before the gateway builds its watchdog and usage queue.
_SCALED_SERVE = """
import inspect, sys
import gateway.metering, gateway.watchdog
def scale(fn, **new):
    names = [p.name for p in inspect.signature(fn).parameters.values() if p.default is not inspect.Parameter.empty]
    defaults = list(fn.__defaults__)
    for k, v in new.items():
        defaults[names.index(k)] = v
    fn.__defaults__ = tuple(defaults)
scale(gateway.watchdog.Watchdog.__init__, after_s=1e9, tick_s=2.0)
scale(gateway.metering.UsageQueue.__init__, flush_interval_s=2.0)
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _merge(cfg: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value


def _total(out: Path) -> int:
    text = subprocess.run(["callgrind_annotate", str(out)], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", ""))
    raise RuntimeError(f"no totals in {out}")


def run(args: argparse.Namespace) -> tuple[int, int, int]:
    """(requests, idle instructions, loaded instructions)."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-callgrind-")))
        up = stack.enter_context(run_nginx(cpus=[0]))
        port = free_port()
        out = tmp / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        if args.floor:
            argv, env, cwd = VARIANTS[FLOOR].argv(port), {"UPSTREAM_URL": up.chat_url}, str(_HERE)
        else:
            cfg = servers.gateway_config(port, up.chat_url, up.stream_url, up.chat_url, up.chat_url)
            cfg["control"] = {"data_dir": str(tmp / "data"), "store": {"timeout_s": 60}}
            cfg["metering"] = {"flush_interval_s": 8, "write_timeout_s": 60}
            _merge(cfg, json.loads(args.extra))
            (tmp / "gw.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
            argv = [sys.executable, "-c", _SCALED_SERVE, "serve", "--config", str(tmp / "gw.yaml")]
            env, cwd = {"PYTHONPATH": args.tree}, args.tree
        proc = start_process([*valgrind, *argv], cpus=[1], env=env, log=tmp / "server.log", cwd=cwd)
        stack.callback(stop_process, proc)
        wait_for_port(port, proc=proc, timeout_s=300)
        base, body = f"http://127.0.0.1:{port}", chat_body("bench")
        servers.probe(base, body, timeout_s=120)
        run_wrk(base, body, connections=64, duration_s=20, cpus=[0])
        time.sleep(12)  # the warm-up's records flushed (8 s interval) before anything is counted

        def control(*opts: str) -> None:
            subprocess.run(["callgrind_control", *opts, str(proc.pid)], check=True, capture_output=True)

        control("-i", "on")
        time.sleep(args.window_s)
        control("-i", "off")
        control("-d")
        control("-i", "on")
        res = run_wrk(base, body, connections=64, duration_s=args.load_s, cpus=[0])
        time.sleep(args.window_s - args.load_s)
        control("-i", "off")
        control("-d")
        return res.requests, _total(out.with_name(out.name + ".1")), _total(out.with_name(out.name + ".2"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.server_callgrind", description=__doc__.splitlines()[0])
    p.add_argument("--floor", action="store_true", help="the bench's bare pass-through instead of the gateway")
    p.add_argument("--tree", default=str(_HERE), help="the source tree whose gateway runs (default: this one)")
    p.add_argument("--extra", default="{}",
                   help='JSON merged into the gateway config, e.g. {"metering": {"enabled": false}}')
    p.add_argument("--load-s", type=float, default=40.0)
    p.add_argument("--window-s", type=float, default=50.0, help="idle and loaded windows (load plus the last flush)")
    args = p.parse_args(argv)
    if args.window_s < args.load_s + 9:
        p.error("--window-s must leave the writer's 8 s flush after the load")
    requests, idle, loaded = run(args)
    print(f"{requests} requests; loaded window {loaded:,}, idle window {idle:,} instructions; "
          f"{(loaded - idle) / max(requests, 1):,.0f} instructions per request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
