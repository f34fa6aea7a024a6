"""Dataset analysis in worker processes of the catalog's own, each under a memory limit.

Analysis parses untrusted files: 119 KB of JSONL once took 1.3 GB, and six tiny
Parquet files held the event loop's default thread pool for a minute, with the
gateway's reload queued behind them. So analysis never runs in the serving
process nor in its default executor:

* a ``ProcessPoolExecutor`` of ``analysis.workers`` processes, *spawned* (a fork
  of a process with an event loop and threads is unsafe), used by nothing else;
* each worker's initializer caps its address space (``RLIMIT_AS``), so a file
  that needs more fails in the worker with ``MemoryError``, answered 413
  (``OutOfAnalysisMemory``), and builds its own PII rules and detectors from the
  catalog settings (detectors are imported there, never pickled);
* a worker is replaced after ``analysis.tasks_per_child`` analyses, returning
  whatever its allocator kept to the operating system;
* a worker that dies (killed by the kernel, a C++ abort) breaks the pool
  (``BrokenProcessPool``): the pool is replaced and the job retried once, since
  another job may have been the culprit; a second death is the job's own (413).

Results cross the process boundary as msgpack (``DatasetError`` subclasses take
keyword arguments, which pickle cannot rebuild).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import msgspec

from control.catalog.datasets.redaction import flagged_columns, redact_rows
from control.catalog.datasets_analysis import (
    DatasetAnalysis,
    DatasetError,
    OutOfAnalysisMemory,
    PiiDetector,
    ReadOptions,
    analyze,
)
from control.catalog.datasets_analysis import errors as analysis_errors
from control.catalog.settings import CatalogSettings, PiiConfig, load_detectors

__all__ = ["AnalysisJob", "AnalysisPool"]

log = logging.getLogger("llmops.catalog")


class AnalysisJob(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    fmt: str
    filename: str
    expected_schema: dict[str, str] | None = None
    required_columns: list[str] = []
    pii_rules: list[str] | None = None  # the dataset's choice; None: every available rule


class _Failure(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    line: int | None = None
    row: int | None = None


class _Outcome(msgspec.Struct, frozen=True, kw_only=True):
    analysis: DatasetAnalysis | None = None
    failure: _Failure | None = None


_ERRORS: dict[str, type[DatasetError]] = {
    cls.code: cls for cls in vars(analysis_errors).values()
    if isinstance(cls, type) and issubclass(cls, DatasetError)
}


def _rebuild(failure: _Failure) -> DatasetError:
    """The worker's error as its own class, without calling its (keyword-only) constructor."""
    cls = _ERRORS.get(failure.code, DatasetError)
    err = cls.__new__(cls)
    Exception.__init__(err, failure.message)
    err.message, err.line, err.row = failure.message, failure.line, failure.row
    return err


def _memory_message(limit_mb: int) -> str:
    return (f"the analysis needed more than its worker's {limit_mb} MiB memory limit "
            "(control.module_settings.catalog.analysis.memory_limit_mb)")


class AnalysisPool:
    """``analyze(job)`` in a worker; raises the ``DatasetError`` that made the file unreadable."""

    def __init__(self, settings: CatalogSettings) -> None:
        self._settings = settings
        self._executor: ProcessPoolExecutor | None = None  # started on first use: most apps never analyse
        self._closed = False

    def _pool(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("the analysis pool is closed")
        if self._executor is None:
            a = self._settings.analysis
            self._executor = ProcessPoolExecutor(
                max_workers=a.workers, mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=a.tasks_per_child, initializer=_init_worker,
                initargs=(msgspec.msgpack.encode(self._settings),))
        return self._executor

    async def analyze(self, job: AnalysisJob) -> DatasetAnalysis:
        loop = asyncio.get_running_loop()
        payload = msgspec.msgpack.encode(job)
        for attempt in (1, 2):
            executor = self._pool()
            try:
                raw = await loop.run_in_executor(executor, _run, payload)
                break
            except BrokenProcessPool:
                self._replace(executor)
                log.warning("a dataset analysis worker died while analysing %s (attempt %d)", job.filename, attempt)
        else:
            raise OutOfAnalysisMemory(_memory_message(self._settings.analysis.memory_limit_mb)
                                      + "; its worker was stopped")
        outcome = msgspec.msgpack.decode(raw, type=_Outcome)
        if outcome.failure is not None:
            raise _rebuild(outcome.failure)
        assert outcome.analysis is not None
        return outcome.analysis

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._executor is broken:  # concurrent jobs of the same broken pool replace it once
            self._executor = None
            broken.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:  # an analysis in progress has no one left to answer
            process.terminate()
        await asyncio.to_thread(_join, processes)


def _join(processes: Sequence[Any]) -> None:
    for process in processes:
        process.join(timeout=10)


# --- in the worker process -------------------------------------------------------------------------


class _Worker:
    def __init__(self, settings: CatalogSettings) -> None:
        self.settings = settings
        self.pii = PiiConfig(settings, load_detectors(settings.pii_detectors))
        a = settings.analysis
        self.options = ReadOptions(max_columns=a.max_columns, max_depth=a.max_depth, max_rows=a.max_rows,
                                   max_decompressed_bytes=a.max_decompressed_bytes,
                                   max_compression_ratio=a.max_compression_ratio)


_worker: _Worker | None = None  # set once per worker process by its initializer, read by _run


def _init_worker(settings_msgpack: bytes) -> None:
    global _worker
    settings = msgspec.msgpack.decode(settings_msgpack, type=CatalogSettings)
    _worker = _Worker(settings)  # detectors load before the limit: a model may map more than it uses
    limit = settings.analysis.memory_limit_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _run(payload: bytes) -> bytes:
    assert _worker is not None
    job = msgspec.msgpack.decode(payload, type=AnalysisJob)
    try:
        outcome = _Outcome(analysis=_analyze(_worker, job))
    except DatasetError as err:
        outcome = _Outcome(failure=_Failure(code=err.code, message=err.message, line=err.line, row=err.row))
    except MemoryError:
        message = _memory_message(_worker.settings.analysis.memory_limit_mb)
        outcome = _Outcome(failure=_Failure(code=OutOfAnalysisMemory.code, message=message))
    return msgspec.msgpack.encode(outcome)


def _analyze(worker: _Worker, job: AnalysisJob) -> DatasetAnalysis:
    rules = worker.pii.select(job.pii_rules)
    detectors: Sequence[PiiDetector] = worker.pii.detectors
    analysis = analyze(job.path, job.fmt, filename=job.filename,  # type: ignore[arg-type]
                       expected_schema=job.expected_schema, required_columns=job.required_columns,
                       pii_rules=rules, detectors=detectors, sample_rows=worker.settings.preview_rows,
                       options=worker.options)
    # The preview is masked here, so raw PII never reaches the serving process.
    preview = redact_rows(analysis.profile.preview, flagged_columns(analysis.pii), rules, detectors)
    return msgspec.structs.replace(analysis, profile=msgspec.structs.replace(analysis.profile, preview=preview))
