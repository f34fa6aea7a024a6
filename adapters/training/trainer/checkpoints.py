"""Checkpoints in the object store, through the job's API: ``checkpoints/step-<n>/`` holds
``model.safetensors``, ``optimizer.safetensors`` and ``trainer_state.json``.

``trainer_state.json`` is uploaded last, so a checkpoint whose upload was cut short has none and is skipped;
a retried attempt takes the newest checkpoint that downloads and fits the architecture, and falls back to
older ones (then to a fresh start) when one is broken.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters.training.trainer.client import ApiError, JobClient
from adapters.training.trainer.model import Adam, Arch, Params, load_tensors, read_tensors, save_tensors

__all__ = ["Resumed", "latest_checkpoint", "restore_rng", "rng_state", "save_checkpoint"]

PREFIX = "checkpoints/"
_STEP_DIR = re.compile(r"^checkpoints/step-(\d+)/")
_FILES = ("model.safetensors", "optimizer.safetensors", "trainer_state.json")


@dataclass
class Resumed:
    step: int
    path: str  # checkpoints/step-<n>
    params: Params
    optimizer: Params
    state: dict[str, Any]


def save_checkpoint(client: JobClient, step: int, params: Params, optimizer: Adam, state: dict[str, Any]) -> str:
    """Upload one checkpoint (the state file last: its presence marks the checkpoint complete)."""
    path = f"{PREFIX}step-{step}"
    client.put_artifact(f"{path}/model.safetensors", save_tensors(params, {"format": "np"}))
    client.put_artifact(f"{path}/optimizer.safetensors", save_tensors(optimizer.tensors(), {"format": "np"}))
    client.put_artifact(f"{path}/trainer_state.json", json.dumps({**state, "step": step}).encode())
    return path


def latest_checkpoint(client: JobClient, arch: Arch, log: Any = print) -> Resumed | None:
    """The newest complete checkpoint that loads, or None (``log`` says why each skipped one was skipped)."""
    steps: dict[int, set[str]] = {}
    for f in client.list_artifacts(PREFIX):
        match = _STEP_DIR.match(str(f.get("path", "")))
        if match:
            steps.setdefault(int(match.group(1)), set()).add(str(f["path"]).rsplit("/", 1)[-1])
    for step in sorted(steps, reverse=True):
        path = f"{PREFIX}step-{step}"
        if not set(_FILES) <= steps[step]:
            log(f"checkpoint {path} is incomplete; skipped")
            continue
        try:
            state = json.loads(client.artifact(f"{path}/trainer_state.json"))
            params = load_tensors(client.artifact(f"{path}/model.safetensors"), arch)
            optimizer = read_tensors(client.artifact(f"{path}/optimizer.safetensors"))
            Adam(params).load(optimizer)  # shapes checked here, before anything is committed to it
            if not isinstance(state, dict) or int(state.get("step", -1)) != step:
                raise ValueError("trainer_state.json does not name this step")
        except (ApiError, ValueError, KeyError, TypeError, OSError) as exc:
            log(f"checkpoint {path} cannot be used ({type(exc).__name__}: {str(exc)[:120]}); skipped")
            continue
        return Resumed(step=step, path=path, params=params, optimizer=optimizer, state=state)
    return None


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def restore_rng(rng: np.random.Generator, state: Any) -> None:
    if isinstance(state, dict):
        # A state from a different numpy: the run continues with a fresh stream of batches.
        with contextlib.suppress(TypeError, ValueError, KeyError):
            rng.bit_generator.state = state
