"""What a ``JobCreate`` must satisfy beyond its schema, without the database: each broken rule a ``FieldError``.

The references (base model, dataset version, a name already taken) are checked by the service in the create
transaction; these are the rules on the body alone, so one 422 can list both kinds.

``env`` is the trainer's environment beside the contract's: names must be variable names, not the contract's
own (``API_BASE_URL``, ``LLMOPS_*``, ``MLFLOW_*``, torchrun's), and not names of secrets (``HF_TOKEN``,
``AWS_SECRET_ACCESS_KEY``): env is stored in the job, shown by the API and audited, so secrets do not belong
there; values shaped like a known key are refused for the same reason.
"""

from __future__ import annotations

import re

from adapters.adminapi import FieldError
from adapters.training import contract
from control.training.protocol import JobCreate

__all__ = ["RESERVED_ENV", "create_errors", "env_errors"]

RESERVED_ENV = frozenset({
    contract.ENV_API_BASE_URL, "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_NAME", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK",
    "NPROC_PER_NODE",
})
_RESERVED_PREFIXES = ("LLMOPS_", "MLFLOW_TRACKING_")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SECRET_WORDS = frozenset({"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS", "APIKEY"})
_KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "github_pat_", "xoxb-", "xoxp-", "AKIA", "AIza", "llmops_",
                 contract.JOB_TOKEN_PREFIX)
_NEEDS_BASE = ("finetune",)
_NO_BASE = ("from_scratch", "pretrain")


def create_errors(data: JobCreate) -> list[FieldError]:
    """Every rule the body breaks, in field order."""
    errors: list[FieldError] = []
    if data.job_type in _NEEDS_BASE and data.base_model_id is None:
        errors.append(FieldError("baseModelId", "a finetune starts from a base model: give its catalog id"))
    if data.job_type in _NO_BASE and data.base_model_id is not None:
        errors.append(FieldError("baseModelId", f"a {data.job_type} job starts from no model: leave it out"))
    errors += _architecture_errors(data)
    for key in data.hyperparameters:
        if not 1 <= len(key) <= 250:
            errors.append(FieldError(f"hyperparameters.{key[:40]}", "names are 1 to 250 characters"))
    if data.trainer is not None and data.command is not None:
        errors.append(FieldError("command", "give a trainer or a command, not both"))
    if data.command is not None and any("\x00" in arg for arg in data.command):
        errors.append(FieldError("command", "arguments may not hold NUL (no process can be given one)"))
    errors += _resource_errors(data)
    policy = data.retry_policy
    if policy.backoff_s is not None and policy.backoff_max_s is not None and policy.backoff_max_s < policy.backoff_s:
        errors.append(FieldError("retryPolicy.backoffMaxS", "must not be below backoffS"))
    errors += env_errors(data.env)
    return errors


def _architecture_errors(data: JobCreate) -> list[FieldError]:
    has_base = data.base_model_id is not None
    if data.architecture is None and not has_base and data.job_type != "finetune":
        return [FieldError("architecture", f"a {data.job_type} job without a base model needs an architecture "
                                           "configuration (an object, e.g. layers and sizes)")]
    if data.architecture is not None and has_base:
        return [FieldError("architecture", "a job with a base model takes the base model's architecture: "
                                           "leave it out")]
    return []


def _resource_errors(data: JobCreate) -> list[FieldError]:
    res = data.resources
    errors = []
    if data.job_type == "distributed" and res.nodes < 2:
        errors.append(FieldError("resources.nodes", "a distributed job runs on 2 or more nodes"))
    if data.job_type != "distributed" and res.nodes != 1:
        errors.append(FieldError("resources.nodes", "only a distributed job runs on several nodes"))
    if res.use_gpu is False and res.gpus_per_node is not None:
        errors.append(FieldError("resources.gpusPerNode", "a job with useGpu=false gets no GPUs"))
    return errors


def env_errors(env: dict[str, str]) -> list[FieldError]:
    errors = []
    for name, value in env.items():
        field = f"env.{name[:60]}"
        if not _ENV_NAME.match(name):
            errors.append(FieldError(field, "not a variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128 characters)"))
        elif name in RESERVED_ENV or name.startswith(_RESERVED_PREFIXES):
            errors.append(FieldError(field, "set by the platform (the trainer contract's variables are reserved)"))
        elif _SECRET_WORDS & set(name.upper().split("_")):
            errors.append(FieldError(field, "looks like a secret's name: env is stored, shown and audited; "
                                            "give a trainer its secrets another way (a Kubernetes Secret)"))
        elif "\x00" in value:
            errors.append(FieldError(field, "values may not hold NUL"))
        elif value.strip().startswith(_KEY_PREFIXES) and len(value.strip()) >= 20:
            errors.append(FieldError(field, "the value looks like a key or token: env is stored, shown and audited"))
    return errors
