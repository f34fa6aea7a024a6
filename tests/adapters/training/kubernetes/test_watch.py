"""The runtime's ``watch()`` against kmock, which serves real watch streams (``?watch=true``): a change made through
the API, the way controllers make them, comes out as the attempt's new status; with the streams refused, the
relist every ``sync_interval_s`` still reports it; ``aclose`` ends the watch and its threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import pytest
from kubernetes import client

from adapters.training.base import AttemptStatus
from adapters.training.kubernetes import KubernetesTrainingRuntime
from tests.adapters.serving.kube_double import KubeDouble, open_kube_double
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
async def kube() -> AsyncIterator[KubeDouble]:
    async with open_kube_double() as double:
        yield double


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
