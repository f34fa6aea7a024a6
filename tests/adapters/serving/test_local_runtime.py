"""LocalRuntime with real processes: the mock upstream (a TEST DOUBLE) started, probed, replaced and stopped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from adapters.serving.base import RuntimeFailure, ServingRuntime
from adapters.serving.local import LocalRuntime
from adapters.serving.settings import load_serving_settings
from tests.adapters.serving.local_helpers import (
    alive,
    eventually,
    local_runtime,
    make_spec,
    read_log,
    until,
    wait_dead,
    wait_status,
)

CHAT = {"messages": [{"role": "user", "content": "Hello"}], "model": "anything"}


async def _chat(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.post(base_url + "/chat/completions", json=CHAT) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["model"])


def _started_pids(workdir: Path) -> list[int]:
    """Every pid the runtime started, from the lines it writes into each process's log."""
    return [int(line.split("started as pid ")[1].split()[0])
            for log in workdir.glob("**/*.stdout.log") for line in log.read_text().splitlines()
            if "started as pid " in line]


def test_is_a_serving_runtime(tmp_path: Path) -> None:
    runtime: ServingRuntime = LocalRuntime(load_serving_settings({}), workdir=tmp_path)
    assert runtime.name == "local"


async def test_apply_ready_chat_and_same_revision_is_a_no_op(tmp_path: Path) -> None:
    spec = make_spec(1, vllm_args=["--max-model-len", "4096", "--dtype", "half"])  # vLLM options: ignored
    async with local_runtime(tmp_path) as runtime:
        assert (await runtime.status(spec.endpoint_id, spec.endpoint_name, "stable")).phase == "absent"
        started = time.monotonic()
        manifests = await runtime.apply(spec, "stable")
        assert time.monotonic() - started < 1.0  # returns at once; readiness is followed in the background
        assert manifests == runtime.render(spec, "stable")
        [doc] = manifests
        assert doc["kind"] == "LocalProcess" and doc["slot"] == "stable" and doc["revision"] == 1
        assert doc["server"] == "mock" and "{port}" in doc["command"]
        st = await wait_status(runtime, spec)
        assert (st.ready_replicas, st.desired_replicas, st.revision) == (1, 1, 1)
        assert st.base_url is not None and st.base_url.startswith("http://127.0.0.1:") and st.base_url.endswith("/v1")
        pid = st.details["pid"]
        assert alive(pid) and st.details["restarts"] == 0
        async with aiohttp.ClientSession() as session:
            assert await _chat(session, st.base_url) == "tiny-r1"  # answers as served_model_name
        await runtime.apply(spec, "stable")
        again = await runtime.status(spec.endpoint_id, spec.endpoint_name, "stable")
        assert again.details["pid"] == pid and again.phase == "ready"
        log = read_log(st.details["log"])
        assert "ignoring options it does not know: --max-model-len 4096 --dtype half" in log


async def test_surge_replace_keeps_serving_then_stops_the_old_process(tmp_path: Path) -> None:
    one, two = make_spec(1), make_spec(2)
    async with local_runtime(tmp_path, drain_s=2.0) as runtime:
        await runtime.apply(one, "stable")
        old = await wait_status(runtime, one)
        old_pid = old.details["pid"]
        failures: list[str] = []
        served: list[str] = []
        switched = asyncio.Event()

        async def traffic() -> None:
            """What the gateway does: send each request to the slot's current base URL (bounded in time)."""
            deadline = time.monotonic() + 30
            async with aiohttp.ClientSession() as session:
                while time.monotonic() < deadline and not (switched.is_set() and served.count("tiny-r2") >= 20):
                    st = await runtime.status(one.endpoint_id, one.endpoint_name, "stable")
                    try:
                        assert st.base_url is not None
                        served.append(await _chat(session, st.base_url))
                    except (AssertionError, aiohttp.ClientError) as exc:
                        failures.append(repr(exc))

        loop = asyncio.create_task(traffic())
        await eventually(lambda: len(served) >= 5, what="traffic to start")
        await runtime.apply(two, "stable")
        during = await runtime.status(one.endpoint_id, one.endpoint_name, "stable")
        assert (during.phase, during.revision, during.base_url) == ("ready", 1, old.base_url)  # old until new is ready
        new = await wait_status(runtime, two, revision=2)
        assert alive(old_pid)  # draining: the gateway may still send it what it routed before the switch
        switched.set()
        await loop
        assert failures == []
        assert "tiny-r1" in served and served[-1] == "tiny-r2"
        assert new.base_url != old.base_url and new.details["pid"] != old_pid
        await wait_dead(old_pid)


async def test_crash_restarts_with_backoff_then_crash_loop_back_off(tmp_path: Path) -> None:
    secret = "hf_" + "s3cr3tvalue" * 3
    spec = make_spec(1, vllm_args=["--mock-fault", "crash", "--hf-token", secret])
    async with local_runtime(tmp_path, max_restarts=2, restart_backoff_s=0.1) as runtime:
        await runtime.apply(spec, "stable")
        st = await wait_status(runtime, spec, phase="failed")
        assert st.reason == "CrashLoopBackOff"
        assert st.details["restarts"] == 2 and st.details["lastExitCode"] == 3
        assert "exited with code 3" in st.message and "engine failed to start" in st.message  # stderr tail
        assert secret not in st.message and "--hf-token ***" in st.message
        assert secret not in str(runtime.render(spec, "stable"))
        starts = read_log(st.details["log"]).count("started as pid")
        assert starts == 3  # the first start and two restarts


async def test_a_ready_process_that_dies_is_restarted(tmp_path: Path) -> None:
    spec = make_spec(1, vllm_args=["--mock-fault", "crash-after:1.5"])
    async with local_runtime(tmp_path, max_restarts=5, restart_backoff_s=0.1) as runtime:
        await runtime.apply(spec, "stable")
        first = await wait_status(runtime, spec)
        down = await wait_status(runtime, spec, phase="progressing")  # no longer ready while it restarts
        assert down.reason == "ProcessExited" and down.ready_replicas == 0
        assert "exited with code 3: mock fault: engine died after 1.5 s" in down.message

        async def restarted() -> object:
            st = await runtime.status(spec.endpoint_id, spec.endpoint_name, "stable")
            return st if st.phase == "ready" and st.details["restarts"] >= 1 else None

        second = await until(restarted, what="a restart")
        assert second.details["pid"] != first.details["pid"] and second.base_url == first.base_url
        assert not alive(first.details["pid"])


async def test_startup_timeout_kills_the_process(tmp_path: Path) -> None:
    spec = make_spec(1, vllm_args=["--mock-fault", "hang"])
    async with local_runtime(tmp_path, load_serving_settings({}, local_ready_timeout_s=1.0)) as runtime:
        await runtime.apply(spec, "stable")
        progressing = await runtime.status(spec.endpoint_id, spec.endpoint_name, "stable")
        assert progressing.phase == "progressing" and progressing.ready_replicas == 0
        st = await wait_status(runtime, spec, phase="failed")
        assert st.reason == "StartupTimeout" and "1 s" in st.message
        log = read_log(st.details["log"])
        pid = int(log.split("started as pid ")[1].split()[0])
        assert not alive(pid)


async def test_image_that_cannot_run_fails_visibly(tmp_path: Path) -> None:
    spec = make_spec(1, image="invalid/never-pulled:1")
    async with local_runtime(tmp_path) as runtime:
        [doc] = runtime.render(spec, "stable")
        assert doc["server"] == "none" and doc["command"] == [] and "invalid/" in doc["error"]
        await runtime.apply(spec, "stable")
        st = await wait_status(runtime, spec, phase="failed", timeout_s=5)
        assert st.reason == "ImageNotRunnable" and "invalid/never-pulled:1" in st.message
        report = await runtime.delete(spec.endpoint_id, spec.endpoint_name, "stable")
        assert report.complete and report.deleted == []


async def test_failed_rollout_keeps_the_old_revision_serving(tmp_path: Path) -> None:
    one, bad = make_spec(1), make_spec(2, image="invalid/broken:2")
    async with local_runtime(tmp_path) as runtime:
        await runtime.apply(one, "stable")
        ready = await wait_status(runtime, one)
        await runtime.apply(bad, "stable")

        async def rollout_failed() -> object:
            st = await runtime.status(one.endpoint_id, one.endpoint_name, "stable")
            return st if st.reason == "ImageNotRunnable" else None

        st = await until(rollout_failed, what="the rollout to fail")
        assert (st.phase, st.revision, st.base_url) == ("ready", 1, ready.base_url)
        assert "revision 2 failed" in st.message and st.details["rollout"]["revision"] == 2
        await runtime.apply(one, "stable")  # back to what serves: the failed rollout is dropped
        st = await runtime.status(one.endpoint_id, one.endpoint_name, "stable")
        assert st.reason is None and "rollout" not in st.details and st.details["pid"] == ready.details["pid"]


async def test_slots_are_independent_and_delete_reports(tmp_path: Path) -> None:
    stable, canary = make_spec(1), make_spec(2)
    async with local_runtime(tmp_path) as runtime:
        await runtime.apply(stable, "stable")
        await runtime.apply(canary, "canary")
        s = await wait_status(runtime, stable)
        c = await wait_status(runtime, canary, "canary")
        assert s.base_url != c.base_url and (s.revision, c.revision) == (1, 2)
        report = await runtime.delete(stable.endpoint_id, stable.endpoint_name, "canary")
        assert report.deleted == [f"process {c.details['pid']}"] and report.complete
        await wait_dead(c.details["pid"], timeout_s=1)  # delete stops and reaps before answering
        assert (await runtime.status(stable.endpoint_id, stable.endpoint_name, "canary")).phase == "absent"
        assert (await runtime.status(stable.endpoint_id, stable.endpoint_name, "stable")).phase == "ready"
        report = await runtime.delete(stable.endpoint_id, stable.endpoint_name)
        assert report.deleted == [f"process {s.details['pid']}"]
        assert report.already_gone == ["LocalProcess/demo-canary"]
        assert not alive(s.details["pid"])
        again = await runtime.delete(stable.endpoint_id, stable.endpoint_name)
        assert again.deleted == [] and again.already_gone == ["LocalProcess/demo", "LocalProcess/demo-canary"]


async def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    spec = make_spec(1, vllm_args=["--mock-fault", "ignore-sigterm"])
    async with local_runtime(tmp_path, stop_grace_s=0.5) as runtime:
        await runtime.apply(spec, "stable")
        pid = (await wait_status(runtime, spec)).details["pid"]
        started = time.monotonic()
        report = await runtime.delete(spec.endpoint_id, spec.endpoint_name, "stable")
        assert report.deleted == [f"process {pid}"] and not alive(pid)
        assert 0.5 <= time.monotonic() - started < 5


async def test_aclose_leaves_no_process(tmp_path: Path) -> None:
    runtime = LocalRuntime(load_serving_settings({}), workdir=tmp_path, drain_s=30)
    a1, a2, b1, b2 = (make_spec(r, endpoint_id=f"ep_{n}", name=n) for n, r in (("a", 1), ("a", 2), ("b", 1), ("b", 2)))
    try:
        await runtime.apply(a1, "stable")
        await runtime.apply(a2, "canary")
        await runtime.apply(b1, "stable")
        await wait_status(runtime, a1)
        await wait_status(runtime, a2, "canary")
        await wait_status(runtime, b1)
        await runtime.apply(b2, "stable")
        await wait_status(runtime, b2, revision=2)  # b1 now drains for 30 s
        await runtime.apply(make_spec(3, endpoint_id="ep_b", name="b"), "stable")  # and a rollout is in flight
        await eventually(lambda: len(_started_pids(tmp_path)) >= 5, what="five processes")
        pids = _started_pids(tmp_path)
        assert sum(alive(pid) for pid in pids) >= 4
    finally:
        await runtime.aclose()
    pids = _started_pids(tmp_path)
    assert len(pids) >= 5 and not [pid for pid in pids if alive(pid)]
    assert (await runtime.status("ep_a", "a", "stable")).phase == "absent"
    with pytest.raises(RuntimeFailure):
        await runtime.apply(a1, "stable")
