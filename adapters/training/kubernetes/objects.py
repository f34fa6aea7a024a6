"""The kinds only the training runtime reads back, decoded by msgspec like the shared readers of metadata,
conditions and pods in ``adapters.kubernetes.objects`` (see there for why).

Jobs and the Kubeflow custom resources share one shape here: metadata, and a status with conditions and
start/completion times (a ``batch/v1`` Job, a ``TrainJob`` and a ``PyTorchJob`` all report that way).
"""

from __future__ import annotations

import msgspec

from adapters.kubernetes.objects import Condition, KubeList, KubeStruct, Meta

__all__ = ["Listed", "ListedItem", "Workload", "WorkloadList"]


# -- workloads: Job, TrainJob, PyTorchJob --------------------------------------------------------------------


class WorkloadStatus(KubeStruct):
    start_time: str | None = None
    completion_time: str | None = None
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    conditions: list[Condition] | None = None


class Workload(KubeStruct):
    kind: str = ""
    metadata: Meta = msgspec.field(default_factory=Meta)
    status: WorkloadStatus = msgspec.field(default_factory=WorkloadStatus)


WorkloadList = KubeList[Workload]


# -- the relist fallback: only what tells a change ------------------------------------------------------------


class ListedItem(KubeStruct):
    metadata: Meta = msgspec.field(default_factory=Meta)
    status: msgspec.Raw = msgspec.Raw(b"null")


Listed = KubeList[ListedItem]
