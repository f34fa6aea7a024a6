"""The Hugging Face trainer (the ``train`` extra) on a tiny GPT-2 against the job-API double: a fine-tune that
checkpoints, fails once by fault injection, resumes on attempt 2 and uploads a model transformers loads.
Skipped when torch, transformers or TRL are not installed (the default test environment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.testdoubles.training_api import TrainingApiDouble
from tests.adapters.training.trainer.support import run_trainer, sentences

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("trl")
tokenizers = pytest.importorskip("tokenizers")

HF = "adapters.training.trainer.hf"


def tiny_gpt2(where: Path, texts: list[str]) -> dict[str, bytes]:
    """A 1-layer, 32-wide GPT-2 and a BPE tokenizer trained here: the files a catalog model would hold."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(where, safe_serialization=True)
    tokenizer.save_pretrained(where)
    return {p.name: p.read_bytes() for p in where.iterdir() if p.is_file()}


async def test_a_tiny_gpt2_fine_tune_checkpoints_resumes_and_saves(api: TrainingApiDouble, tmp_path: Path) -> None:
    rows = sentences(64)
    base = tiny_gpt2(tmp_path / "base", [r["text"] for r in rows])
    job = api.add_job("hf", rows, model_files=base)
    hyper = {"steps": 20, "batchSize": 8, "learningRate": 5e-3, "logEvery": 2, "checkpointEvery": 10,
             "maxLength": 48, "failAtStep": 10, "failOnAttempts": [1], "exitCode": 5}
    first = await run_trainer(api.job_env(job, attempt=1, job_type="finetune", hyperparameters=hyper),
                              module=HF, timeout_s=240)
    assert first.rc == 5, first.stdout[-2000:] + first.stderr[-3000:]
    assert "checkpoints/step-10/trainer_state.json" in job.artifacts
    assert job.puts[-1] == "checkpoints/step-10/trainer_state.json"  # the state file last

    second = await run_trainer(api.job_env(job, attempt=2, job_type="finetune", hyperparameters=hyper),
                               module=HF, timeout_s=240)
    assert second.rc == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "resuming from checkpoints/step-10" in second.stdout
    losses = job.series("train_loss")
    assert losses[0][1] > losses[-1][1], losses
    assert max(s for s, _ in losses) == 20 and min(s for s, _ in losses if s > 10) > 10
    assert job.params["trainer"] == "huggingface"
    outputs = [p for p in job.puts if p.startswith("output/")]
    assert outputs[-1] == "output/config.json" and "output/model.safetensors" in outputs
    assert job.puts.index(outputs[0]) > max(i for i, p in enumerate(job.puts) if p.startswith("checkpoints/"))
    out = tmp_path / "out"
    out.mkdir()
    for path in outputs:
        (out / path.removeprefix("output/")).write_bytes(job.artifacts[path])
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2" and model.config.n_layer == 1
    assert transformers.AutoTokenizer.from_pretrained(out)("The quick fox")["input_ids"]
    for run in (first, second):
        assert job.token not in run.stdout and job.token not in run.stderr


async def test_a_reference_model_is_refused_with_exit_2(api: TrainingApiDouble) -> None:
    job = api.add_job("hf-ref", sentences(8), model_files={
        "config.json": json.dumps({"model_type": "llmops-byte-mlp"}).encode(), "model.safetensors": b"x"})
    run = await run_trainer(api.job_env(job, job_type="finetune"), module=HF, timeout_s=120)
    assert run.rc == 2 and "train it with trainer 'reference'" in run.stderr


async def test_from_scratch_with_mlflow_logs_into_the_jobs_run(api: TrainingApiDouble, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With MLFLOW_TRACKING_URI set, Hugging Face's own MLflow callback logs into MLFLOW_RUN_ID (here a file
    store standing in for the platform's tracking API), and nothing goes to the metrics endpoint twice."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file://{tmp_path / 'mlruns'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("hf-scratch")).info.run_id
    job = api.add_job("hf-scratch", sentences(48))
    architecture = {"modelType": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64,
                    "vocabSize": 300}
    env = api.job_env(job, job_type="from_scratch", architecture=architecture, hyperparameters={
        "steps": 12, "batchSize": 8, "learningRate": 5e-3, "logEvery": 3, "checkpointEvery": 0, "maxLength": 48})
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_RUN_ID=run_id, MLFLOW_EXPERIMENT_NAME="hf-scratch",
               MLFLOW_ALLOW_FILE_STORE="true")
    run = await run_trainer(env, module=HF, timeout_s=240)
    assert run.rc == 0, run.stdout[-2000:] + run.stderr[-3000:]
    losses = [m.value for m in client.get_metric_history(run_id, "loss")]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert client.get_run(run_id).data.params["max_steps"] == "12"
    assert job.metric_posts == 0
    config = json.loads(job.artifacts["output/config.json"])
    assert config["model_type"] == "gpt2" and config["vocab_size"] <= 300 and config["n_layer"] == 1
    assert "output/tokenizer.json" in job.artifacts and "output/training_args.bin" not in job.artifacts
