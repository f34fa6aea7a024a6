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
from functools import partial
from typing import Any

import msgspec
import urllib3
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from adapters.kubernetes.client import CLIENT_ERRORS, read
from adapters.training.kubernetes.api import KubeApi, refusal
from adapters.training.kubernetes.manifests import LABEL_ATTEMPT, LABEL_JOB
from adapters.training.kubernetes.objects import Listed

__all__ = ["AttemptFeed", "Key", "NamespaceWatch", "StreamWatch", "attempt_key", "fingerprints"]

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
                if self._stopping.is_set():  # stop() ran before the response was there to shut
                    break
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


class NamespaceWatch:
    """What one ``watch()`` runs: a stream per kind (``Job``, ``Pod``, the Kubeflow kinds in use), all with the
    ``llmops.io/training-job`` label, and while any is broken, the relist. ``next()`` is the next attempt that
    changed; ``stop()`` (from the event loop) ends it all without waiting, ``join`` waits for the threads."""

    def __init__(self, api: KubeApi, kinds: list[str], sync_interval_s: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._api = api
        self._kinds = kinds
        self._interval_s = sync_interval_s
        self._loop = loop
        self._feed = AttemptFeed(loop)
        self._broken: set[str] = set()
        self._relist: asyncio.Task[None] | None = None
        self._streams = [StreamWatch(kind, partial(self._open, kind), self._on_object, self._on_health)
                         for kind in kinds]

    def start(self) -> None:
        for stream in self._streams:
            stream.start()

    async def next(self) -> Key | None:
        return await self._feed.next()

    def stop(self) -> None:
        self._feed.close()
        for stream in self._streams:
            stream.stop()
        if self._relist is not None:
            self._relist.cancel()

    async def join(self, timeout_s: float) -> None:
        for stream in self._streams:
            if stream.is_alive():
                await asyncio.to_thread(stream.join, timeout_s)

    def _open(self, kind: str, resource_version: str | None) -> Any:
        """On a stream's thread: the raw streaming response of a watch on ``kind``."""
        options: dict[str, Any] = {"watch": True, "label_selector": LABEL_JOB, "allow_watch_bookmarks": True,
                                   "timeout_seconds": WATCH_TIMEOUT_S, "_preload_content": False,
                                   "_request_timeout": (5.0, WATCH_TIMEOUT_S + 30.0)}
        if resource_version:
            options["resource_version"] = resource_version
        return self._api.lister(kind)(**options)

    def _on_object(self, obj: dict[str, Any]) -> None:  # on a stream's thread
        key = attempt_key((obj.get("metadata") or {}).get("labels"))
        if key is not None:
            self._feed.put_threadsafe(key)

    def _on_health(self, what: str, ok: bool) -> None:  # on a stream's thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._health, what, ok)

    def _health(self, what: str, ok: bool) -> None:  # on the loop
        (self._broken.discard if ok else self._broken.add)(what)
        if self._broken and not self._feed.closed and (self._relist is None or self._relist.done()):
            self._relist = asyncio.create_task(self._relist_while_broken())

    async def _relist_while_broken(self) -> None:
        """List everything every ``sync_interval_s`` and report what changed since the last list."""
        seen: dict[Key, Any] | None = None
        while self._broken and not self._feed.closed:
            try:
                lists = [await read(self._api.lister(kind), Listed, label_selector=LABEL_JOB)
                         for kind in self._kinds]
            except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
                log.debug("training: relist failed: %s", refusal(exc, "the training namespace").reason)
            else:
                now = fingerprints(*lists)
                for key in sorted(set(now) | set(seen or {})):
                    if seen is None or now.get(key) != seen.get(key):
                        self._feed.put(key)
                seen = now
            await asyncio.sleep(self._interval_s)
