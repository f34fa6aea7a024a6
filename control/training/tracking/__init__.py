"""The tracking store (experiments, runs, params, tags, metrics) and its two faces: the MLflow tracking REST
subset under ``training/mlflow/api/2.0/mlflow/`` and ``GET training/experiments/{jobId}``; plus
``POST training/jobs/{jobId}/metrics`` from pods (job-scoped token)."""
