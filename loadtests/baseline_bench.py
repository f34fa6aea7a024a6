"""This tree's gateway against an earlier commit's, both without plug-ins, at c=64, paired.

`python -m loadtests.baseline_bench --baseline REV [--pairs 10] [--pair-duration 3] [--server-cpu 1] [--load-cpu 0]`

Issue 8 asks that the plug-in seams cost nothing when no plug-in is enabled: at
least 0.97x the req/s of the commit before them. The baseline commit is exported
with `git archive` into a temporary directory and run from there with the same
virtualenv (`PYTHONPATH` puts its packages first); this tree's gateway runs from
the tree that holds this file. Both serve the bench's config against the canned
nginx upstream, pinned to the same core, loaded by wrk in alternating runs (ABBA,
loadtests/paired.py). The verdict is on the median per-pair req/s ratio, with each
server's CPU time per request from /proc beside it (the steadier of the two on a
shared machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import yaml

from loadtests import bench_servers as servers
from loadtests.paired import PairedRun, measure_pairs, paired_parser, parse_paired
from loadtests.procs import free_port, stop_process
from loadtests.report import Check, fmt
from loadtests.sweep import Target
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body

__all__ = ["RPS_TARGET", "baseline_table", "main"]

RPS_TARGET = 0.97  # this tree's req/s over the baseline's, at least
_HERE = Path(__file__).resolve().parent.parent  # the tree whose gateway is "current"
_SERVE = "import sys; from gateway.cli import main; sys.exit(main())"


def baseline_table(runs: Sequence[PairedRun], baseline: str, current: str) -> str:
    """Markdown: medians of each side, the ratios and the verdict (`floor` = baseline, `gateway` = current)."""
    if not runs:
        return "(no runs)\n"
    cpus = [(r.floor_cpu_us, r.gateway_cpu_us) for r in runs if r.floor_cpu_us and r.gateway_cpu_us]
    rps = (statistics.median(r.floor.rps for r in runs), statistics.median(r.gateway.rps for r in runs))
    cpu = (statistics.median(c[0] for c in cpus), statistics.median(c[1] for c in cpus)) if cpus else (None, None)
    pair_cpu = statistics.median(c[0] / c[1] for c in cpus) if cpus else None
    rps_ratio = statistics.median(r.ratio for r in runs)
    lines = [
        f"{len(runs)} pairs at c=64, medians (req/s ratio range {fmt(min(r.ratio for r in runs))}"
        f" to {fmt(max(r.ratio for r in runs))})",
        "",
        "| | req/s | CPU µs / request |",
        "|---|---:|---:|",
        f"| baseline `{baseline}` | {fmt(rps[0], 0)} | {fmt(cpu[0], 1)} |",
        f"| this tree `{current}` | {fmt(rps[1], 0)} | {fmt(cpu[1], 1)} |",
        f"| this / baseline | {fmt(rps_ratio)} | {fmt(pair_cpu)} (per pair: baseline CPU over this tree's) |",
        "",
        Check(f"no plug-ins: req/s ≥ {RPS_TARGET:.2f} x the baseline (median paired ratio)", rps_ratio >= RPS_TARGET,
              f"req/s ratio {fmt(rps_ratio)}; CPU ratio {fmt(pair_cpu)}").line,
    ]
    return "\n".join(lines) + "\n"


def _bare() -> dict[str, object]:
    """Config that turns off what later issues added by default (built-in plug-ins, the usage writer)."""
    from gateway.plugins import BUILTIN_PLUGINS

    return {"plugins": [{"name": n, "enabled": False} for n in BUILTIN_PLUGINS], "metering": {"enabled": False}}


def _rev(tree: Path, rev: str) -> str:
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.strip()


def _export(rev: str, into: Path) -> None:
    """`git archive REV | tar -x`: the commit's files only, no worktree bookkeeping."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(_HERE), "archive", rev], capture_output=True, check=True, timeout=120)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=120)


def _start(tree: Path, cfg: dict[str, object], cpus: Sequence[int], tmp: Path, name: str) -> servers.Running:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    port = int(cfg["server"]["port"])  # type: ignore[index]
    argv = [sys.executable, "-c", _SERVE, "serve", "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    run = servers._started(name, argv, port, cpus, tmp / f"{name}.log", env=env, timeout_s=60)
    servers._wait_ready(run, timeout_s=30)
    return run


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = paired_parser("loadtests.baseline_bench", __doc__.splitlines()[0], doc=False)
    p.add_argument("--baseline", required=True, help="the earlier commit (any git revision)")
    p.add_argument("--bare", action="store_true",
                   help="this tree with its built-in plug-ins and usage writer off: the seams alone, as the "
                        "baseline had no such features")
    return parse_paired(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    body = chat_body("bench")
    baseline_rev = _rev(_HERE, args.baseline)
    current_rev = _rev(_HERE, "HEAD")
    dirty = subprocess.run(["git", "-C", str(_HERE), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    current = current_rev + ("+changes" if dirty else "") + (" bare" if args.bare else "")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-baseline-bench-")))
        _export(baseline_rev, tmp / "baseline")
        up = stack.enter_context(run_nginx(cpus=[args.load_cpu]))
        targets, pids = [], []
        for name, tree in (("baseline", tmp / "baseline"), ("current", _HERE)):
            cfg = servers.gateway_config(free_port(), up.chat_url, up.stream_url, up.chat_url, up.chat_url)
            cfg["control"] = {"data_dir": str(tmp / f"control-{name}")}
            if args.bare and name == "current":
                cfg.update(_bare())
            gw = _start(tree, cfg, [args.server_cpu], tmp, name)
            stack.callback(stop_process, gw.proc)
            servers.probe(gw.base, body)
            targets.append(Target(name, name, gw.base, body))
            pids.append(gw.proc.pid)
        print(f"{args.pairs} pairs x {args.pair_duration:.0f} s at c=64: {baseline_rev} against {current}; "
              f"gateways on core {args.server_cpu}, wrk and nginx on core {args.load_cpu}", file=sys.stderr, flush=True)
        runs = measure_pairs(targets[0], targets[1], pids[0], pids[1], pairs=args.pairs,
                             duration_s=args.pair_duration, wrk_cpus=[args.load_cpu], names=("baseline", "current"))
    print(baseline_table(runs, baseline_rev, current))
    return 0


if __name__ == "__main__":
    sys.exit(main())
