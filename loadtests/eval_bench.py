"""An evaluation run of 1,000 items at concurrency 16 through a real ``llmops serve``, and what it adds.

`python -m loadtests.eval_bench [--items 1000] [--concurrency 16] [--rounds 3] [--doc docs/benchmarks.md]`

One ``llmops serve`` (SQLite in a temporary directory; every control module, the evaluation worker
included, in the gateway's process, as on the embedded default) routes ``demo`` to a mock upstream (a TEST
DOUBLE) that runs as its own process, so its CPU is not counted as the gateway's. A catalog dataset of
``--items`` rows (input, reference) is uploaded once. Each round runs three sides, their order rotated
from round to round:

* **evaluation**: ``POST /evaluation/runs`` (an automated run with the default reference metrics, one chat
  call per item, at ``--concurrency``), polled every 0.1 s until it finishes. Wall time from the POST to
  the run's end, and to the moment every item was stored (``done == total``: generation; the rest is the
  cost read-back and the scoring). CPU: every process in the ``llmops serve`` session (user + system, from
  /proc), which holds the gateway, the control plane, the worker and the scoring, over the same spans.
* **through the gateway**: the same chat calls (``model: demo``, what the worker sends) from this process
  (one aiohttp session) to the gateway at the same concurrency: what the gateway alone costs per call.
* **straight to the mock**: the same calls to the mock itself: the floor.

Per item, the ``llmops serve`` CPU of an evaluation is what it costs the deployment (its worker is also the
client); minus the gateway's own per call, what the evaluation machinery adds. The wall ratios say how much
longer than the bare calls the run takes.
The live-server helpers (dataset upload, run start and wait) are shared with the end-to-end tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import msgspec
import yaml

from loadtests.docsection import write_section
from loadtests.procs import ProcessFailed, free_port, start_process, stop_process, wait_for_port

__all__ = [
    "CallsRound", "EvalRound", "bench_table", "chat_bodies", "data", "group_cpu_s", "jsonl", "main", "qa_rows",
    "rotation", "start_run", "upload_dataset", "wait_run",
]

ADMIN_KEY = "eval-bench-admin-key-not-a-secret"
TERMINAL = ("succeeded", "failed", "cancelled")
_encode = msgspec.json.Encoder().encode


# -- the admin API, as an operator calls it (shared with the end-to-end tests) -----------------------------

def data(response: httpx.Response, status: int = 200) -> Any:
    """The envelope's ``data``; anything but ``status`` fails with the answer's text."""
    if response.status_code != status:
        raise AssertionError(f"{response.request.method} {response.request.url.path}: "
                             f"{response.status_code} {response.text[:800]}")
    return response.json()["data"]


def jsonl(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Rows as a JSONL file: UTF-8, one object a line, non-ASCII text kept as is."""
    return b"".join(_encode(dict(r)) + b"\n" for r in rows)


def upload_dataset(admin: httpx.Client, name: str, rows: Sequence[Mapping[str, Any]], *,
                   owner_team: str = "eval") -> str:
    """Register a JSONL dataset and upload ``rows`` as its version 1 (ready when the call returns)."""
    dataset = data(admin.post("/catalog/datasets", json={"name": name, "ownerTeam": owner_team,
                                                          "format": "jsonl"}), 201)
    version = data(admin.post(f"/catalog/datasets/{dataset['id']}/upload",
                              files={"file": (f"{name}.jsonl", jsonl(rows), "application/x-ndjson")}), 201)
    if version["status"] != "ready":
        raise AssertionError(f"dataset {name}: version {version['version']} is {version['status']}")
    return str(dataset["id"])


def start_run(admin: httpx.Client, body: Mapping[str, Any]) -> str:
    return str(data(admin.post("/evaluation/runs", json=dict(body)), 201)["id"])


def wait_run(admin: httpx.Client, run_id: str, within_s: float = 120.0, poll_s: float = 0.1) -> dict[str, Any]:
    """Poll the run until it has finished (succeeded, failed or cancelled); the run."""
    deadline = time.monotonic() + within_s
    while True:
        run: dict[str, Any] = data(admin.get(f"/evaluation/runs/{run_id}"))
        if run["status"] in TERMINAL:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run['status']} after {within_s:g} s: {run['progress']}")
        time.sleep(poll_s)


# -- the benchmark ---------------------------------------------------------------------------------------

def qa_rows(n: int) -> list[dict[str, str]]:
    """``n`` rows of a short question and a reference the mock's answer partly matches."""
    return [{"input": f"Question {i}: what does the test double answer?",
             "reference": "mock token reply from the test" if i % 2 else "mock token answer"} for i in range(n)]


def chat_bodies(rows: Sequence[Mapping[str, str]], route: str, params: Mapping[str, Any]) -> list[bytes]:
    """What the worker sends per item (control/evaluation/prompts.py: one user message, the run's params)."""
    return [_encode({**params, "model": route, "messages": [{"role": "user", "content": r["input"]}]}) for r in rows]


def _pgid_cpu_ticks(pgid: int) -> int:
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            ticks += int(fields[11]) + int(fields[12])
    return ticks


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (a server and what it forked)."""
    return _pgid_cpu_ticks(pgid) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class EvalRound:
    items: int
    wall_s: float  # POST runs -> the run finished
    generation_s: float  # POST runs -> every item stored
    gateway_cpu_s: float  # the llmops serve session, over wall_s
    gateway_cpu_generation_s: float  # over generation_s
    mock_cpu_s: float
    failed: int


@dataclass(frozen=True)
class CallsRound:
    """The same calls sent by this process, through the gateway or straight to the mock."""

    calls: int
    wall_s: float
    client_cpu_s: float
    serve_cpu_s: float  # the llmops serve session meanwhile (only its background work when bypassed)
    mock_cpu_s: float
    errors: int


SIDES = ("eval", "gateway", "direct")


def rotation(rounds: int) -> list[tuple[str, ...]]:
    """Each round's order: the three sides rotated by one more each round, so a drift hits each alike."""
    return [SIDES[i % 3:] + SIDES[:i % 3] for i in range(rounds)]


def _ms_per(seconds: float, n: int) -> float:
    return seconds * 1000 / n if n else float("nan")


def bench_table(evals: Sequence[EvalRound], gateways: Sequence[CallsRound], directs: Sequence[CallsRound]) -> str:
    """Markdown: medians over the rounds of each side, the paired wall ratios and the worker's own CPU."""
    if not evals or not len(evals) == len(gateways) == len(directs):
        raise ValueError("one round of each side per round, at least one")
    med = statistics.median
    pairs = list(zip(evals, gateways, directs, strict=True))
    n = evals[0].items

    def ratio(values: list[float]) -> str:
        return f"{med(values):.2f} (range {min(values):.2f} to {max(values):.2f})"

    def per(values: list[float]) -> str:
        return f"{med(values):.2f}"

    worker = [_ms_per(e.gateway_cpu_generation_s, e.items) - _ms_per(g.serve_cpu_s, g.calls) for e, g, _ in pairs]
    return "\n".join([
        "| Median over rounds | evaluation run | the calls through the gateway | the calls straight to the mock |",
        "|---|---:|---:|---:|",
        f"| items (calls) | {n:,} | {gateways[0].calls:,} | {directs[0].calls:,} |",
        f"| wall, whole run (s) | {per([e.wall_s for e in evals])} | {per([g.wall_s for g in gateways])} "
        f"| {per([d.wall_s for d in directs])} |",
        f"| wall, generation: every item stored (s) | {per([e.generation_s for e in evals])} | | |",
        f"| items/s, whole run | {med(e.items / e.wall_s for e in evals):,.0f} "
        f"| {med(g.calls / g.wall_s for g in gateways):,.0f} | {med(d.calls / d.wall_s for d in directs):,.0f} |",
        f"| items/s, generation | {med(e.items / e.generation_s for e in evals):,.0f} | | |",
        f"| CPU ms/item, `llmops serve`, whole run (gateway, worker, scoring) "
        f"| {per([_ms_per(e.gateway_cpu_s, e.items) for e in evals])} "
        f"| {per([_ms_per(g.serve_cpu_s, g.calls) for g in gateways])} "
        f"| {per([_ms_per(d.serve_cpu_s, d.calls) for d in directs])} |",
        f"| CPU ms/item, `llmops serve`, generation only "
        f"| {per([_ms_per(e.gateway_cpu_generation_s, e.items) for e in evals])} | | |",
        f"| CPU ms/item, the client (this bench's aiohttp loop) | | "
        f"{per([_ms_per(g.client_cpu_s, g.calls) for g in gateways])} "
        f"| {per([_ms_per(d.client_cpu_s, d.calls) for d in directs])} |",
        f"| CPU ms/item, mock upstream | {per([_ms_per(e.mock_cpu_s, e.items) for e in evals])} "
        f"| {per([_ms_per(g.mock_cpu_s, g.calls) for g in gateways])} "
        f"| {per([_ms_per(d.mock_cpu_s, d.calls) for d in directs])} |",
        "",
        f"Wall ratios, median of {len(pairs)} rounds: the evaluation run over the calls straight to the mock "
        f"{ratio([e.wall_s / d.wall_s for e, _, d in pairs])} (generation only "
        f"{ratio([e.generation_s / d.wall_s for e, _, d in pairs])}); the calls through the gateway over "
        f"straight to the mock {ratio([g.wall_s / d.wall_s for _, g, d in pairs])}. "
        f"The evaluation machinery's own CPU per item (generation, minus the gateway's per call): "
        f"{per(worker)} ms. Failed items: {sum(e.failed for e in evals)}; failed calls: "
        f"{sum(g.errors + d.errors for g, d in zip(gateways, directs, strict=True))}.",
    ])


def _config(mock_url: str) -> dict[str, Any]:
    return {
        "providers": [{"name": "mock", "kind": "openai", "base_url": mock_url}],
        "routes": [{"name": "demo", "targets": [{"provider": "mock", "model": "mock-model"}]}],
        # priced, so the worker finds every item's cost as soon as the usage writer has flushed it
        "pricing": {"use_litellm_map": False,
                    "models": [{"model": "mock-model", "input_per_mtok": "0.15", "output_per_mtok": "0.6"}]},
        "plugins": [{"name": "auth", "settings": {"public_routes": ["demo"]}}],
    }


@dataclass(frozen=True)
class _Servers:
    url: str
    mock_url: str
    serve: subprocess.Popen[bytes]
    mock: subprocess.Popen[bytes]


@contextlib.contextmanager
def _servers(workdir: Path) -> Iterator[_Servers]:
    mock_port, port = free_port(), free_port()
    mock = start_process([sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(mock_port)],
                         log=workdir / "mock.log", cwd=workdir)
    serve = None
    try:
        wait_for_port(mock_port, proc=mock)
        mock_url = f"http://127.0.0.1:{mock_port}/v1"
        (workdir / "eval-bench.yaml").write_text(yaml.safe_dump(_config(mock_url)))
        serve = start_process([sys.executable, "-m", "gateway.cli", "serve", "--config", "eval-bench.yaml",
                               "--port", str(port)], log=workdir / "serve.log", cwd=workdir,
                              env={"LLMOPS_ADMIN_KEY": ADMIN_KEY})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if serve.poll() is not None or time.monotonic() > deadline:
                raise ProcessFailed(f"llmops serve never became ready:\n"
                                    f"{(workdir / 'serve.log').read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield _Servers(url, mock_url, serve, mock)
    finally:
        if serve is not None:
            stop_process(serve, timeout_s=30)
        stop_process(mock)


def _eval_round(admin: httpx.Client, servers: _Servers, body: Mapping[str, Any], items: int) -> EvalRound:
    pgid, mock_pid = servers.serve.pid, servers.mock.pid
    cpu0, mock0, t0 = group_cpu_s(pgid), group_cpu_s(mock_pid), time.monotonic()
    run_id = start_run(admin, body)
    generation_s = gen_cpu = None
    while True:
        run = data(admin.get(f"/evaluation/runs/{run_id}"))
        now = time.monotonic()
        if generation_s is None and run["progress"]["done"] >= run["progress"]["total"]:
            generation_s, gen_cpu = now - t0, group_cpu_s(pgid) - cpu0
        if run["status"] in TERMINAL:
            break
        if now - t0 > 600:
            raise TimeoutError(f"run {run_id}: {run['status']} {run['progress']} after 600 s")
        time.sleep(0.1)
    wall, cpu, mock_cpu = time.monotonic() - t0, group_cpu_s(pgid) - cpu0, group_cpu_s(mock_pid) - mock0
    if run["status"] != "succeeded":
        raise AssertionError(f"run {run_id} {run['status']}: {run['error']}")
    assert generation_s is not None and gen_cpu is not None
    return EvalRound(items=items, wall_s=wall, generation_s=generation_s, gateway_cpu_s=cpu,
                     gateway_cpu_generation_s=gen_cpu, mock_cpu_s=mock_cpu, failed=run["progress"]["failed"])


async def _calls(url: str, bodies: Sequence[bytes], concurrency: int) -> tuple[float, int]:
    """Every body once, ``concurrency`` in flight; (wall seconds, failed calls)."""
    queue = list(reversed(bodies))
    errors = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while queue:
            body = queue.pop()
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                await resp.read()
                errors += resp.status != 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.monotonic()
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
        return time.monotonic() - started, errors


def _calls_round(servers: _Servers, url: str, bodies: Sequence[bytes], concurrency: int) -> CallsRound:
    serve0, mock0, client0 = group_cpu_s(servers.serve.pid), group_cpu_s(servers.mock.pid), time.process_time()
    wall, errors = asyncio.run(_calls(url, bodies, concurrency))
    return CallsRound(calls=len(bodies), wall_s=wall, client_cpu_s=time.process_time() - client0,
                      serve_cpu_s=group_cpu_s(servers.serve.pid) - serve0,
                      mock_cpu_s=group_cpu_s(servers.mock.pid) - mock0, errors=errors)


def _section(table: str, command: str, items: int, concurrency: int) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join([
        "<!-- evaluation:start (written by loadtests/eval_bench.py --doc) -->",
        f"## Evaluation: {items:,} items at concurrency {concurrency} through `llmops serve`",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, load {load}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        "- One `llmops serve` (SQLite, every control module in its process, default evaluation settings) routes",
        "  `demo` to a mock upstream (a test double) in its own process; nothing is pinned. Each round, in an order",
        "  rotated per round: an automated evaluation run (default reference metrics: BLEU, chrF, ROUGE-1/2/L,",
        "  exact match, token F1; one chat call per item), polled every 0.1 s; the same chat calls sent by one",
        "  aiohttp session through the gateway; and straight to the mock; each at the same concurrency.",
        "- `llmops serve` CPU is every process of its session (user + system, /proc): the gateway, the",
        "  evaluation worker calling it over HTTP, the usage writer, the scoring, the status polls, and the",
        "  control plane's background tasks (the straight-to-the-mock column is only those). Generation ends",
        "  when every item is stored; the rest of the run is reading each item's cost back from the usage",
        "  records and scoring.",
        "- Other work ran on the machine meanwhile (the load average above).",
        "",
        "```",
        command,
        "```",
        "",
        table,
        "<!-- evaluation:end -->",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eval_bench", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--doc", type=Path, help="write the table into this markdown file's evaluation section")
    args = p.parse_args(argv)
    rows = qa_rows(args.items)
    evals: list[EvalRound] = []
    sides: dict[str, list[CallsRound]] = {"gateway": [], "direct": []}
    with tempfile.TemporaryDirectory(prefix="llmops-eval-bench-") as tmp, _servers(Path(tmp)) as servers, \
            httpx.Client(base_url=servers.url + "/llm-ops/v1", timeout=60,
                         headers={"authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        dataset_id = upload_dataset(admin, "eval-bench", rows)
        body = {"name": "bench", "targets": [{"kind": "route", "id": "demo"}], "dataset": {"datasetId": dataset_id},
                "mapping": {"input": "input", "reference": "reference"}, "concurrency": args.concurrency}
        calls = {"gateway": (servers.url + "/v1/chat/completions", chat_bodies(rows, "demo", {})),
                 "direct": (servers.mock_url + "/chat/completions", chat_bodies(rows, "mock-model", {}))}
        for url, bodies in calls.values():  # warm every side once, unmeasured
            _calls_round(servers, url, bodies[:50], args.concurrency)
        wait_run(admin, start_run(admin, {**body, "name": "warm-up", "limit": 50}))
        for n, order in enumerate(rotation(args.rounds)):
            for side in order:
                if side == "eval":
                    evals.append(_eval_round(admin, servers, {**body, "name": f"bench-{n}"}, args.items))
                else:
                    sides[side].append(_calls_round(servers, *calls[side], args.concurrency))
            e, g, d = evals[-1], sides["gateway"][-1], sides["direct"][-1]
            print(f"round {n + 1}: evaluation {e.wall_s:.2f} s (generation {e.generation_s:.2f} s), "
                  f"{_ms_per(e.gateway_cpu_generation_s, e.items):.2f} serve CPU ms/item generating; "
                  f"through the gateway {g.wall_s:.2f} s, {_ms_per(g.serve_cpu_s, g.calls):.2f} serve CPU ms/call; "
                  f"straight {d.wall_s:.2f} s", file=sys.stderr, flush=True)
    table = bench_table(evals, sides["gateway"], sides["direct"])
    print(table)
    if args.doc:
        command = (f".venv/bin/python -m loadtests.eval_bench --items {args.items} --concurrency {args.concurrency} "
                   f"--rounds {args.rounds} --doc {args.doc}")
        write_section(args.doc, "evaluation", _section(table, command, args.items, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
