"""``python -m adapters.testdoubles.serving_mock``: the mock upstream (a TEST DOUBLE) as a serving process.

What ``LocalRuntime`` starts for an endpoint when no real model server applies. It takes a vLLM-style
command line: the mock's own options (``--model-name``, ``--latency-s``, ``--tokens-per-s``, … see
``adapters.testdoubles.mock_cli``), and ignores every other option, so an endpoint's ``vllmArgs``
(``--max-model-len 4096``, ``--dtype half``) do not stop it. Run as a module of ``adapters``, never through
``gateway.cli``: the serving runtime lives in ``adapters`` and must not import the gateway.

Faults for the serving runtime's tests, given as ``--mock-fault`` (repeatable) in an endpoint's vLLM args.
They are test-double behaviour, not vLLM options:

* ``crash``: write an error, with the command line, to stderr and exit with code 3 before listening
  (a server that cannot start; the runtime restarts it, then reports ``CrashLoopBackOff``);
* ``crash-after:<s>``: serve, then exit with code 3 after ``s`` seconds (a runtime crash);
* ``slow-start:<s>``: listen only after ``s`` seconds, like vLLM loading a model;
* ``hang``: never listen (a model load that never finishes: ``StartupTimeout``);
* ``ignore-sigterm``: ignore SIGTERM, so only the runtime's SIGKILL after its grace stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import dataclass

from adapters.testdoubles.mock_cli import HELP_TEXT, add_cli_arguments

__all__ = ["CRASH_EXIT_CODE", "ServingFaults", "main", "parse_faults"]

CRASH_EXIT_CODE = 3


@dataclass(frozen=True)
class ServingFaults:
    crash: bool = False
    crash_after_s: float | None = None
    slow_start_s: float = 0.0
    hang: bool = False
    ignore_sigterm: bool = False


def _seconds(spec: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"--mock-fault {spec!r}: {value!r} is not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"--mock-fault {spec!r}: seconds must be between 0 and 3600")
    return seconds


def parse_faults(specs: list[str]) -> ServingFaults:
    """``["crash-after:2", "ignore-sigterm"]`` -> ``ServingFaults``; an unknown fault is an error, not a no-op."""
    fields: dict[str, object] = {}
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind in ("crash", "hang", "ignore-sigterm") and not arg:
            fields[kind.replace("-", "_")] = True
        elif kind == "crash-after" and arg:
            fields["crash_after_s"] = _seconds(spec, arg)
        elif kind == "slow-start" and arg:
            fields["slow_start_s"] = _seconds(spec, arg)
        else:
            raise ValueError(f"unknown --mock-fault {spec!r} (crash, crash-after:<s>, slow-start:<s>, hang, "
                             "ignore-sigterm)")
    return ServingFaults(**fields)  # type: ignore[arg-type]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adapters.testdoubles.serving_mock", description=HELP_TEXT)
    add_cli_arguments(parser)
    parser.add_argument("--mock-fault", action="append", default=[], metavar="FAULT",
                        help="serving-runtime fault (TEST DOUBLE): crash, crash-after:<s>, slow-start:<s>, hang, "
                             "ignore-sigterm")
    return parser


async def _serve(args: argparse.Namespace, faults: ServingFaults) -> int:
    from adapters.testdoubles.mock_cli import _config_from_args
    from adapters.testdoubles.mock_upstream import start_mock_upstream  # avoids an import cycle

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if faults.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    if faults.hang:
        await stop.wait()  # never listens: the model "loads" until someone gives up on it
        return 0
    if faults.slow_start_s:
        try:
            await asyncio.wait_for(stop.wait(), faults.slow_start_s)
            return 0
        except TimeoutError:
            pass
    server = await start_mock_upstream(_config_from_args(args), args.host, args.port)
    print(f"mock upstream (TEST DOUBLE) serving {args.model_name or 'any model'} on {server.url}", flush=True)
    try:
        if faults.crash_after_s is None:
            await stop.wait()
            return 0
        try:
            await asyncio.wait_for(stop.wait(), faults.crash_after_s)
            return 0
        except TimeoutError:
            print(f"mock fault: engine died after {faults.crash_after_s} s", file=sys.stderr, flush=True)
            return CRASH_EXIT_CODE
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, ignored = parser.parse_known_args(argv)
    try:
        faults = parse_faults(args.mock_fault)
    except ValueError as exc:
        parser.error(str(exc))
    if ignored:
        print(f"mock upstream (TEST DOUBLE): ignoring options it does not know: {' '.join(ignored)}", flush=True)
    if faults.crash:
        # What a failing engine prints: a message with its whole command line (so callers must redact it).
        print(f"mock fault: engine failed to start; command line: {' '.join(sys.argv)}", file=sys.stderr, flush=True)
        return CRASH_EXIT_CODE
    from adapters.testdoubles.mock_cli import _loop_factory

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        code = runner.run(_serve(args, faults))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a crash must not wait for anything else to wind down


if __name__ == "__main__":
    sys.exit(main())
