"""The reference trainer's parts in process: gradients, rows to text, hyperparameters, the metrics reporter,
the data-parallel group, and the job-API test double's own checks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import aiohttp
import numpy as np
import pytest

from adapters.testdoubles.training_api import TrainingApiDouble
from adapters.training.trainer.client import ApiError, JobClient
from adapters.training.trainer.dist import DistError, Group, join_group
from adapters.training.trainer.jobenv import BadInput, Hyper, read_job_env
from adapters.training.trainer.model import Arch, init_params, loss_and_grads, loss_only
from adapters.training.trainer.reporter import MetricsReporter
from adapters.training.trainer.texts import collect_texts, row_text
from tests.adapters.training.trainer.test_reference_trainer import free_port


def test_gradients_match_finite_differences() -> None:
    arch = Arch(context_length=3, embedding_dim=4, hidden_dim=5, layers=2)
    rng = np.random.default_rng(1)
    params = {k: v.astype(np.float64) for k, v in init_params(arch, rng).items()}
    params["head.weight"] *= 10  # away from the near-uniform start, so every gradient is sizeable
    ctx = rng.integers(0, 256, (6, 3))
    targets = rng.integers(0, 256, 6)
    _, grads = loss_and_grads(params, arch, ctx, targets)
    eps = 1e-5
    for name, value in params.items():
        for index in list(np.ndindex(value.shape))[:: max(1, value.size // 7)]:
            if name == "embed.weight" and index[0] not in ctx:
                continue  # an unused byte's embedding has no gradient at all
            old = value[index]
            value[index] = old + eps
            up = loss_only(params, arch, ctx, targets)
            value[index] = old - eps
            down = loss_only(params, arch, ctx, targets)
            value[index] = old
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - grads[name][index]) < 1e-4 + 1e-3 * abs(numeric), (name, index)


@pytest.mark.parametrize(("row", "field", "text"), [
    ({"text": "plain", "other": "x"}, None, "plain"),
    ({"prompt": "Q: 2+2?", "completion": " 4"}, None, "Q: 2+2? 4"),
    ({"prompt": "Hi", "completion": "there"}, None, "Hi\nthere"),
    ({"messages": [{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}]}, None,
     "user: Hi\nassistant: Hello"),
    ({"instruction": "Add", "input": "2 2", "output": "4"}, None, "Add\n2 2\n4"),
    ({"title": "A", "n": 3, "body": "B"}, None, "A\nB"),
    ({"body": "only this", "text": "not this"}, "body", "only this"),
    ({"text": "not this"}, "body", ""),
    ("a bare string row", None, "a bare string row"),
    ([1, 2], None, ""),
])
def test_row_text_takes_the_first_shape_that_fits(row: Any, field: str | None, text: str) -> None:
    assert row_text(row, field) == text


def test_collect_texts_refuses_a_dataset_without_text() -> None:
    assert collect_texts([{"text": "a"}, {"x": 1}, {"text": " "}]) == ["a"]
    with pytest.raises(BadInput, match="no usable text in 2 dataset rows"):
        collect_texts([{"x": 1}, {"text": ""}])


def test_hyperparameters_are_checked_by_name() -> None:
    h = Hyper({"steps": "20", "lr": 0.1, "on": [1, 2], "one": 3, "csv": "1, 2", "bad": True})
    assert h.get_int("steps", 1, lo=1, hi=100) == 20
    assert h.get_float("lr", 1.0, lo=0.0, hi=1.0, open_lo=True) == 0.1
    assert h.get_ints("on") == {1, 2} and h.get_ints("one") == {3} and h.get_ints("csv") == {1, 2}
    with pytest.raises(BadInput, match="hyperparameter bad must be an integer"):
        h.get_int("bad", 1, lo=0, hi=5)
    with pytest.raises(BadInput, match=r"hyperparameter lr must be a number above 0\.0"):
        Hyper({"lr": 0}).get_float("lr", 1.0, lo=0.0, hi=1.0, open_lo=True)
    partly = Hyper({"steps": 1, "extra": 2})
    partly.get_int("steps", 1, lo=1, hi=9)
    assert partly.unknown() == ["extra"]


def test_the_job_environment_is_read_and_checked() -> None:
    base = {"API_BASE_URL": "http://x/llm-ops/v1/", "LLMOPS_JOB_ID": "j1", "LLMOPS_JOB_TOKEN": "ljt_secret"}
    env = read_job_env({**base, "LLMOPS_ATTEMPT": "3", "LLMOPS_JOB_TYPE": "distributed",
                        "LLMOPS_BASE_MODEL_ID": "m1", "RANK": "1", "WORLD_SIZE": "2"})
    assert env.api_base_url == "http://x/llm-ops/v1" and env.attempt == 3 and env.finetune and env.rank == 1
    assert "ljt_secret" not in repr(env)
    assert "ljt_secret" not in repr(JobClient(env.api_base_url, env.job_id, env.token))
    with pytest.raises(BadInput, match="missing environment: LLMOPS_JOB_TOKEN"):
        read_job_env({k: v for k, v in base.items() if k != "LLMOPS_JOB_TOKEN"})
    with pytest.raises(BadInput, match="a finetune needs LLMOPS_BASE_MODEL_ID"):
        read_job_env({**base, "LLMOPS_JOB_TYPE": "finetune"})
    with pytest.raises(BadInput, match="LLMOPS_HYPERPARAMETERS must be a JSON object"):
        read_job_env({**base, "LLMOPS_HYPERPARAMETERS": "[1]"})
    with pytest.raises(BadInput, match="RANK 2 and WORLD_SIZE 2"):
        read_job_env({**base, "RANK": "2", "WORLD_SIZE": "2"})


async def test_the_reporter_batches_and_never_waits_for_the_platform(api: TrainingApiDouble) -> None:
    job = api.add_job("rep", [])
    client = JobClient(api.base_url, job.job_id, job.token)
    reporter = MetricsReporter(client.metrics_url, client.auth_header, interval_s=0.1)
    reporter.log_params({"steps": 3, "name": "x"})
    for step in range(1, 1201):
        reporter.log({"train_loss": 1.0 / step}, step)
    await asyncio.to_thread(reporter.close)
    assert len(job.series("train_loss")) == 1200 and reporter.sent == 1200 and reporter.dropped == 0
    assert job.params == {"steps": "3", "name": "x"}
    assert 3 <= job.metric_posts <= 10  # ≤ 1,000 points per post, params on their own

    api.metrics_mode = "hang"
    hung = MetricsReporter(client.metrics_url, client.auth_header, interval_s=0.05, timeout_s=0.5, flush_s=1.0)
    began = time.monotonic()
    for step in range(1, 5001):
        hung.log({"train_loss": 1.0}, step)
        if step % 1000 == 0:
            await asyncio.sleep(0.1)  # let the thread start posts that hang
    assert time.monotonic() - began < 1.5  # logging never waited for a post
    closing = time.monotonic()
    await asyncio.to_thread(hung.close)
    assert time.monotonic() - closing < 1.5
    assert hung.sent == 0 and hung.dropped >= 1000 and api.refused_metric_posts >= 1


async def test_the_reporter_survives_a_platform_that_is_not_there() -> None:
    url = f"http://127.0.0.1:{free_port()}/llm-ops/v1/training/jobs/j/metrics"
    reporter = MetricsReporter(url, "Bearer ljt_x", interval_s=0.05, timeout_s=0.2)
    reporter.log({"a": 1.0, "b": 2.0, "c": float("nan")}, 1)
    await asyncio.to_thread(reporter.close)
    assert reporter.sent == 0 and reporter.dropped == 3 and reporter.failed_posts >= 1
    reporter.log({"a": 1.0}, 2)  # after close: ignored, never raises
    reporter.close()


def _join(rank: int, port: int, token: str, out: dict[int, Any], timeout_s: float = 10.0) -> None:
    try:
        out[rank] = join_group(rank, 2, "127.0.0.1", port, token, connect_timeout_s=timeout_s, step_timeout_s=5.0)
    except DistError as exc:
        out[rank] = exc


def test_the_group_averages_gradients_and_refuses_strangers() -> None:
    port, groups = free_port(), {}  # type: ignore[var-annotated]
    threads = [threading.Thread(target=_join, args=(r, port, "ljt_same", groups)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    lead, worker = groups[0], groups[1]
    assert isinstance(lead, Group) and isinstance(worker, Group)
    results: dict[int, Any] = {}
    state = threading.Thread(target=lambda: results.update({1: worker.broadcast(), 2: worker.average(
        3.0, {"w": np.full(3, 4.0, np.float32)})}))
    state.start()
    assert lead.broadcast({"step": 7}) == {"step": 7}
    loss, grads = lead.average(1.0, {"w": np.full(3, 2.0, np.float32)})
    state.join(10)
    assert results[1] == {"step": 7}
    assert loss == 2.0 and grads["w"].tolist() == [3.0, 3.0, 3.0]
    assert results[2][0] == 2.0 and results[2][1]["w"].tolist() == [3.0, 3.0, 3.0]
    worker.close()
    with pytest.raises(DistError, match="went away"):
        lead.average(1.0, {"w": np.zeros(3, np.float32)})
    lead.close()

    # Another job's process (another token) cannot join; rank 0 alone gives up at its deadline.
    port, groups = free_port(), {}
    threads = [threading.Thread(target=_join, args=(0, port, "ljt_mine", groups, 1.5)),
               threading.Thread(target=_join, args=(1, port, "ljt_other", groups, 1.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert isinstance(groups[1], DistError) and "refused" in str(groups[1])
    assert isinstance(groups[0], DistError) and "only 0 of 1 ranks joined" in str(groups[0])


def _rows(client: JobClient) -> list[Any]:
    return list(client.dataset_rows())


async def test_the_double_checks_tokens_and_paths(api: TrainingApiDouble) -> None:
    job = api.add_job("j1", [{"text": "a"}])
    other = api.add_job("j2", [])
    good = JobClient(api.base_url, job.job_id, job.token, retries=0)
    for client in (JobClient(api.base_url, job.job_id, other.token, retries=0),
                   JobClient(api.base_url, job.job_id, "ljt_wrong", retries=0)):
        with pytest.raises(ApiError) as failed:
            await asyncio.to_thread(_rows, client)
        assert failed.value.status == 401 and job.token not in str(failed.value)
    assert await asyncio.to_thread(_rows, good) == [{"text": "a"}]
    with pytest.raises(ApiError, match="HTTP 404: this job has no base model"):
        await asyncio.to_thread(good.model_files)
    put = await asyncio.to_thread(good.put_artifact, "checkpoints/step-1/a.bin", b"abc")
    assert put["sizeBytes"] == 3 and put["key"] == "training/j1/checkpoints/step-1/a.bin"
    await asyncio.to_thread(good.put_artifact, "output/config.json", b"{}")
    listed = await asyncio.to_thread(good.list_artifacts, "checkpoints/")
    assert [f["path"] for f in listed] == ["checkpoints/step-1/a.bin"]
    assert await asyncio.to_thread(good.artifact, "output/config.json") == b"{}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {job.token}"}) as http:
        for bad in ("elsewhere/x", "output//b", "output/a%20b", "output/" + "x" * 600):
            async with http.put(f"{api.base_url}/training/jobs/j1/artifacts/{bad}", data=b"x") as resp:
                assert resp.status == 400, bad
                assert (await resp.json())["data"][0]["field"] == "path"
        async with http.post(f"{api.base_url}/training/jobs/j1/metrics", json={"metrics": [{"key": "a"}]}) as resp:
            assert resp.status == 400
    assert api.unauthorized == 2
