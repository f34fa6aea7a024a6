"""Peak memory of dataset analysis on hostile files: the serving process and the analysis worker.

`python -m loadtests.dataset_rss [--before] [--doc docs/benchmarks.md]`

Each case runs in a fresh child process (memory is never returned, so cases must not share one). The child
hosts the control plane in-process (SQLite, local object store; the child *is* the serving process), warms
it with one small upload, resets its peak RSS (``/proc/self/clear_refs``), uploads the hostile file through
the admin API and reports:

* serving Δ peak RSS: the serving process's ``VmHWM`` after the upload minus its ``VmRSS`` before it;
* worker peak RSS: the largest ``ru_maxrss`` of the analysis workers (``tasks_per_child: 1``, so one
  worker per file; it includes the ~150 MB an idle worker holds after importing pyarrow);
* the answer (status, error code) and wall time;
* for the six concurrent 100M-row Parquet files: how long a no-op took on the event loop's default
  executor (where the gateway's reload runs) while they were being analysed.

``--before`` adds the same cases analysed as before the pool, in a thread of the serving process, with
the declaration caps lifted (unbounded ``ReadOptions``). Today's readers still bound their batches (JSONL
flushes at 2^20 cells, deep JSON is refused while decoding), so for those two files this is not the
original behaviour; issue 7 measured +1.27 GB / 15 s and a 500 for them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests.docsection import write_section

__all__ = ["CASES", "main"]


def _jsonl_keys() -> tuple[str, bytes]:
    return "keys.jsonl", b"".join(b'{"k%04d":1}\n' % i for i in range(10_000))


def _parquet_cells() -> tuple[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["a" * (40 << 20)] * 5}), sink, compression="zstd",
                   compression_level=22, use_dictionary=False)
    return "cells.parquet", sink.getvalue()


def _csv_wide() -> tuple[str, bytes]:
    header = ",".join(f"c{i}" for i in range(60_000))
    return "wide.csv", (header + "\n" + ",".join("1" * 60_000) + "\n").encode()


def _parquet_rows() -> tuple[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()  # a null column: 100M rows of definition levels, run-length encoded to a few KB
    pq.write_table(pa.table({"x": pa.nulls(100_000_000, pa.int8())}), sink, compression="zstd",
                   row_group_size=100_000_000, data_page_size=1 << 30)
    return "rows.parquet", sink.getvalue()


def _jsonl_deep() -> tuple[str, bytes]:
    return "deep.jsonl", b'{"a": 1}\n{"x": ' + b"[" * 1000 + b"]" * 1000 + b"}\n"


CASES: dict[str, tuple[str, Callable[[], tuple[str, bytes]], int]] = {
    # name: (what, builder, concurrent uploads)
    "jsonl-keys": ("JSONL, 10k lines with distinct keys", _jsonl_keys, 1),
    "parquet-cells": ("Parquet, five 40 MB zstd cells", _parquet_cells, 1),
    "csv-wide": ("CSV, 60k columns", _csv_wide, 1),
    "parquet-rows": ("Parquet declaring 100M rows, x6 concurrent", _parquet_rows, 6),
    "jsonl-deep": ("JSONL nested 1000 levels", _jsonl_deep, 1),
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def _probe_default_executor(stop: asyncio.Event) -> float:
    """Longest wait for a no-op on the default executor while ``stop`` is unset (the reload's path)."""
    worst = 0.0
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.to_thread(lambda: None)
        worst = max(worst, time.perf_counter() - started)
        await asyncio.sleep(0.05)
    return worst


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current RSS


async def _run_case(name: str, mode: str, filename: str, content: bytes) -> dict[str, Any]:
    from adapters.adminapi import ControlCfg
    from adapters.adminapi.testing import admin_test_app
    from control.catalog import CatalogModule
    from control.catalog.datasets_analysis import DatasetError, ReadOptions, analyze

    what, _, copies = CASES[name]
    with tempfile.TemporaryDirectory(prefix="dataset-rss-") as tmp:
        settings = {"analysis": {"workers": 2, "tasks_per_child": 1}}
        cfg = ControlCfg(database_url=f"sqlite+aiosqlite:///{tmp}/db.sqlite", data_dir=f"{tmp}/data",
                         change_feed="local", module_settings={"catalog": settings})
        async with admin_test_app(cfg, modules=[CatalogModule()]) as app:
            ds = (await app.client.post("/llm-ops/v1/catalog/datasets",
                                        json={"name": "bench", "ownerTeam": "perf"})).json()["data"]["id"]
            url = f"/llm-ops/v1/catalog/datasets/{ds}/upload"
            await app.client.post(url, files={"file": ("warm.csv", b"a,b\n1,2\n")})  # imports, first worker
            path = Path(tmp) / filename
            await asyncio.to_thread(path.write_bytes, content)
            baseline_kb = _status_kb("VmRSS")
            _reset_peak_rss()
            stop = asyncio.Event()
            probe = asyncio.create_task(_probe_default_executor(stop))
            started = time.perf_counter()
            if mode == "pool":
                answers = await asyncio.gather(*[
                    app.client.post(url, files={"file": (filename, content)}, timeout=600) for _ in range(copies)])
                outcome = [(r.status_code, _code(r.json())) for r in answers]
            else:  # the old way: a thread of the serving process, no caps
                uncapped = ReadOptions(max_columns=10**9, max_depth=10**9, max_decompressed_bytes=1 << 62,
                                       max_compression_ratio=1e18, max_rows=None)

                async def one() -> tuple[int, str]:
                    try:
                        await asyncio.to_thread(analyze, path, filename=filename, options=uncapped)
                    except DatasetError as err:
                        return err.status, err.code
                    except RecursionError:
                        return 500, "RecursionError"
                    return 201, "ready"
                outcome = list(await asyncio.gather(*[one() for _ in range(copies)]))
            wall_s = time.perf_counter() - started
            stop.set()
            probe_s = await probe
            serving_kb = _status_kb("VmHWM") - baseline_kb
    worker_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # workers reaped by the pool's shutdown
    return {"case": name, "what": what, "mode": mode, "file_bytes": len(content), "copies": copies,
            "answers": sorted(set(outcome)), "wall_s": round(wall_s, 2), "serving_delta_mb": round(serving_kb / 1024),
            "worker_peak_mb": round(worker_kb / 1024) if mode == "pool" else None,
            "default_executor_wait_s": round(probe_s, 3)}


def _code(body: dict[str, Any]) -> str:
    if body.get("status") == "success":
        return "ready"
    errors = ((body.get("data") or {}).get("validation") or {}).get("errors") or [{}]
    return str(errors[0].get("code", body.get("message", "")))[:40]


def _child(name: str, mode: str, source: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "loadtests.dataset_rss", "--child", name, "--mode", mode,
                           "--source", str(source)],
                          capture_output=True, text=True, check=False, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"case {name} ({mode}) failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| File | Size | Way | Answer | Wall | Serving Δ peak RSS | Worker peak RSS | Default-executor wait |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        answer = ", ".join(f"{status} {code}" for status, code in r["answers"])
        worker = f"{r['worker_peak_mb']} MB" if r["worker_peak_mb"] is not None else "-"
        way = "worker pool" if r["mode"] == "pool" else "thread, caps lifted"
        lines.append(f"| {r['what']} | {r['file_bytes']:,} B | {way} | {answer} | {r['wall_s']} s | "
                     f"+{r['serving_delta_mb']} MB | {worker} | {r['default_executor_wait_s']} s |")
    return "\n".join(lines)


def _section(rows: list[dict[str, Any]], command: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join([
        "<!-- dataset_rss:start (written by loadtests/dataset_rss.py --doc) -->",
        "## Dataset analysis: peak memory on hostile files",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, load {load}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        "- Each case in a fresh process: the control plane in-process (SQLite, local objects), one warm-up",
        "  upload, peak RSS reset, then the upload. Worker peak includes an idle worker's ~150 MB of imports.",
        "  Default settings except `analysis.tasks_per_child: 1` (one worker per file, so its peak is the file's;",
        "  the pool's wall time therefore includes starting that worker, seconds on a loaded 2-core machine).",
        "- \"thread, caps lifted\": the analysis as it ran before, in a thread of the serving process, without the",
        "  declaration caps (today's readers still flush JSONL batches at 2^20 cells and refuse 1000-level JSON;",
        "  issue 7 measured +1.27 GB in 15 s for the JSONL file and a 500 for the deep one).",
        "- Default-executor wait: the longest a no-op waited on the event loop's default executor (where the",
        "  gateway's reload runs) during the uploads.",
        "",
        "```",
        command,
        "```",
        "",
        _table(rows),
        "<!-- dataset_rss:end -->",
    ])


def _write_doc(doc: Path, section: str) -> None:
    write_section(doc, "dataset_rss", section)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", action="store_true", help="also measure the old in-thread, uncapped analysis")
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--doc", type=Path, help="write the table into this markdown file (its own section)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="pool", help=argparse.SUPPRESS)
    p.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        # The parent built the file, so building it leaves nothing in this process's heap.
        content = args.source.read_bytes()
        print(json.dumps(asyncio.run(_run_case(args.child, args.mode, args.source.name, content))))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="dataset-rss-files-") as files:
        for name in args.cases:
            filename, content = CASES[name][1]()
            source = Path(files) / filename
            source.write_bytes(content)
            for mode in (("before", "pool") if args.before else ("pool",)):
                rows.append(_child(name, mode, source))
                print(json.dumps(rows[-1]), flush=True)
    print(_table(rows))
    if args.doc:
        command = ".venv/bin/python -m loadtests.dataset_rss" + (" --before" if args.before else "") + \
                  f" --doc {args.doc}"
        _write_doc(args.doc, _section(rows, command))


if __name__ == "__main__":
    main()
