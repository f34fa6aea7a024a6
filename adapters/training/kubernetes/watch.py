"""Watching the training namespace: one thread per resource (the client's watch is a blocking stream), each
reporting the attempts whose objects changed; the runtime's ``watch()`` turns those into statuses.

A stream is a list call with ``watch=True``, a server-side ``timeoutSeconds`` and bookmarks. When it ends normally
(the server's timeout) it resumes from the last ``resourceVersion`` seen; on ``410 Gone`` it starts over without
one, so the server replays every object as ``ADDED`` (a relist through the watch itself). When it cannot be
opened or breaks, the thread reports itself unhealthy and retries with backoff, while the runtime relists every
``sync_interval_s`` and reports what changed between two lists (``fingerprints``), until the stream is back.
``stop()`` shuts the socket under a blocked read, so a thread ends within moments of ``aclose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from adapters.training.kubernetes.manifests import LABEL_ATTEMPT, LABEL_JOB
from adapters.training.kubernetes.objects import Listed

__all__ = ["AttemptFeed", "Key", "StreamWatch", "attempt_key", "fingerprints"]

log = logging.getLogger("llmops.training.kubernetes")
Key = tuple[str, int]  # (job_id, attempt)
WATCH_TIMEOUT_S = 240  # the server ends a stream after this; the thread resumes it from its resourceVersion
_BACKOFF_MAX_S = 30.0


def attempt_key(labels: dict[str, str] | None) -> Key | None:
    labels = labels or {}
    job_id, attempt = labels.get(LABEL_JOB), labels.get(LABEL_ATTEMPT, "")
    return (job_id, int(attempt)) if job_id and attempt.isdigit() else None


def fingerprints(*lists: Listed) -> dict[Key, tuple[tuple[str, str], ...]]:
    """Per attempt, what identifies its objects' current state (resourceVersion, else the status itself)."""
    out: dict[Key, list[tuple[str, str]]] = {}
    for listed in lists:
        for item in listed.items:
            key = attempt_key(item.metadata.labels)
            if key is None:
                continue
            meta = item.metadata
            state = meta.resource_version or bytes(item.status).decode("utf-8", "replace")
            out.setdefault(key, []).append((meta.name, f"{state}|{meta.deletion_timestamp or ''}"))
    return {k: tuple(sorted(v)) for k, v in out.items()}


class AttemptFeed:
    """Attempts that changed, coalesced (one pending entry per attempt), from threads to one async consumer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: dict[Key, None] = {}
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, key: Key) -> None:
        if not self.closed:
            self._pending.setdefault(key, None)
            self._ready.set()

    def put_threadsafe(self, key: Key) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self.put, key)

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self) -> Key | None:
        """The next attempt that changed, oldest first; None once closed."""
        while not self._pending and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        key = next(iter(self._pending))
        del self._pending[key]
        return key


class _Gone(Exception):
    """The resourceVersion is too old (410): start over without one."""


class StreamWatch(threading.Thread):
    """One resource's watch stream. ``open_stream(resource_version)`` returns the client's raw streaming response;
    ``on_object`` gets each changed object (a dict); ``on_health(what, ok)`` says when the stream breaks or is back.
    Both callbacks run on this thread."""

    def __init__(self, what: str, open_stream: Callable[[str | None], Any], on_object: Callable[[dict[str, Any]], None],
                 on_health: Callable[[str, bool], None]) -> None:
        super().__init__(name=f"llmops-training-watch-{what}", daemon=True)
        self.what = what
        self._open = open_stream
        self._on_object = on_object
        self._on_health = on_health
        self._stopping = threading.Event()
        self._response: Any = None

    def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                response.shutdown()  # unblocks a read in progress on this thread

    def run(self) -> None:
        version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                self._response = self._open(version)
                if failures:
                    log.info("training: the watch on %s is back", self.what)
                failures = 0
                self._on_health(self.what, True)
                version = self._consume(self._response, version)
            except _Gone:
                version = None
            except urllib3.exceptions.ReadTimeoutError:
                pass  # a quiet stream the server did not end in time: resume it
            except (client.ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stopping.is_set():
                    break
                if isinstance(exc, client.ApiException) and exc.status == 410:
                    version = None
                    continue
                failures += 1
                if failures == 1:
                    log.warning("training: the watch on %s failed (%s); relisting until it is back", self.what,
                                type(exc).__name__ if not isinstance(exc, client.ApiException) else exc.status)
                self._on_health(self.what, False)
                self._stopping.wait(min(2.0 ** (failures - 1), _BACKOFF_MAX_S))
            finally:
                response, self._response = self._response, None
                if response is not None:
                    response.close()
                    response.release_conn()

    def _consume(self, response: Any, version: str | None) -> str | None:
        for line in iter_resp_lines(response):
            if self._stopping.is_set():
                break
            if not line.strip():
                continue
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone()
                raise client.ApiException(status=obj.get("code") or 500, reason=str(obj.get("reason") or "watch"))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind != "BOOKMARK":
                self._on_object(obj)
        return version
