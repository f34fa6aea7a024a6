"""The training job's API (``adapters/training/contract.py``) as an in-process server. A TEST DOUBLE.

It answers exactly the paths a trainer calls, for one or more jobs, with everything in memory: the token check
(401 otherwise), ``inputs/dataset`` (the job's rows as JSON lines), ``inputs/model`` and its files, artifacts
(PUT, list by prefix, GET) and ``metrics`` (each post recorded). ``metrics_mode`` makes the metrics endpoint fail
(503) or hang, to prove a trainer never fails or blocks because of the platform. Trainer tests run the real
trainer as a subprocess against it; nothing here touches a database or an object store.

    async with await start_training_api() as api:
        job = api.add_job("job1", rows=[{"text": "hello"}])
        env = api.job_env(job, job_type="from_scratch")   # the contract's environment, token included
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiohttp import web

from adapters.testdoubles.http_site import SiteServer
from adapters.training import contract

__all__ = ["API_PREFIX", "FakeJob", "MetricsMode", "TrainingApiDouble", "start_training_api"]

API_PREFIX = "/llm-ops/v1"
MetricsMode = Literal["ok", "fail", "hang"]
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_JOB_PATH = API_PREFIX + "/training/jobs/{job_id}"


@dataclass
class FakeJob:
    """One job as the double holds it; tests read ``artifacts``, ``metrics``, ``params`` and ``puts``."""

    job_id: str
    token: str
    rows: list[Any]
    model_files: dict[str, bytes] = field(default_factory=dict)  # the base model's, by name (a fine-tune)
    artifacts: dict[str, bytes] = field(default_factory=dict)  # path -> bytes, every attempt's
    puts: list[str] = field(default_factory=list)  # artifact paths in the order they were stored
    metrics: list[dict[str, Any]] = field(default_factory=list)  # every accepted point: key, value, step, timestamp
    params: dict[str, str] = field(default_factory=dict)
    metric_posts: int = 0  # accepted posts

    def series(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of one metric, in arrival order."""
        return [(p["step"], p["value"]) for p in self.metrics if p["key"] == key]


class TrainingApiDouble(SiteServer):
    """A running job API on a loopback socket; ``async with`` stops it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.jobs: dict[str, FakeJob] = {}
        self.metrics_mode: MetricsMode = "ok"
        self.hang_s = 3600.0  # how long a hanging metrics post waits (the client gives up first)
        self.requests: list[tuple[str, str]] = []  # (method, path below the job), every request
        self.unauthorized = 0
        self.refused_metric_posts = 0  # answered 503 or left hanging
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """What ``API_BASE_URL`` is set to: the ``/llm-ops/v1`` root."""
        return f"http://{self.host}:{self.port}{API_PREFIX}"

    def add_job(self, job_id: str, rows: list[Any], *, model_files: dict[str, bytes] | None = None,
                token: str | None = None) -> FakeJob:
        job = FakeJob(job_id=job_id, token=token or contract.JOB_TOKEN_PREFIX + secrets.token_urlsafe(32),
                      rows=list(rows), model_files=dict(model_files or {}))
        self.jobs[job_id] = job
        return job

    def job_env(self, job: FakeJob, *, attempt: int = 1, job_type: str = "from_scratch",
                hyperparameters: dict[str, Any] | None = None, architecture: dict[str, Any] | None = None,
                base_model_id: str | None = None) -> dict[str, str]:
        """The contract's environment for one attempt of ``job`` (no MLflow variables: not served here)."""
        env = {
            contract.ENV_API_BASE_URL: self.base_url,
            contract.ENV_JOB_ID: job.job_id,
            contract.ENV_ATTEMPT: str(attempt),
            contract.ENV_JOB_TYPE: job_type,
            contract.ENV_TOKEN: job.token,
            contract.ENV_HYPERPARAMETERS: json.dumps(hyperparameters or {}),
            contract.ENV_ARCHITECTURE: json.dumps(architecture or {}),
            contract.ENV_DATASET_ID: "ds_test",
            contract.ENV_DATASET_VERSION: "1",
        }
        if base_model_id is not None or job.model_files:
            env[contract.ENV_BASE_MODEL_ID] = base_model_id or "mdl_base"
        return env

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_get(_JOB_PATH + "/inputs/dataset", self._dataset)
        app.router.add_get(_JOB_PATH + "/inputs/model", self._model_list)
        app.router.add_get(_JOB_PATH + "/inputs/model/{name}", self._model_file)
        app.router.add_put(_JOB_PATH + "/artifacts/{path:.+}", self._put_artifact)
        app.router.add_get(_JOB_PATH + "/artifacts", self._list_artifacts)
        app.router.add_get(_JOB_PATH + "/artifacts/{path:.+}", self._get_artifact)
        app.router.add_post(_JOB_PATH + "/metrics", self._metrics)
        # handler_cancellation: a client that gives up on a hanging post ends its handler.
        await self._serve(app, port, handler_cancellation=True)

    # -- handlers ---------------------------------------------------------------------------------------------

    def _job(self, request: web.Request) -> FakeJob:
        """The job the path names, when the bearer token is its own; raises the 401 (or 404) otherwise."""
        job_id = request.match_info["job_id"]
        below = request.path.split(f"/training/jobs/{job_id}", 1)[-1]
        self.requests.append((request.method, below))
        job = self.jobs.get(job_id)
        header = request.headers.get("Authorization", "")
        if job is None or not secrets.compare_digest(header.encode(), f"Bearer {job.token}".encode()):
            self.unauthorized += 1
            raise _fail(401, "a valid job token for this job is required")
        return job

    async def _dataset(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for row in job.rows:
            await resp.write(msgspec.json.encode(row) + b"\n")
        await resp.write_eof()
        return resp

    async def _model_list(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if not job.model_files:
            raise _fail(404, "this job has no base model")
        return web.json_response({"files": [{"name": name} for name in sorted(job.model_files)]})

    async def _model_file(self, request: web.Request) -> web.Response:
        job = self._job(request)
        data = job.model_files.get(request.match_info["name"])
        if data is None:
            raise _fail(404, "no such base model file")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _put_artifact(self, request: web.Request) -> web.Response:
        job = self._job(request)
        path = request.match_info["path"]
        problem = _path_problem(path)
        if problem:
            raise _fail(400, problem, [{"field": "path", "message": problem}])
        data = await request.read()
        job.artifacts[path] = data
        job.puts.append(path)
        key = f"training/{job.job_id}/{path}"
        return web.json_response({"key": key, "path": path, "sizeBytes": len(data), "sha256": _sha(data)},
                                 status=201)

    async def _list_artifacts(self, request: web.Request) -> web.Response:
        job = self._job(request)
        prefix = request.query.get("prefix", "")
        files = [{"path": p, "sizeBytes": len(d), "sha256": _sha(d)}
                 for p, d in sorted(job.artifacts.items()) if p.startswith(prefix)]
        return web.json_response({"files": files})

    async def _get_artifact(self, request: web.Request) -> web.Response:
        job = self._job(request)
        data = job.artifacts.get(request.match_info["path"])
        if data is None:
            raise _fail(404, "no such artifact")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _metrics(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if self.metrics_mode == "fail":
            self.refused_metric_posts += 1
            raise _fail(503, "metrics store unavailable (test double)")
        if self.metrics_mode == "hang":
            self.refused_metric_posts += 1
            await asyncio.sleep(self.hang_s)
        try:
            post = msgspec.json.decode(await request.read(), type=contract.MetricsPost)
        except msgspec.DecodeError as exc:
            raise _fail(400, f"bad metrics post: {exc}") from None
        if len(post.metrics) > contract.MAX_METRICS_PER_POST:
            raise _fail(422, f"at most {contract.MAX_METRICS_PER_POST} points per post")
        now_ms = int(time.time() * 1000)
        for p in post.metrics:
            job.metrics.append({"key": p.key, "value": p.value, "step": p.step,
                                "timestamp": p.timestamp if p.timestamp is not None else now_ms})
        job.params.update(post.params)
        job.metric_posts += 1
        return web.json_response({"accepted": len(post.metrics)}, status=202)


def _fail(status: int, message: str, data: Any = None) -> web.HTTPException:
    """The admin envelope ``{status, message, data}`` with ``status``, as the real API answers errors."""
    body = json.dumps({"status": "fail" if status < 500 else "error", "message": message, "data": data})
    return _ERRORS[status](text=body, content_type="application/json")


_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 404: web.HTTPNotFound,
    422: web.HTTPUnprocessableEntity, 503: web.HTTPServiceUnavailable,
}


def _path_problem(path: str) -> str | None:
    if not path.startswith(contract.ARTIFACT_ROOTS) or len(path) > 512:
        return "path must start with checkpoints/ or output/ and be at most 512 characters"
    if any(seg in ("", ".", "..") or not _SEGMENT.match(seg) for seg in path.split("/")):
        return "path segments must be non-empty and use only letters, digits, '.', '_' and '-'"
    return None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def start_training_api(host: str = "127.0.0.1", port: int = 0) -> TrainingApiDouble:
    """Start on ``host:port`` (0 = a free port) and return once the socket accepts connections."""
    api = TrainingApiDouble(host)
    await api.start(port)
    return api
