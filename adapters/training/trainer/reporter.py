"""Metrics to the job's ``metrics`` endpoint without ever slowing or failing training.

The training loop calls ``log`` (a ``put_nowait`` on a bounded queue: it never waits); one background thread
drains the queue into posts of at most ``MAX_METRICS_PER_POST`` points, at most every ``interval_s``, each with a
short timeout. A post that fails is dropped and counted, not retried, so an outage costs metrics, never time;
a full queue drops the new point the same way. ``close`` flushes for at most ``flush_s`` and returns; the thread
is a daemon, so a platform that hangs cannot hold the process open. Nothing here raises into the caller.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

from adapters.training.contract import MAX_METRICS_PER_POST

__all__ = ["MetricsReporter"]

_STOP = object()


class MetricsReporter:
    """Posts ``{"metrics": [...], "params": {...}}`` to ``url`` with ``Authorization: <auth_header>``."""

    def __init__(self, url: str, auth_header: str, *, interval_s: float = 0.5, timeout_s: float = 1.0,
                 flush_s: float = 2.0, max_queue: int = 20_000) -> None:
        self._url = url
        self._auth = auth_header
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.flush_s = flush_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._params: dict[str, str] = {}
        self._params_lock = threading.Lock()
        self.sent = 0  # points the platform accepted
        self.dropped = 0  # points lost to a full queue or a failed post
        self.failed_posts = 0
        self._param_tries = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="metrics-reporter", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"MetricsReporter({self._url!r}, sent={self.sent}, dropped={self.dropped})"

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue one value per key at ``step``; never blocks. NaN and infinities are dropped (and counted)."""
        if self._closed:
            return
        now_ms = int(time.time() * 1000)
        for key, value in metrics.items():
            number = float(value)
            if not math.isfinite(number):  # the endpoint takes finite values only; one NaN must not sink a post
                self.dropped += 1
                continue
            try:
                self._queue.put_nowait({"key": key, "value": number, "step": int(step), "timestamp": now_ms})
            except queue.Full:
                self.dropped += 1

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Parameters, sent with the next post (values as strings, as MLflow keeps them)."""
        with self._params_lock:
            self._params.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in params.items()})

    def close(self) -> None:
        """Send what is queued, for at most ``flush_s``; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):  # when full, the thread still sees ``_closed`` after its post
            self._queue.put_nowait(_STOP)
        self._thread.join(self.flush_s)

    def _run(self) -> None:
        deadline: float | None = None
        while True:
            batch: list[dict[str, Any]] = []
            stop = self._collect(batch)
            if stop and deadline is None:
                deadline = time.monotonic() + self.flush_s
            with self._params_lock:
                params, self._params = self._params, {}
            if batch or params:
                self._post(batch, params, deadline)
            if stop and self._queue.empty():
                return
            if deadline is not None and time.monotonic() >= deadline:
                self.dropped += self._queue.qsize()
                return

    def _collect(self, batch: list[dict[str, Any]]) -> bool:
        """Fill ``batch`` with what arrives within ``interval_s`` (one post); True once ``close`` was called."""
        until = time.monotonic() + self.interval_s
        while len(batch) < MAX_METRICS_PER_POST:
            wait = until - time.monotonic()
            if wait <= 0:
                break
            try:  # once closing, take what is there without waiting for more
                item = self._queue.get_nowait() if self._closed else self._queue.get(timeout=wait)
            except queue.Empty:
                break
            if item is _STOP:
                return True
            batch.append(item)
        return self._closed

    def _post(self, batch: list[dict[str, Any]], params: dict[str, str], deadline: float | None) -> None:
        # Parameters go alone: a post the platform refuses for them (MLflow's params are immutable) must not
        # take metrics down with it.
        if params and not self._send({"metrics": [], "params": params}, deadline) and self._param_tries < 3:
            self._param_tries += 1  # sent once per run, so they get a few more chances
            with self._params_lock:
                self._params = {**params, **self._params}
        if batch:
            if self._send({"metrics": batch}, deadline):
                self.sent += len(batch)
            else:
                self.dropped += len(batch)

    def _send(self, body: dict[str, Any], deadline: float | None) -> bool:
        timeout = self.timeout_s if deadline is None else max(0.05, min(self.timeout_s, deadline - time.monotonic()))
        request = urllib.request.Request(self._url, data=json.dumps(body).encode(), method="POST", headers={
            "Authorization": self._auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                resp.read()
            return True
        except Exception:  # an outage, a refusal, a timeout: each costs this post and nothing else
            self.failed_posts += 1
            return False
