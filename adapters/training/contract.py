"""What a training process may rely on, on Kubernetes and on this machine alike.

**Environment** (set by the training module through the runtime):

=====================================  =================================================================
``API_BASE_URL``                       the control plane's ``/llm-ops/v1`` root, e.g. ``http://llmops:8080/llm-ops/v1``
``LLMOPS_JOB_ID`` / ``LLMOPS_ATTEMPT``  the job and the attempt number (1, 2, … one per retry)
``LLMOPS_JOB_TYPE``                    ``finetune``, ``from_scratch``, ``pretrain`` or ``distributed``
``LLMOPS_JOB_TOKEN``                   the job-scoped bearer token (a secret: a Kubernetes Secret by reference);
                                       it is accepted only by this job's paths below, until the job ends
``LLMOPS_HYPERPARAMETERS``             the job's hyperparameters as a JSON object
``LLMOPS_ARCHITECTURE``                the architecture configuration as a JSON object (``{}`` for a fine-tune)
``LLMOPS_DATASET_ID`` / ``_VERSION``   the dataset version the job trains on
``LLMOPS_BASE_MODEL_ID``               the catalog model a fine-tune starts from (unset otherwise)
``MLFLOW_TRACKING_URI``                ``{API_BASE_URL}/training/mlflow``: the MLflow tracking REST subset
``MLFLOW_TRACKING_TOKEN``              the job token again, which the ``mlflow`` client sends as a bearer token
``MLFLOW_RUN_ID``                      the job's run (= the job id): ``mlflow.start_run()`` and Hugging Face's
                                       MLflow callback log into it with no code change
``MLFLOW_EXPERIMENT_NAME``             the job's experiment (its ``experiment`` field, default the job name)
``RANK`` ``WORLD_SIZE`` ``LOCAL_RANK``  torchrun's variables for ``nodes > 1`` (one process per node here, one
``MASTER_ADDR`` ``MASTER_PORT``         pod per node on Kubernetes: ``MASTER_ADDR`` is rank 0's address)
``NODE_RANK`` ``NPROC_PER_NODE``
=====================================  =================================================================

**The job's API** (``Authorization: Bearer $LLMOPS_JOB_TOKEN``; paths relative to ``API_BASE_URL``):

* ``GET  training/jobs/{id}/inputs/dataset``: the dataset version's rows as JSON lines, in file order.
* ``GET  training/jobs/{id}/inputs/model``: ``{"files": [{"name"}]}``, the base model's files (a fine-tune).
* ``GET  training/jobs/{id}/inputs/model/{name}``: one base model file's bytes.
* ``PUT  training/jobs/{id}/artifacts/{path}``: store a file in the object store (``path`` under
  ``checkpoints/`` or ``output/``, e.g. ``output/model.safetensors``); answers ``{"key", "sizeBytes", "sha256"}``.
  What is under ``output/`` when the job succeeds becomes the catalog model's files.
* ``GET  training/jobs/{id}/artifacts?prefix=checkpoints/``: ``{"files": [{"path", "sizeBytes", "sha256"}]}``,
  of this job (every attempt): a retried attempt resumes from its latest checkpoint.
* ``GET  training/jobs/{id}/artifacts/{path}``: one stored file's bytes.
* ``POST training/jobs/{id}/metrics``: ``{"metrics": [{"key", "value", "step", "timestamp"?}], "params"?: {k: v}}``,
  answered 202 at once. A trainer sends from a background thread and drops what it cannot send: a platform
  outage never fails training.

**Exit codes:** 0 is success (then ``output/`` must hold the model: ``config.json`` and ``*.safetensors``);
``EXIT_BAD_INPUT`` (2) means the inputs cannot be trained on (no usable text, a bad architecture), which the
default retry policy does not retry; anything else is a failure the policy may retry.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ARTIFACT_ROOTS",
    "ENV_API_BASE_URL",
    "ENV_ARCHITECTURE",
    "ENV_ATTEMPT",
    "ENV_BASE_MODEL_ID",
    "ENV_DATASET_ID",
    "ENV_DATASET_VERSION",
    "ENV_HYPERPARAMETERS",
    "ENV_JOB_ID",
    "ENV_JOB_TYPE",
    "ENV_TOKEN",
    "EXIT_BAD_INPUT",
    "JOB_TOKEN_PREFIX",
    "MAX_METRICS_PER_POST",
    "MLFLOW_PATH",
    "ArtifactFile",
    "MetricPoint",
    "MetricsPost",
]

ENV_API_BASE_URL = "API_BASE_URL"
ENV_JOB_ID = "LLMOPS_JOB_ID"
ENV_ATTEMPT = "LLMOPS_ATTEMPT"
ENV_JOB_TYPE = "LLMOPS_JOB_TYPE"
ENV_TOKEN = "LLMOPS_JOB_TOKEN"
ENV_HYPERPARAMETERS = "LLMOPS_HYPERPARAMETERS"
ENV_ARCHITECTURE = "LLMOPS_ARCHITECTURE"
ENV_DATASET_ID = "LLMOPS_DATASET_ID"
ENV_DATASET_VERSION = "LLMOPS_DATASET_VERSION"
ENV_BASE_MODEL_ID = "LLMOPS_BASE_MODEL_ID"

MLFLOW_PATH = "training/mlflow"  # MLFLOW_TRACKING_URI = f"{API_BASE_URL}/{MLFLOW_PATH}"
JOB_TOKEN_PREFIX = "ljt_"  # job tokens look like ljt_<43 url-safe characters>; stored as a SHA-256 only
ARTIFACT_ROOTS = ("checkpoints/", "output/")
EXIT_BAD_INPUT = 2
MAX_METRICS_PER_POST = 1000


class MetricPoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: str  # ≤ 250 characters, MLflow's metric-name rules
    value: float
    step: int = 0
    timestamp: int | None = None  # epoch milliseconds; the server's clock when absent


class MetricsPost(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metrics: list[MetricPoint] = []
    params: dict[str, str] = {}


class ArtifactFile(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    path: str
    size_bytes: int
    sha256: str
