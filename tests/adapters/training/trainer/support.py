"""Shared by the trainer tests: a small learnable dataset and a trainer run as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def sentences(n: int = 200, seed: int = 0) -> list[dict[str, str]]:
    """Rows of short sentences from a small grammar: a byte model learns them within a few hundred steps."""
    r = random.Random(seed)
    adj = ["quick", "lazy", "small", "bright", "quiet", "happy"]
    noun = ["fox", "dog", "cat", "bird", "model", "river"]
    verb = ["jumps over", "looks at", "runs past", "sings to", "learns from"]
    return [{"text": f"The {r.choice(adj)} {r.choice(noun)} {r.choice(verb)} the {r.choice(adj)} {r.choice(noun)}."}
            for _ in range(n)]


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    elapsed_s: float


def _child_env(env: dict[str, str]) -> dict[str, str]:
    """What the local runtime gives a trainer: a minimal environment plus the contract's variables."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return {**base, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **env}


async def start(env: dict[str, str], module: str = "adapters.training.trainer",
                python: str = sys.executable) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        python, "-m", module, env=_child_env(env), cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process, started: float, timeout_s: float = 60.0) -> Run:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


async def run_trainer(env: dict[str, str], module: str = "adapters.training.trainer", timeout_s: float = 60.0,
                      python: str = sys.executable) -> Run:
    """Run one trainer process to its end (killed after ``timeout_s``)."""
    started = time.monotonic()
    return await finish(await start(env, module, python), started, timeout_s)
