"""What a rank process sees: its command line and its environment, pure functions of the spec and this machine.

A rank's environment is built in layers, each overriding the one before:

1. ``safe_env``: a short allow-list of the control plane's own variables (never its keys, database URLs or
   tokens) and ``PYTHONPATH`` so ``adapters`` (the reference trainer) imports from anywhere;
2. the thread limits derived from the CPU limit (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
   ``MKL_NUM_THREADS`` = ceil(cpu_limit)), so several ranks on one machine do not oversubscribe it;
3. ``spec.env`` (the contract's variables and the job's own: a job that sets a thread count gets it);
4. ``spec.secret_env`` (the job token), which only ever travels through process environments;
5. torchrun's variables, one process per node: ``RANK``, ``NODE_RANK``, ``LOCAL_RANK=0``, ``WORLD_SIZE``,
   ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``, ``NPROC_PER_NODE=1``.

Standard library only: the supervisor imports it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "PYTHON_NAMES",
    "THREAD_VARS",
    "TORCHRUN_VARS",
    "cpu_threads",
    "rank_env",
    "resolve_command",
    "safe_env",
    "torchrun_env",
]

_ROOT = Path(__file__).resolve().parents[3]  # the directory holding the adapters package
_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
           "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME",
           "XDG_CACHE_HOME", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
TORCHRUN_VARS = ("RANK", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE")
PYTHON_NAMES = ("python", "python3")  # a command starting with one of these runs with the runtime's Python
_CPU = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m?)")


def safe_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The control plane's variables a trainer may inherit, plus ``PYTHONPATH`` and unbuffered output."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in _PASSED if name in source}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), source.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the rank logs as they are printed
    return env


def cpu_threads(cpu_limit: str) -> int:
    """ceil of a Kubernetes CPU quantity (``"4"``, ``"1.5"``, ``"500m"``), at least 1; this machine's CPU
    count when the quantity is not a plain CPU amount."""
    m = _CPU.fullmatch(cpu_limit.strip())
    if m is None:
        return max(1, os.cpu_count() or 1)
    cores = float(m.group(1)) / (1000 if m.group(2) else 1)
    return max(1, math.ceil(cores - 1e-9))


def torchrun_env(rank: int, world_size: int, master_port: int) -> dict[str, str]:
    return {"RANK": str(rank), "NODE_RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port), "NPROC_PER_NODE": "1"}


def rank_env(base: Mapping[str, str], env: Mapping[str, str], secret_env: Mapping[str, str], *, rank: int,
             world_size: int, master_port: int, threads: int) -> dict[str, str]:
    """Rank ``rank``'s whole environment, layered as the module docstring says."""
    out = dict(base)
    out.update({name: str(threads) for name in THREAD_VARS})
    out.update(env)
    out.update(secret_env)
    out.update(torchrun_env(rank, world_size, master_port))
    return out


def resolve_command(command: list[str], python: str) -> list[str]:
    """``command`` with a leading bare ``python``/``python3`` replaced by ``python`` (the runtime's interpreter,
    which has the trainer's packages), as the Kubernetes image's ``python`` is the image's."""
    if command and command[0] in PYTHON_NAMES:
        return [python, *command[1:]]
    return list(command)
