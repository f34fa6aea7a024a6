"""The job as a trainer sees it: the contract's environment, read once, and the checked hyperparameters.

Every problem with the inputs raises ``BadInput``, which the trainers turn into ``contract.EXIT_BAD_INPUT`` (not
retried by the default policy) with the message on stderr: retrying cannot fix a bad hyperparameter.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.training import contract

__all__ = ["BadInput", "Hyper", "JobEnv", "read_job_env"]

_FINETUNE_TYPES = ("finetune",)


class BadInput(Exception):
    """The job's inputs cannot be trained on; the message is for people and holds no secret."""


@dataclass(frozen=True)
class JobEnv:
    """The contract's variables; ``token`` is a secret: never print it or put it in an error."""

    api_base_url: str
    job_id: str
    attempt: int
    job_type: str
    token: str = field(repr=False)
    hyperparameters: dict[str, Any]
    architecture: dict[str, Any]
    base_model_id: str | None
    rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def finetune(self) -> bool:
        """Start from the base model: a fine-tune, or a distributed job that names one."""
        return self.job_type in _FINETUNE_TYPES or (self.job_type == "distributed" and bool(self.base_model_id))


def _json_object(env: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = env.get(name, "") or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadInput(f"{name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadInput(f"{name} must be a JSON object")
    return value


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadInput(f"{name} must be an integer, not {raw[:40]!r}") from None


def read_job_env(env: Mapping[str, str] | None = None) -> JobEnv:
    """The contract's environment (``os.environ`` by default); a missing or malformed variable is ``BadInput``."""
    env = os.environ if env is None else env
    missing = [n for n in (contract.ENV_API_BASE_URL, contract.ENV_JOB_ID, contract.ENV_TOKEN) if not env.get(n)]
    if missing:
        raise BadInput(f"missing environment: {', '.join(missing)} (set by the training module)")
    job_type = env.get(contract.ENV_JOB_TYPE, "") or "from_scratch"
    if job_type not in ("finetune", "from_scratch", "pretrain", "distributed"):
        raise BadInput(f"{contract.ENV_JOB_TYPE} {job_type[:40]!r} is not a job type")
    world = _int_env(env, "WORLD_SIZE", 1)
    rank = _int_env(env, "RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise BadInput(f"RANK {rank} and WORLD_SIZE {world} do not fit together")
    base = env.get(contract.ENV_BASE_MODEL_ID) or None
    if job_type == "finetune" and not base:
        raise BadInput(f"a finetune needs {contract.ENV_BASE_MODEL_ID}")
    return JobEnv(
        api_base_url=env[contract.ENV_API_BASE_URL].rstrip("/"), job_id=env[contract.ENV_JOB_ID],
        attempt=max(1, _int_env(env, contract.ENV_ATTEMPT, 1)), job_type=job_type, token=env[contract.ENV_TOKEN],
        hyperparameters=_json_object(env, contract.ENV_HYPERPARAMETERS),
        architecture=_json_object(env, contract.ENV_ARCHITECTURE), base_model_id=base, rank=rank,
        world_size=world, master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=_int_env(env, "MASTER_PORT", 29500),
    )


class Hyper:
    """Typed reads of one JSON object (hyperparameters, architecture), each failure naming its key."""

    def __init__(self, values: Mapping[str, Any], what: str = "hyperparameter") -> None:
        self.values = dict(values)
        self.what = what
        self.used: set[str] = set()

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.values.get(key)

    def get_int(self, key: str, default: int, *, lo: int, hi: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise BadInput(f"{self.what} {key} must be an integer from {lo} to {hi}, not {value!r:.40}")
        return value

    def get_float(self, key: str, default: float, *, lo: float, hi: float, open_lo: bool = False) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi \
                or (open_lo and value == lo) or value != value:
            bound = f"above {lo}" if open_lo else f"from {lo}"
            raise BadInput(f"{self.what} {key} must be a number {bound} to {hi}, not {value!r:.40}")
        return float(value)

    def get_str(self, key: str) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise BadInput(f"{self.what} {key} must be a non-empty string")
        return value

    def get_ints(self, key: str) -> frozenset[int] | None:
        """A list of integers, one integer, or a comma-separated string (hyperparameters are often scalars only)."""
        value = self._get(key)
        if value is None:
            return None
        items: list[Any] = value if isinstance(value, list) else (
            value.split(",") if isinstance(value, str) else [value])
        try:
            return frozenset(int(str(v).strip()) for v in items if str(v).strip())
        except ValueError:
            raise BadInput(f"{self.what} {key} must be a list of integers, not {value!r:.40}") from None

    def unknown(self) -> list[str]:
        return sorted(set(self.values) - self.used)
