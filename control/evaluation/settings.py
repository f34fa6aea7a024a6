"""The evaluation module's settings (``control.module_settings.evaluation``), decoded at start-up.

The gateway fills two keys from its own config (control/ never reads the gateway's YAML):

``gateway_url``
    Where the worker calls the data plane: the gateway's own listen address (``http://127.0.0.1:<port>``
    when it listens on every interface). An operator sets it only when the control plane runs apart from
    the gateway, or to send evaluations through a load balancer.
``gateway_routes``
    The YAML's route names: a run's ``route`` target must name one of them or a published route (catalog
    models, serving endpoints). ``None`` (no gateway filled it): YAML routes cannot be checked, so a route
    name the snapshots do not know is taken on trust and fails per item if the gateway does not know it.

The rest is the operator's; every value is read once, when the module starts (a reload changes the two
keys above, which are read per run).
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from adapters.adminapi import ControlCfg, FieldError, SemanticError

__all__ = ["EvaluationSettings", "load_settings"]

Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]


class EvaluationSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    gateway_url: str | None = None
    gateway_routes: list[str] | None = None
    worker: bool = True  # run the worker on this replica (False: this replica only serves the REST API)
    max_runs: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4  # runs one replica works on at once
    poll_s: Seconds = 2.0  # how often an idle worker looks for runs (a new run here wakes it at once)
    lease_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0  # a dead replica's run is taken over after
    progress_s: Seconds = 1.0  # progress, lease renewal and the cancel check: one run-row write this often
    request_timeout_s: Seconds = 300.0  # one gateway call, whole answer
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2  # per item, on 429/5xx answers and timeouts
    retry_backoff_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 1.0  # doubled per retry
    outage_backoff_max_s: Seconds = 30.0  # gateway unreachable: the run pauses, probing at most this far apart
    key_ttl_s: Annotated[float, msgspec.Meta(ge=60, le=30 * 86_400)] = 86_400.0  # the service key's lifetime
    usage_wait_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 10.0  # for the usage writer's cost records
    # an automatic run on a model no route serves waits this long for it, then fails
    route_wait_s: Annotated[float, msgspec.Meta(gt=0, le=365 * 86_400)] = 7 * 86_400.0


def load_settings(cfg: ControlCfg) -> EvaluationSettings:
    """``module_settings.evaluation`` decoded; a bad value fails start-up naming its path."""
    try:
        return msgspec.convert(cfg.module_settings.get("evaluation", {}), EvaluationSettings)
    except msgspec.ValidationError as err:
        message, _, path = str(err).partition(" - at `$")
        field = "control.module_settings.evaluation" + path.rstrip("`")
        unknown = re.search(r"unknown field `([^`]*)`", message)
        if unknown:
            field += f".{unknown.group(1)}"
        raise SemanticError([FieldError(field=field, message=message)], f"evaluation: {field}: {message}") from None
