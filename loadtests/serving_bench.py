"""Serving on LocalRuntime through a real ``llmops serve``: deploy → first chat, and rollback → traffic moved.

`python -m loadtests.serving_bench [--rounds 5] [--doc docs/benchmarks.md]`

One ``llmops serve`` on the embedded default (SQLite, ``LocalRuntime`` starting the mock upstream, a TEST
DOUBLE, per slot; default ``SERVING_*`` settings), driven through ``ServingClient`` as an operator would.
Each round, on a fresh endpoint of one approved catalog model:

1. **deploy → first chat**: from the ``POST endpoints`` call to the first 200 from the gateway on the
   endpoint's route (requests sent back to back, 404s while the route is not there yet).
2. **rollback → traffic moved (stable)**: revision 2 replaces revision 1 (a plain redeploy), then
   ``rollback`` puts revision 1 back on the stable slot, which starts a new process for it. Each revision
   is told apart by what its server answers (``--completion-tokens`` in its vLLM args: the mock's own
   option). Moved: from the call to the first request of the unbroken run of ``--settle`` answers, all
   from revision 1, that ends the measurement.
3. **rollback → traffic moved (canary)**: revision 3 as a 50% canary, then ``rollback`` drops it; moved
   as above, on the ``x-llmops-provider`` header (``serving:<id>:stable``).

Requests that fail during a move (not 200) are counted and reported: a rollback should lose none.
The helpers that start the live server and approve models are shared with the end-to-end test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx

from control.serving.client import ServingClient, ServingError
from loadtests.docsection import write_section
from loadtests.procs import ProcessFailed, free_port, start_process, stop_process, wait_for_port

__all__ = [
    "LiveServer", "Round", "approve", "live_server", "main", "register_external_model", "register_local_model",
    "serving_table", "until_moved", "write_gguf",
]

ADMIN_KEY = "bench-admin-key-not-a-secret"
MESSAGES = [{"role": "user", "content": "Hi"}]
REVISION_TOKENS = {1: 5, 2: 7, 3: 9}  # revision -> words its mock answers with (--completion-tokens)
Outcome = Literal["wanted", "other", "error"]


@dataclass(frozen=True)
class LiveServer:
    url: str
    key: str
    mock_url: str  # an OpenAI-compatible mock upstream (TEST DOUBLE), for external models
    workdir: Path  # the server's cwd: its SQLite database and LocalRuntime's files live under .llmops/
    log: Path
    proc: subprocess.Popen[bytes]

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/llm-ops/v1", timeout=30,
                            headers={"authorization": f"Bearer {self.key}"})


@contextlib.contextmanager
def live_server(workdir: Path, env: Mapping[str, str] | None = None,
                ready_within_s: float = 60.0) -> Iterator[LiveServer]:
    """``llmops serve`` on the embedded default (no config file) in ``workdir``, plus a mock upstream."""
    mock_port, port = free_port(), free_port()
    mock = start_process([sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(mock_port)],
                         log=workdir / "mock.log", cwd=workdir)
    log = workdir / "serve.log"
    mock_url = f"http://127.0.0.1:{mock_port}/v1"
    server = None
    try:
        wait_for_port(mock_port, proc=mock)
        server = start_process(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], log=log, cwd=workdir,
            env={"LLMOPS_ADMIN_KEY": ADMIN_KEY, "OPENAI_API_KEY": "sk-mock-not-a-key", "OPENAI_BASE_URL": mock_url,
                 **(env or {})})
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, server, log, ready_within_s)
        yield LiveServer(url=url, key=ADMIN_KEY, mock_url=mock_url, workdir=workdir, log=log, proc=server)
    finally:
        if server is not None:
            stop_process(server, timeout_s=30)
        stop_process(mock)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProcessFailed(f"llmops serve exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise ProcessFailed(f"llmops serve not ready in {within_s:g} s:\n{log.read_text(errors='replace')[-3000:]}")


def write_gguf(path: Path) -> Path:
    """A file the catalog takes as GGUF (its magic, version 3); LocalRuntime's default mock never reads it."""
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(56))
    return path


def _ok(response: httpx.Response) -> dict[str, object]:
    if not response.is_success:
        raise AssertionError(f"{response.request.method} {response.request.url.path}: "
                             f"{response.status_code} {response.text[:500]}")
    data = response.json()["data"]
    assert isinstance(data, dict)
    return data


def approve(admin: httpx.Client, model_id: str) -> None:
    """draft → under_review → an approval → approved, as docs/admin-api.md describes."""
    _ok(admin.patch(f"/catalog/models/{model_id}/status", json={"status": "under_review"}))
    _ok(admin.post(f"/catalog/models/{model_id}/approvals", json={"decision": "approve", "note": "bench"}))
    _ok(admin.patch(f"/catalog/models/{model_id}/status", json={"status": "approved"}))


def register_local_model(admin: httpx.Client, name: str, gguf: Path, *, approved: bool = True) -> str:
    model = _ok(admin.post("/catalog/models", json={"name": name, "type": "base", "format": "gguf",
                                                    "ownerTeam": "serving"}))
    model_id = str(model["id"])
    with gguf.open("rb") as f:
        _ok(admin.post(f"/catalog/models/{model_id}/upload", files={"files": (gguf.name, f)}))
    if approved:
        approve(admin, model_id)
    return model_id


def register_external_model(admin: httpx.Client, name: str, base_url: str, *, approved: bool = True) -> str:
    """An OpenAI-kind model at ``base_url``; the key is a reference the gateway resolves (env:OPENAI_API_KEY)."""
    model = _ok(admin.post("/catalog/models", json={
        "name": name, "type": "external", "ownerTeam": "serving",
        "provider": {"kind": "openai", "baseUrl": base_url, "model": "mock-model", "apiKeyRef": "env:OPENAI_API_KEY"}}))
    if approved:
        approve(admin, str(model["id"]))
    return str(model["id"])


def until_moved(probe: Callable[[], Outcome], started: float, *, settle: int, within_s: float) -> tuple[float, int]:
    """Seconds from ``started`` to the first request of the unbroken run of ``settle`` ``wanted`` answers that
    ends the wait, and how many requests failed meanwhile."""
    run_start, run, errors = 0.0, 0, 0
    while time.monotonic() - started < within_s:
        sent = time.monotonic()
        outcome = probe()
        if outcome == "wanted":
            run_start, run = (sent, 1) if run == 0 else (run_start, run + 1)
            if run >= settle:
                return run_start - started, errors
        else:
            run, errors = 0, errors + (outcome == "error")
    raise TimeoutError(f"traffic not moved within {within_s:g} s ({errors} failed requests)")


@dataclass(frozen=True)
class Round:
    deploy_to_chat_s: float
    rollback_stable_s: float
    rollback_canary_s: float
    failed_during_moves: int


def _args(revision: int) -> list[str]:
    return ["--completion-tokens", str(REVISION_TOKENS[revision])]


def _probe(client: ServingClient, route: str, wanted: Callable[[int, str | None], bool]) -> Outcome:
    try:
        reply = client.call_chat_model(route, MESSAGES)
    except ServingError:
        return "error"
    tokens = (reply.body.get("usage") or {}).get("completion_tokens")
    return "wanted" if wanted(int(tokens or 0), reply.provider) else "other"


def measure_round(client: ServingClient, model_id: str, n: int, *, settle: int,
                  within_s: float = 120.0) -> Round:
    name = f"bench-{n}-{int(time.time() * 1000) % 100000}"
    started = time.monotonic()
    endpoint = client.deploy(name, model_id, use_gpu=False, vllm_args=_args(1))
    while True:  # deploy -> first 200 through the gateway
        try:
            client.call_chat_model(endpoint.route, MESSAGES)
            break
        except ServingError as exc:
            if exc.status not in (404, 502, 503) or time.monotonic() - started > within_s:
                raise
        time.sleep(0.005)
    deploy_to_chat = time.monotonic() - started
    route = endpoint.route
    client.wait_for_healthy(endpoint.id, timeout_s=within_s)

    client.redeploy(endpoint.id, vllm_args=_args(2), reason="bench: revision 2")
    client.wait_for_healthy(endpoint.id, timeout_s=within_s)
    until_moved(lambda: _probe(client, route, lambda t, _: t == REVISION_TOKENS[2]), time.monotonic(),
                settle=settle, within_s=within_s)
    started = time.monotonic()
    client.rollback(endpoint.id, 1, reason="bench: back to revision 1")
    stable_s, stable_errors = until_moved(lambda: _probe(client, route, lambda t, _: t == REVISION_TOKENS[1]),
                                          started, settle=settle, within_s=within_s)
    client.wait_for_healthy(endpoint.id, timeout_s=within_s)

    client.redeploy(endpoint.id, vllm_args=_args(3), canary_percent=50, reason="bench: canary")
    client.wait_for_healthy(endpoint.id, timeout_s=within_s)
    stable_provider = f"serving:{endpoint.id}:stable"
    started = time.monotonic()
    client.rollback(endpoint.id, reason="bench: drop the canary")
    canary_s, canary_errors = until_moved(lambda: _probe(client, route, lambda _, p: p == stable_provider),
                                          started, settle=settle, within_s=within_s)
    result = client.delete(endpoint.id)
    if not result.deleted:
        raise AssertionError(f"delete left {result.resources_failed}")
    return Round(deploy_to_chat, stable_s, canary_s, stable_errors + canary_errors)


def serving_table(rounds: Sequence[Round]) -> str:
    """Markdown: median and max of each timing over the rounds, and the requests that failed while moving."""
    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {statistics.median(values):.2f} | {max(values):.2f} |"

    return "\n".join([
        "| Seconds, over rounds | median | max |",
        "|---|---:|---:|",
        row("deploy call → first 200 chat through the gateway", [r.deploy_to_chat_s for r in rounds]),
        row("rollback call (stable, revision 2 → 1) → every answer from revision 1",
            [r.rollback_stable_s for r in rounds]),
        row("rollback call (drop a 50% canary) → every answer from the stable slot",
            [r.rollback_canary_s for r in rounds]),
        "",
        f"Rounds: {len(rounds)}. Requests that failed during the moves: "
        f"{sum(r.failed_during_moves for r in rounds)}.",
    ])


def _section(table: str, command: str, settle: int) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join([
        "<!-- serving:start (written by loadtests/serving_bench.py --doc) -->",
        "## Serving on LocalRuntime: deploy to first chat, rollback to traffic moved",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, load {load}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        "- One `llmops serve` on the embedded default (SQLite, LocalRuntime, default `SERVING_*`: the",
        "  reconciler runs every 2 s, every 0.25 s while a slot is changing, and at once after each change),",
        "  each slot a mock upstream process (a test double, no model to load), driven through `ServingClient`",
        "  with requests sent back to back from one client thread.",
        f"  \"Moved\": the first request of the run of {settle} answers in a row from the wanted revision that",
        "  ended the wait; revisions are told apart by their answers (stable) or the `x-llmops-provider` header.",
        "- A stable rollback starts a new process for the older revision (a replaced revision's process is not",
        "  kept), so it pays a process start and readiness (`/health`, `/v1/models`) before the route moves;",
        "  dropping a canary is only a routing change. A real model adds its load time to the first two rows.",
        "- Other work ran on the machine meanwhile (the load average above).",
        "",
        "```",
        command,
        "```",
        "",
        table,
        "<!-- serving:end -->",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="serving_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--settle", type=int, default=20, help="answers in a row from the wanted revision (default 20)")
    p.add_argument("--doc", type=Path, help="write the table into this markdown file's serving section")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llmops-serving-bench-") as tmp, live_server(Path(tmp)) as live:
        with live.admin() as admin:
            model_id = register_local_model(admin, "bench-model", write_gguf(Path(tmp) / "bench.gguf"))
        with ServingClient(live.url, live.key) as client:
            rounds = []
            for n in range(args.rounds):
                rounds.append(measure_round(client, model_id, n, settle=args.settle))
                r = rounds[-1]
                print(f"round {n + 1}: deploy->chat {r.deploy_to_chat_s:.2f} s, rollback stable "
                      f"{r.rollback_stable_s:.2f} s, canary {r.rollback_canary_s:.2f} s, "
                      f"{r.failed_during_moves} failed", file=sys.stderr)
    table = serving_table(rounds)
    print(table)
    if args.doc:
        command = (f".venv/bin/python -m loadtests.serving_bench --rounds {args.rounds} --settle {args.settle} "
                   f"--doc {args.doc}")
        write_section(args.doc, "serving", _section(table, command, args.settle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
