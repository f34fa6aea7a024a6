"""From a job to one attempt's ``LaunchSpec``: the trainer contract's environment, the command, the resources.

The token is minted per attempt (``tokens.mint_token``; the job row keeps only its hash, replaced at each
launch), so a retried job's earlier attempt loses its token, and nothing needs to keep a token to relaunch.
It travels in ``secret_env`` only (``LLMOPS_JOB_TOKEN``, and ``MLFLOW_TRACKING_TOKEN`` for the ``mlflow``
client), never in ``env``, the manifests, the database or a log line.

Commands: the reference trainer is ``python -m adapters.training.trainer``, the Hugging Face trainer (the
``train`` extra, the Kubernetes image's) ``python -m adapters.training.trainer.hf``. ``python`` is the image's
on Kubernetes; the local runtime runs a bare ``python`` as ``TRAINING_LOCAL_PYTHON`` or this server's own.
"""

from __future__ import annotations

import json
from datetime import datetime

from adapters.training import contract
from adapters.training.base import LaunchSpec
from adapters.training.settings import TrainingSettings
from control.training.protocol import JobSpec

__all__ = ["TRAINER_MODULES", "build_launch", "command_for", "contract_env"]

TRAINER_MODULES = {"reference": "adapters.training.trainer", "huggingface": "adapters.training.trainer.hf"}


def command_for(spec: JobSpec) -> list[str]:
    if spec.command is not None:
        return list(spec.command)
    return ["python", "-m", TRAINER_MODULES[spec.trainer or "reference"]]


def contract_env(job_id: str, attempt: int, spec: JobSpec, api_base_url: str) -> dict[str, str]:
    """``contract``'s variables (no secret among them), after the job's own ``env``, so they win."""
    root = api_base_url.rstrip("/")
    env = {
        **spec.env,
        contract.ENV_API_BASE_URL: root,
        contract.ENV_JOB_ID: job_id,
        contract.ENV_ATTEMPT: str(attempt),
        contract.ENV_JOB_TYPE: spec.job_type,
        contract.ENV_HYPERPARAMETERS: json.dumps(spec.hyperparameters, separators=(",", ":"), sort_keys=True),
        contract.ENV_ARCHITECTURE: json.dumps(spec.architecture, separators=(",", ":"), sort_keys=True),
        contract.ENV_DATASET_ID: spec.dataset.dataset_id,
        contract.ENV_DATASET_VERSION: str(spec.dataset.version),
        "MLFLOW_TRACKING_URI": f"{root}/{contract.MLFLOW_PATH}",
        "MLFLOW_RUN_ID": job_id,
        "MLFLOW_EXPERIMENT_NAME": spec.experiment,
    }
    if spec.base_model_id:
        env[contract.ENV_BASE_MODEL_ID] = spec.base_model_id
    return env


def build_launch(*, job_id: str, attempt: int, spec: JobSpec, settings: TrainingSettings,
                 api_base_url: str, token: str, deadline_at: datetime, now: datetime) -> LaunchSpec:
    res = spec.resources
    return LaunchSpec(
        job_id=job_id, job_name=spec.name, attempt=attempt, job_type=spec.job_type, image=spec.image,
        command=command_for(spec), env=contract_env(job_id, attempt, spec, api_base_url),
        secret_env={contract.ENV_TOKEN: token, "MLFLOW_TRACKING_TOKEN": token},
        resources=settings.resources(res.use_gpu, gpus_per_node=max(res.gpus_per_node, 1), nodes=res.nodes),
        deadline_s=max((deadline_at - now).total_seconds(), 1.0))
