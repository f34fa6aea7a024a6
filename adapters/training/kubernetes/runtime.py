"""``KubernetesTrainingRuntime``: training attempts as Jobs (or Kubeflow TrainJobs/PyTorchJobs) on a cluster,
through the official ``kubernetes`` client (``TRAINING_RUNTIME=kubernetes``).

An attempt is found by its labels, never by a name kept in memory only, so a control plane that restarted finds
its attempts again (``active``); the names it has seen are cached to save a list per call. Which Kubeflow CRDs
exist is read through the apiextensions API and cached for a few minutes. ``render`` is pure: it uses the facts
of the last ``submit`` (before any, no Kubeflow CRD), and neither it nor ``submit``'s answer holds a secret value.

RBAC, in ``TRAINING_NAMESPACE``: create/get/list/watch/patch/delete Jobs, Secrets, Services and Pods (delete:
a cancel's grace), get Pods' ``log``; the same for ``trainjobs.trainer.kubeflow.org`` or
``pytorchjobs.kubeflow.org`` where used; cluster-wide get CustomResourceDefinitions (without it: indexed Jobs).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
from kubernetes import client

from adapters.kubernetes.client import CLIENT_ERRORS, make_api_client, not_found, probe, read, read_text, send
from adapters.kubernetes.objects import Pod, PodList
from adapters.training.base import AttemptRef, AttemptStatus, LaunchSpec, RuntimeFailure
from adapters.training.kubernetes.api import KubeApi, refusal
from adapters.training.kubernetes.manifests import (
    ANN_WORKLOAD,
    CONTAINERS,
    CRDS,
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED,
    REDACTED,
    ClusterFacts,
    Workload,
    build_attempt,
    owner_patch,
)
from adapters.training.kubernetes.objects import Listed, WorkloadList
from adapters.training.kubernetes.objects import Workload as WorkloadObject
from adapters.training.kubernetes.status import attempt_status, pod_rank, redact_tokens
from adapters.training.kubernetes.watch import Key, NamespaceWatch, attempt_key
from adapters.training.settings import TrainingSettings

__all__ = ["KubernetesTrainingRuntime"]

log = logging.getLogger("llmops.training.kubernetes")
_CRD_TTL_S = 300.0
# A TrainJob's pods carry its JobSet's labels (the JobSet has the TrainJob's name); the trainer's are those of the
# replicated job "node" (the others, e.g. dataset-initializer, are not ranks).
_JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
_REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"


def load_api_client(settings: TrainingSettings) -> client.ApiClient:
    """``TRAINING_KUBECONFIG`` when set, else the pod's service account, else ``~/.kube/config``."""
    return make_api_client(settings.kubeconfig, setting="TRAINING_KUBECONFIG", failure=RuntimeFailure)


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" if v else k for k, v in labels.items())


def _matches(labels: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    """The selector is the server's job, but a wrong answer (or a test double) must not mix attempts."""
    have = labels or {}
    return all(k in have if not v else have.get(k) == v for k, v in wanted.items())


class KubernetesTrainingRuntime:
    # The protocol's own type (not Literal["kubernetes"]), so an instance is a TrainingRuntime without a cast.
    name: Literal["kubernetes", "local"] = "kubernetes"

    def __init__(self, settings: TrainingSettings, *, api_client: client.ApiClient | None = None) -> None:
        self._settings = settings
        self._client = api_client or load_api_client(settings)
        self._api = KubeApi(self._client, settings.namespace)
        self._facts = ClusterFacts()
        self._facts_read_at = -math.inf
        self._known: dict[Key, tuple[Workload, str]] = {}
        self._watches: set[NamespaceWatch] = set()
        self._closed = False

    # -- the protocol ---------------------------------------------------------------------------------------

    def render(self, spec: LaunchSpec) -> list[dict[str, Any]]:
        return build_attempt(spec, self._settings, self._facts).manifests

    async def submit(self, spec: LaunchSpec) -> list[dict[str, Any]]:
        distributed = spec.resources.nodes > 1 and self._settings.distributed != "indexed-job"
        facts = await self._cluster_facts() if distributed else self._facts
        plan = build_attempt(spec, self._settings, facts, reveal_secrets=True)
        *supporting, workload = plan.manifests
        created: list[dict[str, Any]] = []
        for doc in supporting:
            if await self._create(doc):
                created.append(doc)
        try:
            uid = await self._create_workload(workload, spec)
        except RuntimeFailure as failure:
            if not failure.retryable:  # refused for good: leave nothing behind
                for doc in created:
                    await self._delete_quietly(doc["kind"], doc["metadata"]["name"])
            raise
        if uid:
            for doc in supporting:
                await self._own(doc, workload, uid)
        self._known[(spec.job_id, spec.attempt)] = (plan.workload, plan.name)
        log.info("training: submitted %s attempt %d as %s/%s (%d nodes)", spec.job_id, spec.attempt,
                 workload["kind"], plan.name, spec.resources.nodes)
        return [_redacted(doc) for doc in plan.manifests]

    async def status(self, job_id: str, attempt: int) -> AttemptStatus:
        found = await self._find(job_id, attempt)
        if found is None:
            return AttemptStatus(job_id=job_id, attempt=attempt, phase="absent")
        kind, workload = found
        pods = await self._pods(kind, workload.metadata.name, job_id, attempt)
        return attempt_status(job_id, attempt, kind, workload, pods)

    def watch(self) -> AsyncIterator[AttemptStatus]:
        return self._watch()

    async def active(self) -> list[AttemptRef]:
        refs: set[Key] = set()
        for kind, workload in await self._list_workloads({LABEL_JOB: "", LABEL_MANAGED: "llmops"}):
            key = attempt_key(workload.metadata.labels)
            if key is not None:
                refs.add(key)
                self._known[key] = (kind, workload.metadata.name)
        return [AttemptRef(job_id=j, attempt=a) for j, a in sorted(refs)]

    async def cancel(self, job_id: str, attempt: int, *, grace_s: float = 10.0) -> None:
        await self._remove(job_id, attempt, grace_s)

    async def logs(self, job_id: str, attempt: int, *, tail_lines: int = 200) -> str:
        found = await self._find(job_id, attempt)
        kind: Workload = found[0] if found else "Job"
        pods = await self._pods(kind, found[1].metadata.name if found else "", job_id, attempt)
        out: list[str] = []
        for pod in sorted(pods, key=lambda p: (pod_rank(p), p.metadata.name)):
            try:
                text = await read_text(self._api.core.read_namespaced_pod_log, pod.metadata.name,
                                       self._api.namespace, container=CONTAINERS[kind], tail_lines=tail_lines)
            except CLIENT_ERRORS as exc:
                if isinstance(exc, client.ApiException) and exc.status in (400, 404):
                    continue  # not started yet, or gone: not an error, there is just no log
                raise refusal(exc, f"Pod/{pod.metadata.name} log") from None
            rank = pod_rank(pod)
            out.extend(f"[rank {rank}] {line}" for line in text.splitlines())
        return redact_tokens("\n".join(out))

    async def cleanup(self, job_id: str, attempt: int) -> None:
        await self._remove(job_id, attempt, self._settings.cancel_grace_s)

    async def aclose(self) -> None:
        self._closed = True
        watches = list(self._watches)
        for session in watches:
            session.stop()  # the generators end at their next step; their threads now
        for session in watches:
            await session.join(5.0)
        await asyncio.to_thread(self._client.close)

    # -- finding an attempt ----------------------------------------------------------------------------------

    async def _cluster_facts(self) -> ClusterFacts:
        if time.monotonic() - self._facts_read_at < _CRD_TTL_S:
            return self._facts
        trainjob, pytorchjob = await asyncio.gather(self._crd(CRDS["TrainJob"]), self._crd(CRDS["PyTorchJob"]))
        self._facts = ClusterFacts(trainjob=trainjob, pytorchjob=pytorchjob)
        if trainjob is not None and pytorchjob is not None:  # unknown answers are asked again next time
            self._facts_read_at = time.monotonic()
        return self._facts

    async def _crd(self, name: str) -> bool | None:
        """True/False when known; None when the CRD could not be read (forbidden, unreachable)."""
        try:
            # Only the status matters: skip decoding the CRD (hundreds of KiB of schema).
            await probe(self._api.crds.read_custom_resource_definition, name)
            return True
        except CLIENT_ERRORS as exc:
            return False if not_found(exc) else None

    def _custom_kinds(self, facts: ClusterFacts) -> list[Workload]:
        wanted = self._settings.distributed
        kinds: list[Workload] = []
        if facts.trainjob or wanted == "trainjob":
            kinds.append("TrainJob")
        if facts.pytorchjob or wanted == "pytorchjob":
            kinds.append("PyTorchJob")
        return kinds

    async def _list_workloads(self, labels: dict[str, str]) -> list[tuple[Workload, WorkloadObject]]:
        facts = await self._cluster_facts()
        found: list[tuple[Workload, WorkloadObject]] = []
        for api_kind in ["Job", *self._custom_kinds(facts)]:
            try:
                listed = await read(self._api.lister(api_kind), WorkloadList, label_selector=_selector(labels))
            except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
                if api_kind != "Job" and not_found(exc):
                    continue  # the CRD went away
                raise refusal(exc, f"{api_kind}s") from None
            for item in listed.items:
                if _matches(item.metadata.labels, labels):
                    found.append((_workload_kind(api_kind, item), item))
        return found

    async def _find(self, job_id: str, attempt: int) -> tuple[Workload, WorkloadObject] | None:
        key = (job_id, attempt)
        wanted = {LABEL_JOB: job_id, LABEL_ATTEMPT: str(attempt)}
        if key in self._known:
            kind, name = self._known[key]
            api_kind = "Job" if kind in ("Job", "IndexedJob") else kind
            try:
                workload = await read(self._api.reader(api_kind), WorkloadObject, name)
            except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
                if not not_found(exc):
                    raise refusal(exc, f"{api_kind}/{name}") from None
                self._known.pop(key, None)
                return None
            if _matches(workload.metadata.labels, wanted):
                return kind, workload
            self._known.pop(key, None)
        found = await self._list_workloads(wanted)
        if not found:
            return None
        kind, workload = found[0]
        self._known[key] = (kind, workload.metadata.name)
        return kind, workload

    async def _pods(self, kind: Workload, name: str, job_id: str, attempt: int) -> list[Pod]:
        labels = {_JOBSET_LABEL: name, _REPLICATED_JOB_LABEL: CONTAINERS["TrainJob"]} if kind == "TrainJob" \
            else {LABEL_JOB: job_id, LABEL_ATTEMPT: str(attempt)}
        try:
            listed = await read(self._api.lister("Pod"), PodList, label_selector=_selector(labels))
        except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
            raise refusal(exc, "Pods") from None
        return [p for p in listed.items if _matches(p.metadata.labels, labels)]

    # -- writing ---------------------------------------------------------------------------------------------

    async def _create(self, doc: dict[str, Any]) -> bool:
        """True when created; False when it existed (a Secret's values are brought up to date then)."""
        kind, name = doc["kind"], doc["metadata"]["name"]
        try:
            await send(self._api.creator(kind), doc)
            return True
        except CLIENT_ERRORS as exc:
            if not (isinstance(exc, client.ApiException) and exc.status == 409):
                raise refusal(exc, f"{kind}/{name}") from None
        if kind == "Secret":  # a resubmission may carry a newly minted token; running pods keep theirs
            try:
                await send(self._api.patcher("Secret"), name, {"stringData": doc["stringData"]})
            except CLIENT_ERRORS as exc:
                raise refusal(exc, f"Secret/{name}") from None
        return False

    async def _create_workload(self, doc: dict[str, Any], spec: LaunchSpec) -> str | None:
        """The workload's uid (None when the API server did not say); an existing one must be this attempt's."""
        kind, name = doc["kind"], doc["metadata"]["name"]
        what = f"{kind}/{name}"
        try:
            return (await read(self._api.creator(kind), WorkloadObject, doc)).metadata.uid
        except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
            if not (isinstance(exc, client.ApiException) and exc.status == 409):
                raise refusal(exc, what) from None
        try:
            existing = await read(self._api.reader(kind), WorkloadObject, name)
        except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
            raise refusal(exc, what) from None
        if not _matches(existing.metadata.labels, {LABEL_JOB: spec.job_id, LABEL_ATTEMPT: str(spec.attempt)}):
            owner = (existing.metadata.labels or {}).get(LABEL_JOB, "something else")
            raise RuntimeFailure(f"{what} in {self._api.namespace} belongs to {owner}, not {spec.job_id}")
        return existing.metadata.uid

    async def _own(self, doc: dict[str, Any], workload: dict[str, Any], uid: str) -> None:
        """Not fatal: without the ownerReference, cleanup still finds the object by its labels."""
        kind, name = doc["kind"], doc["metadata"]["name"]
        try:
            await send(self._api.patcher(kind), name, owner_patch(workload, uid))
        except CLIENT_ERRORS as exc:
            log.warning("training: could not make %s/%s owned by its workload: %s", kind, name,
                        refusal(exc, f"{kind}/{name}").reason)

    async def _delete(self, kind: str, name: str, **options: Any) -> None:
        try:
            await send(self._api.deleter(kind), name, **options)
        except CLIENT_ERRORS as exc:
            if not not_found(exc):
                raise refusal(exc, f"{kind}/{name}") from None

    async def _delete_quietly(self, kind: str, name: str) -> None:
        try:
            await self._delete(kind, name)
        except RuntimeFailure as failure:
            log.warning("training: could not remove %s/%s: %s", kind, name, failure.reason)

    async def _remove(self, job_id: str, attempt: int, grace_s: float) -> None:
        """The workload first (foreground: its pods go before it does), then the pods themselves with the grace
        (their controller, already gone, cannot replace them), then the Secret and Service it would have owned."""
        grace = max(0, math.ceil(grace_s))
        labels = {LABEL_JOB: job_id, LABEL_ATTEMPT: str(attempt)}
        found = await self._find(job_id, attempt)
        names: set[str] = set()
        kind: Workload = "Job"
        if found is not None:
            kind, workload = found
            name = workload.metadata.name
            names.add(name)
            await self._delete("Job" if kind in ("Job", "IndexedJob") else kind, name,
                               propagation_policy="Foreground", grace_period_seconds=grace)
        for pod in await self._pods(kind, found[1].metadata.name if found else "", job_id, attempt):
            await self._delete("Pod", pod.metadata.name, grace_period_seconds=grace)
        if not names:  # no workload (never created, or gone): look for what a half-done submit left
            for what in ("Secret", "Service"):
                try:
                    listed = await read(self._api.lister(what), Listed, label_selector=_selector(labels))
                except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
                    raise refusal(exc, f"{what}s") from None
                names.update(i.metadata.name for i in listed.items if _matches(i.metadata.labels, labels))
        for name in sorted(names):
            await self._delete("Secret", name)
            await self._delete("Service", name)
        self._known.pop((job_id, attempt), None)
        log.info("training: removed %s attempt %d (%s)", job_id, attempt, ", ".join(sorted(names)) or "nothing left")

    # -- watching --------------------------------------------------------------------------------------------

    async def _watch(self) -> AsyncIterator[AttemptStatus]:
        facts = await self._cluster_facts()
        if self._closed:
            return
        session = NamespaceWatch(self._api, ["Job", "Pod", *self._custom_kinds(facts)],
                                 self._settings.sync_interval_s, asyncio.get_running_loop())
        self._watches.add(session)
        try:
            session.start()
            while (key := await session.next()) is not None:
                try:
                    status = await self.status(*key)
                except RuntimeFailure as failure:
                    log.debug("training: status of %s attempt %d unreadable: %s", key[0], key[1], failure.reason)
                    continue  # the caller's poll reads it again
                yield status
        finally:
            session.stop()
            self._watches.discard(session)


def _workload_kind(api_kind: str, item: WorkloadObject) -> Workload:
    if api_kind in ("TrainJob", "PyTorchJob"):
        return "TrainJob" if api_kind == "TrainJob" else "PyTorchJob"
    return "IndexedJob" if (item.metadata.annotations or {}).get(ANN_WORKLOAD) == "IndexedJob" else "Job"


def _redacted(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("kind") != "Secret":
        return doc
    return {**doc, "stringData": dict.fromkeys(doc.get("stringData") or {}, REDACTED)}
