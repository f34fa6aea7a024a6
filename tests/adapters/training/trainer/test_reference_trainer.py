"""The reference trainer as a real subprocess against the job-API test double: it learns, saves a model the
catalog can take, fine-tunes from it, resumes from checkpoints, shrugs off a metrics outage, refuses bad input
with exit 2, trains data-parallel, and never prints its token."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import numpy as np
from safetensors.numpy import load as st_load

from adapters.testdoubles.training_api import FakeJob, TrainingApiDouble
from adapters.training.contract import EXIT_BAD_INPUT
from adapters.training.trainer.corpus import Corpus
from tests.adapters.training.trainer.support import Run, finish, run_trainer, sentences, start

FAST = {"steps": 60, "logEvery": 10, "evalEvery": 30, "checkpointEvery": 0}


def assert_no_token(job: FakeJob, *runs: Run) -> None:
    for run in runs:
        assert job.token not in run.stdout and job.token not in run.stderr


def output_model(job: FakeJob) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    return st_load(job.artifacts["output/model.safetensors"]), json.loads(job.artifacts["output/config.json"])


async def test_from_scratch_learns_and_saves_a_model_then_a_finetune_continues_from_it(
        api: TrainingApiDouble) -> None:
    job = api.add_job("scratch", sentences(200))
    arch = {"contextLength": 12, "embeddingDim": 16, "hiddenDim": 96}
    run = await run_trainer(api.job_env(job, job_type="from_scratch", architecture=arch,
                                        hyperparameters={"steps": 200, "checkpointEvery": 100}))
    assert run.rc == 0, run.stderr
    train, evals = job.series("train_loss"), job.series("eval_loss")
    assert train[0][0] == 1 and train[-1][0] == 200
    assert train[0][1] > 5.0 and train[-1][1] < 0.5 * train[0][1], train  # from ~ln(256) to well below
    assert [s for s, _ in evals] == [50, 100, 150, 200] and evals[-1][1] < 0.6 * evals[0][1], evals
    assert {"learning_rate", "tokens_per_second", "epoch"} <= {p["key"] for p in job.metrics}
    assert job.params["architecture.contextLength"] == "12" and job.params["trainer"] == "reference"
    # output/ uploaded last, weights before config; a checkpoint on the way
    assert job.puts[:3] == [f"checkpoints/step-100/{n}" for n in
                            ("model.safetensors", "optimizer.safetensors", "trainer_state.json")]
    assert job.puts[-2:] == ["output/model.safetensors", "output/config.json"]
    tensors, config = output_model(job)
    assert config["architectures"] == ["LlmopsByteMLP"] and config["model_type"] == "llmops-byte-mlp"
    assert config["vocab_size"] == 256 and config["context_length"] == 12 and config["hidden_dim"] == 96
    assert tensors["embed.weight"].shape == (256, 16) and tensors["embed.weight"].dtype == np.float32
    assert tensors["layers.0.weight"].shape == (12 * 16, 96) and tensors["head.weight"].shape == (96, 256)
    assert "step 200/200" in run.stdout

    # A fine-tune of that output starts where it ended, far below a fresh model's first loss.
    base = {"model.safetensors": job.artifacts["output/model.safetensors"],
            "config.json": job.artifacts["output/config.json"]}
    tuned = api.add_job("tuned", sentences(100, seed=1), model_files=base)
    fresh = api.add_job("fresh", sentences(100, seed=1))
    tuned_run, fresh_run = await asyncio.gather(
        run_trainer(api.job_env(tuned, job_type="finetune", hyperparameters=FAST)),
        run_trainer(api.job_env(fresh, job_type="from_scratch", architecture=arch, hyperparameters=FAST)))
    assert tuned_run.rc == 0 and fresh_run.rc == 0, tuned_run.stderr + fresh_run.stderr
    assert tuned.series("train_loss")[0][1] < 0.5 * fresh.series("train_loss")[0][1]
    assert ("GET", "/inputs/model/model.safetensors") in api.requests
    assert json.loads(tuned.artifacts["output/config.json"])["context_length"] == 12  # the base's architecture
    assert_no_token(job, run)
    assert_no_token(tuned, tuned_run)


async def test_attempt_two_resumes_from_the_newest_usable_checkpoint(api: TrainingApiDouble) -> None:
    job = api.add_job("resume", sentences(120))
    hyper = {"steps": 150, "checkpointEvery": 50, "failAtStep": 120, "failOnAttempts": [1], "exitCode": 7}
    first = await run_trainer(api.job_env(job, attempt=1, hyperparameters=hyper))
    assert first.rc == 7, first.stderr
    assert "fault injection: failing at step 120" in first.stdout
    assert "output/model.safetensors" not in job.artifacts
    assert {p.rsplit("/", 1)[0] for p in job.artifacts} == {"checkpoints/step-50", "checkpoints/step-100"}
    last_loss_attempt_1 = job.series("train_loss")[-1]
    assert last_loss_attempt_1[0] == 120

    # Newer checkpoints that cannot be used are skipped: one cut short, one with broken weights.
    job.artifacts["checkpoints/step-140/model.safetensors"] = b"partial"
    for name, data in (("model.safetensors", b"not safetensors"), ("optimizer.safetensors", b"x"),
                       ("trainer_state.json", b'{"step": 130}')):
        job.artifacts[f"checkpoints/step-130/{name}"] = data
    job.metrics.clear()
    second = await run_trainer(api.job_env(job, attempt=2, hyperparameters=hyper))
    assert second.rc == 0, second.stderr
    assert "resuming from checkpoints/step-100 (step 100)" in second.stdout
    assert "step-140 is incomplete" in second.stdout and "step-130 cannot be used" in second.stdout
    steps = [s for s, _ in job.series("train_loss")]
    assert steps[0] == 101 and steps[-1] == 150  # the failAtStep of attempt 1 does not fire again
    assert job.series("train_loss")[0][1] < 2.5  # continued training, not a fresh model (~5.5)
    assert job.puts[-2:] == ["output/model.safetensors", "output/config.json"]


async def test_a_metrics_outage_neither_fails_nor_slows_training(api: TrainingApiDouble) -> None:
    hyper = {"steps": 80, "logEvery": 1, "evalEvery": 20, "checkpointEvery": 0, "sleepPerStep": 0.01}
    healthy = api.add_job("healthy", sentences(80))
    baseline = await run_trainer(api.job_env(healthy, hyperparameters=hyper))
    assert baseline.rc == 0 and len(healthy.series("train_loss")) == 80
    assert healthy.metric_posts >= 2  # batched: far fewer posts than points
    assert healthy.metric_posts < 40

    for mode in ("fail", "hang"):
        api.metrics_mode = mode
        job = api.add_job(f"outage-{mode}", sentences(80))
        run = await run_trainer(api.job_env(job, hyperparameters=hyper))
        assert run.rc == 0, run.stderr
        assert job.metrics == [] and api.refused_metric_posts > 0
        assert "dropped" in run.stdout
        # A hanging endpoint costs at most the reporter's exit flush (2 s), never a wait per post.
        assert run.elapsed_s < baseline.elapsed_s + 4.0, (mode, run.elapsed_s, baseline.elapsed_s)
        assert job.puts[-2:] == ["output/model.safetensors", "output/config.json"]


async def test_inputs_that_cannot_be_trained_on_exit_2_with_a_clear_message(api: TrainingApiDouble) -> None:
    no_text = api.add_job("notext", [{"label": 1, "score": 0.5}, {"tokens": [1, 2]}, {"text": "   "}])
    wrong_field = api.add_job("field", sentences(20))
    foreign = api.add_job("foreign", sentences(20), model_files={
        "config.json": json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}).encode(),
        "model.safetensors": b"..."})
    bad_hyper = api.add_job("hyper", sentences(20))
    bad_arch = api.add_job("arch", sentences(20))
    runs = await asyncio.gather(
        run_trainer(api.job_env(no_text)),
        run_trainer(api.job_env(wrong_field, hyperparameters={"textField": "body"})),
        run_trainer(api.job_env(foreign, job_type="finetune")),
        run_trainer(api.job_env(bad_hyper, hyperparameters={"steps": "many"})),
        run_trainer(api.job_env(bad_arch, architecture={"contextLength": 0, "hiddenDim": 8})))
    assert [r.rc for r in runs] == [EXIT_BAD_INPUT] * 5, [r.stderr for r in runs]
    assert "no usable text in 3 dataset rows" in runs[0].stderr
    assert "no usable text in field 'body'" in runs[1].stderr
    assert "use the Hugging Face trainer (train extra)" in runs[2].stderr
    assert "hyperparameter steps must be an integer" in runs[3].stderr
    assert "architecture contextLength must be an integer from 1 to 256" in runs[4].stderr
    for run in runs:
        assert "Traceback" not in run.stderr
    assert all(not job.puts for job in (no_text, wrong_field, foreign, bad_hyper, bad_arch))
    assert_no_token(no_text, runs[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_two_ranks_train_data_parallel_and_only_rank_0_reports_and_uploads(api: TrainingApiDouble) -> None:
    job = api.add_job("dist", sentences(200))
    port = free_port()
    hyper = {"steps": 100, "checkpointEvery": 50, "evalEvery": 50, "connectTimeoutS": 30}
    started = time.monotonic()
    procs = []
    for rank in (1, 0):  # the worker first: it waits for rank 0 to listen
        env = api.job_env(job, job_type="distributed", architecture={"hiddenDim": 64}, hyperparameters=hyper)
        env.update(RANK=str(rank), NODE_RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(await start(env))
    worker, lead = [await finish(p, started) for p in procs]
    assert lead.rc == 0 and worker.rc == 0, lead.stderr + worker.stderr
    assert "rank 1 of 2 joined" in worker.stdout and "rank 0 of 2 joined" in lead.stdout
    train = job.series("train_loss")
    assert [s for s, _ in train].count(100) == 1  # one reporter: rank 0's
    assert train[-1][1] < 0.6 * train[0][1]
    assert job.params["worldSize"] == "2"
    assert job.puts.count("output/model.safetensors") == 1
    assert job.puts.count("checkpoints/step-50/model.safetensors") == 1
    # Both ranks read the dataset; only rank 0 wrote.
    assert api.requests.count(("GET", "/inputs/dataset")) == 2
    assert [m for m, _ in api.requests].count("PUT") == len(job.puts) == 5
    assert "saved output" not in worker.stdout
    # The epoch counts both ranks' examples.
    epochs = [(p["step"], p["value"]) for p in job.metrics if p["key"] == "epoch"]
    examples = len(Corpus([row["text"] for row in job.rows], 16, 0).train)
    assert epochs[-1] == (100, 100 * 64 * 2 / examples)
    assert_no_token(job, lead, worker)


async def test_a_rank_that_cannot_reach_rank_0_exits_non_zero_in_time(api: TrainingApiDouble) -> None:
    job = api.add_job("lonely", sentences(20))
    env = api.job_env(job, job_type="distributed", hyperparameters={"connectTimeoutS": 1})
    env.update(RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    run = await run_trainer(env, timeout_s=20)
    assert run.rc == 1
    assert "rank 0 at 127.0.0.1" in run.stderr and "unreachable" in run.stderr
    assert not job.puts and job.metric_posts == 0
