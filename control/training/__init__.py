"""The training control module: jobs on Kubernetes or this machine, live metrics, MLflow tracking, the catalog.

A job (fine-tune, from scratch, pre-train, distributed) runs as attempts on a runtime (``adapters.training``),
retried under its policy until its deadline; the trainer reports metrics with its job-scoped token (or through
the MLflow tracking REST subset, unchanged), stores checkpoints and outputs in the object store, and on success
its output is registered in the catalog with lineage, and evaluated when configured.
REST under ``/llm-ops/v1/training/``; see docs/admin-api.md (Training).

``module`` is bound eagerly, after ``control.training.module`` is imported (a lazily made instance would be
shadowed by that submodule whenever something imported it first).
"""

from control.training.module import TrainingModule

module = TrainingModule()

__all__ = ["TrainingModule", "module"]
