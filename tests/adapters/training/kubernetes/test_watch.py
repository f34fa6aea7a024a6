"""The runtime's ``watch()`` against kmock, which serves real watch streams (``?watch=true``): a change made through
the API, the way controllers make them, comes out as the attempt's new status; with the streams refused, the
relist every ``sync_interval_s`` still reports it; ``aclose`` ends the watch and its threads. One stream's
resumption (resourceVersion, 410 Gone, errors) is driven with scripted responses."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import pytest
from kubernetes import client

from adapters.training.base import AttemptStatus
from adapters.training.kubernetes import KubernetesTrainingRuntime
from adapters.training.kubernetes.watch import StreamWatch
from tests.adapters.serving.kube_double import KubeDouble
from tests.adapters.training.kubernetes.kube_training import (
    JOB_ID,
    JOBS,
    NS,
    PODS,
    attempt_labels,
    pod_body,
    settings,
    spec,
    terminated,
)

NAME = "tiny-sft-a1"


@pytest.fixture
async def runtimes(kube: KubeDouble) -> AsyncIterator[Callable[..., KubernetesTrainingRuntime]]:
    """Runtimes on the double, closed before it is (an open watch stream would hold its server's shutdown)."""
    made: list[KubernetesTrainingRuntime] = []

    def make(**overrides: Any) -> KubernetesTrainingRuntime:
        made.append(KubernetesTrainingRuntime(settings(**overrides), api_client=kube.api_client()))
        return made[-1]

    yield make
    for rt in made:
        await rt.aclose()


async def until(statuses: AsyncIterator[AttemptStatus], wanted: Callable[[AttemptStatus], bool],
                timeout_s: float = 15.0) -> AttemptStatus:
    """The first status the watch yields that ``wanted`` accepts (earlier ones are states passed through)."""
    async def first() -> AttemptStatus:
        async for status in statuses:
            if wanted(status):
                return status
        raise AssertionError("the watch ended")

    return await asyncio.wait_for(first(), timeout_s)


async def test_watch_yields_each_change_made_through_the_api(
        kube: KubeDouble, runtimes: Callable[..., KubernetesTrainingRuntime]) -> None:
    rt = runtimes()
    await rt.submit(spec())
    statuses = rt.watch()
    first = await until(statuses, lambda s: True)  # the stream opens with the objects that exist
    assert (first.job_id, first.attempt, first.phase) == (JOB_ID, 1, "pending")
    # The kubelet starts the pod, then the container fails; the Job controller marks the Job failed.
    controller = kube.api_client()
    core, batch = client.CoreV1Api(controller), client.BatchV1Api(controller)
    pod = pod_body(labels=attempt_labels())
    pod["metadata"].update(name=f"{NAME}-x", namespace=NS)  # (the emulator routes events by the object's)
    await asyncio.to_thread(core.create_namespaced_pod, NS, pod)
    assert (await until(statuses, lambda s: s.phase != "pending")).phase == "running"
    await asyncio.to_thread(core.patch_namespaced_pod_status, f"{NAME}-x", NS, {"status": {
        "phase": "Failed", "containerStatuses": [{"name": "trainer", "image": "trainer", "imageID": "", "ready": False,
                                                  "restartCount": 0, "state": terminated(3)}]}})
    failed = await until(statuses, lambda s: s.phase == "failed")
    assert (failed.reason, failed.exit_code) == ("Error", 3)
    await asyncio.to_thread(batch.patch_namespaced_job_status, NAME, NS, {"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "lastTransitionTime": "2025-01-01T00:10:01Z"}]}})
    assert (await until(statuses, lambda s: s.finished_at is not None)).exit_code == 3
    await rt.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(statuses.__anext__(), 5)


async def test_with_the_watch_refused_a_relist_reports_the_change(
        kube: KubeDouble, runtimes: Callable[..., KubernetesTrainingRuntime]) -> None:
    for resource in (JOBS, PODS):
        kube.emulator["watch", kmock.resource(resource)] << kmock.KubernetesError(
            status=500, reason="InternalError", message="watch unavailable")
    rt = runtimes(sync_interval_s=0.1)
    await rt.submit(spec())
    statuses = rt.watch()
    assert (await until(statuses, lambda s: True)).phase == "pending"
    # Written behind the API's back (no watch event at all): only a list sees it.
    kube.patch(JOBS, NS, NAME, {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    assert (await until(statuses, lambda s: s.phase != "pending")).phase == "succeeded"
    watches = [r for r in kube.emulator if r.params.get("watch") == "true"]
    assert watches  # it did try to watch
    await statuses.aclose()  # type: ignore[attr-defined]
    await rt.aclose()


async def test_aclose_ends_a_waiting_watch_and_its_threads(runtimes: Callable[..., KubernetesTrainingRuntime]) -> None:
    rt = runtimes()
    statuses = rt.watch()
    waiting = asyncio.create_task(statuses.__anext__())
    deadline = time.monotonic() + 10
    while len(streams := _watch_threads()) < 2 and time.monotonic() < deadline:  # Jobs and pods
        await asyncio.sleep(0.01)
    assert len(streams) == 2
    started = time.monotonic()
    await rt.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 5
    assert not any(s.is_alive() for s in streams) and _watch_threads() == []


def _watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llmops-training-watch-")]


class _Response:
    """A streaming watch response: JSON lines, then either the end of the stream or a wait until shut down."""

    def __init__(self, events: list[dict[str, Any]], *, hold: bool = False) -> None:
        self._lines = [json.dumps(e).encode() + b"\n" for e in events]
        self._hold = hold
        self._shut = threading.Event()

    def stream(self, amt: Any = None, decode_content: Any = None) -> Any:
        yield from self._lines
        if self._hold:
            self._shut.wait(10)

    def shutdown(self) -> None:
        self._shut.set()

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def _event(kind: str, version: str, job_id: str = JOB_ID) -> dict[str, Any]:
    return {"type": kind, "object": {"metadata": {"name": "x", "resourceVersion": version,
                                                  "labels": attempt_labels(job_id)}}}


def test_a_stream_resumes_from_its_version_starts_over_when_gone_and_reports_its_health() -> None:
    asked: list[str | None] = []
    seen: list[str] = []
    health: list[bool] = []
    answers: list[Any] = [
        _Response([_event("ADDED", "5"), {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}]),
        _Response([{"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}]),
        client.ApiException(status=500, reason="InternalError"),
        _Response([_event("MODIFIED", "12", "trj_0002")], hold=True),
    ]

    def open_stream(version: str | None) -> Any:
        asked.append(version)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    stream = StreamWatch("Job", open_stream, lambda obj: seen.append(obj["metadata"]["labels"][
        "llmops.io/training-job"]), lambda what, ok: health.append(ok))
    stream.start()
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.stop()
    stream.join(5)
    assert not stream.is_alive()
    # Resumed after the bookmark's version; after 410 Gone, from nothing (the server replays every object).
    assert asked == [None, "9", None, None]
    assert seen == [JOB_ID, "trj_0002"]  # the bookmark and the error are no objects
    assert health == [True, True, False, True]
