"""From an accepted ``JobCreate`` to the ``JobSpec`` the job runs as: every default filled from the settings
and the runtime, once, at creation (a later change of ``TRAINING_*`` never changes a queued job)."""

from __future__ import annotations

from typing import Literal

from adapters.adminapi.seams import CatalogModel
from adapters.training.contract import EXIT_BAD_INPUT
from adapters.training.settings import TrainingSettings
from control.training.protocol import DatasetRef, JobCreate, JobSpec, Resources, RetryPolicy

__all__ = ["DEFAULT_TEAM", "resolve"]

DEFAULT_TEAM = "default"


def resolve(data: JobCreate, *, settings: TrainingSettings, runtime: Literal["kubernetes", "local"],
            dataset_version: int, base: CatalogModel | None, caller_team: str | None) -> JobSpec:
    res = data.resources
    use_gpu = res.use_gpu if res.use_gpu is not None else runtime == "kubernetes"
    policy = data.retry_policy
    backoff = policy.backoff_s if policy.backoff_s is not None else settings.default_backoff_s
    backoff_max = policy.backoff_max_s if policy.backoff_max_s is not None else max(settings.backoff_max_s, backoff)
    trainer = data.trainer
    if trainer is None and data.command is None:
        trainer = "huggingface" if runtime == "kubernetes" else "reference"
    team = data.owner_team or caller_team or (base.owner_team if base is not None else None) or DEFAULT_TEAM
    return JobSpec(
        name=data.name, job_type=data.job_type, base_model_id=data.base_model_id,
        architecture=dict(data.architecture or {}),
        dataset=DatasetRef(dataset_id=data.dataset.dataset_id, version=dataset_version),
        hyperparameters=dict(data.hyperparameters), trainer=trainer, command=data.command,
        image=data.image or settings.image,
        resources=Resources(use_gpu=use_gpu, gpus_per_node=(res.gpus_per_node or 1) if use_gpu else 0,
                            nodes=res.nodes),
        retry_policy=RetryPolicy(
            max_retries=policy.max_retries if policy.max_retries is not None else settings.default_max_retries,
            backoff_s=backoff, backoff_max_s=backoff_max,
            non_retryable_exit_codes=sorted(set(policy.non_retryable_exit_codes
                                                if policy.non_retryable_exit_codes is not None else [EXIT_BAD_INPUT]))),
        deadline_s=data.deadline_s or settings.default_deadline_s,
        experiment=data.experiment or data.name, owner_team=team[:64], env=dict(data.env),
        evaluate_on_success=(data.evaluate_on_success if data.evaluate_on_success is not None
                             else settings.evaluate_on_success),
        register={"name": data.register.name or data.name, "tags": list(data.register.tags),
                  "description": data.register.description})
