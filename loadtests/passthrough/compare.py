"""Measure every pass-through floor against the canned nginx upstream and print a markdown table.

`python -m loadtests.passthrough.compare [--duration 5] [--rounds 3] [--only KEY ...] [--out FILE]`.
Each server is pinned to core 1, wrk and nginx to core 0, one worker process,
non-streaming; the numbers feed loadtests/CLIENT_CHOICE.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from loadtests.passthrough import VARIANTS
from loadtests.procs import ProcessFailed, free_port, start_process, stop_process, wait_for_port
from loadtests.report import throughput_table
from loadtests.sweep import Series, Target, sweep
from loadtests.upstream_nginx import run_nginx
from loadtests.wrk import chat_body

__all__ = ["main"]

CONCURRENCIES = (1, 16, 64)


def measure(
    keys: Sequence[str], duration_s: float, rounds: int, server_cpus: Sequence[int], load_cpus: Sequence[int]
) -> tuple[list[Series], list[Series]]:
    """Start nginx and every variant in `keys`, sweep them interleaved; returns (results, failures)."""
    body = chat_body("canned")
    failed: list[Series] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="llmops-floors-") as tmp:
        up = stack.enter_context(run_nginx(cpus=load_cpus))
        targets = [Target("direct", "nginx direct", f"http://127.0.0.1:{up.chat_port}", body)]
        for key in keys:
            v = VARIANTS[key]
            port = free_port()
            proc = start_process(
                v.argv(port),
                cpus=server_cpus,
                env={"UPSTREAM_URL": up.chat_url},
                log=Path(tmp) / f"{key}.log",
            )
            stack.callback(stop_process, proc)
            try:
                wait_for_port(port, proc=proc, timeout_s=30)
            except ProcessFailed as exc:
                failed.append(Series(key, v.label, note=f"did not start: {exc}"))
                continue
            targets.append(Target(key, v.label, f"http://127.0.0.1:{port}", body))
        return sweep(targets, CONCURRENCIES, duration_s, wrk_cpus=load_cpus, rounds=rounds), failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="repeat the sweep, keep the best (default 3)")
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="variants to run (default all)")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args(argv)
    keys = args.only or list(VARIANTS)
    series, failed = measure(keys, args.duration, max(1, args.rounds), server_cpus=[1], load_cpus=[0])
    text = throughput_table(series, CONCURRENCIES, direct_key="direct")
    notes = [f"- {s.label}: {s.note}" for s in [*series, *failed] if s.note]
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
