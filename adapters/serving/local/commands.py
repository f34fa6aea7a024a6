"""Which server a local slot runs, and its command line: pure, so ``render`` and ``apply`` agree.

* ``mock`` (the default): ``python -m adapters.testdoubles.serving_mock``, the mock upstream, a TEST DOUBLE
  answering as ``served_model_name``. The endpoint's vLLM args are passed on: the mock ignores those it
  does not know and understands ``--mock-fault`` (crash, hang, …) for fault tests.
* ``llama_cpp``: with ``SERVING_LOCAL_SERVER=auto``, a model of format ``gguf`` whose ``.gguf`` file is in the
  object store, and ``llama_cpp`` importable: ``python -m adapters.serving.local.llama_server`` (llama-cpp-python's
  OpenAI server plus the ``/health`` route vLLM has). vLLM args mean nothing to it and are not passed.
* ``none``: the image cannot run here. The runtime treats ``spec.image`` as informational, except that an image
  under ``invalid/`` never resolves (how tests provoke "image cannot be pulled"); its slot fails with
  ``ImageNotRunnable``, like ``ErrImagePull`` on Kubernetes.

The port is not known when rendering: commands carry the placeholder ``{port}``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adapters.objectstore.errors import InvalidKey
from adapters.objectstore.keys import validate_key
from adapters.serving.base import DeploymentSpec
from adapters.serving.settings import ServingSettings

__all__ = [
    "PORT",
    "ServerPlan",
    "child_env",
    "plan_server",
    "redact_argv",
    "redact_text",
]

PORT = "{port}"
ServerKind = Literal["mock", "llama_cpp", "none"]
INVALID_IMAGE_PREFIX = "invalid/"
_ROOT = Path(__file__).resolve().parents[3]  # the directory holding the adapters package
# What a model server may inherit from the control plane: never its keys, database URLs or tokens.
_ENV_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH",
               "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "HF_HOME", "HF_HUB_OFFLINE", "VIRTUAL_ENV")
_SECRET_FLAG = re.compile(r"^--?[\w-]*(key|token|secret|password|passwd|credential)[\w-]*$", re.IGNORECASE)
_SECRET_TEXT = [
    re.compile(r"(?i)(--?[\w-]*(?:key|token|secret|password|passwd|credential)[\w-]*(?:=|\s+))(\S+)"),
    re.compile(r"(?i)((?:api[_-]?key|token|secret|password|passwd|authorization)\"?\s*[:=]\s*\"?"
               r"(?:(?:bearer|basic)\s+)?)([^\s\",]+)"),
    re.compile(r"(?i)(bearer\s+)(\S+)"),
    re.compile(r"(://[^/\s:@]+:)([^@\s/]+)(@)"),
    re.compile(r"()\b(sk-[A-Za-z0-9_-]{8,}|[A-Za-z0-9_-]{40,})\b"),
]


@dataclass(frozen=True)
class ServerPlan:
    kind: ServerKind
    argv: list[str]  # with the ``{port}`` placeholder; empty when kind is "none"
    model_key: str | None = None  # object-store key to download before starting (llama_cpp)
    model_path: Path | None = None
    failure: str | None = None  # why it cannot run (kind "none"), for people

    def command(self, port: int) -> list[str]:
        return [str(port) if arg == PORT else arg for arg in self.argv]


def _gguf_key(spec: DeploymentSpec) -> str | None:
    return next((key for key in spec.model_files if key.lower().endswith(".gguf")), None)


def _llama_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def plan_server(spec: DeploymentSpec, settings: ServingSettings, *, workdir: Path, has_objectstore: bool,
                python: str = sys.executable) -> ServerPlan:
    """Decide what runs ``spec`` here; deterministic for one machine (``llama_cpp`` installed or not)."""
    if spec.image.startswith(INVALID_IMAGE_PREFIX):
        return ServerPlan(kind="none", argv=[], failure=(
            f"image {spec.image!r} cannot be run locally (images under {INVALID_IMAGE_PREFIX} never resolve)"))
    key = _gguf_key(spec)
    if (settings.local_server == "auto" and (spec.model_format or "").lower() == "gguf" and key is not None
            and has_objectstore and _llama_installed()):
        try:
            validate_key(key)
        except InvalidKey as exc:
            return ServerPlan(kind="none", argv=[], failure=f"model file key is not valid: {exc}")
        path = workdir / "models" / key
        argv = [python, "-m", "adapters.serving.local.llama_server", "--model", str(path),
                "--model-alias", spec.served_model_name, "--host", "127.0.0.1", "--port", PORT]
        return ServerPlan(kind="llama_cpp", argv=argv, model_key=key, model_path=path)
    # The endpoint's args first: the last occurrence of an option wins, so none of them can move the server
    # off loopback or off its port (the serving module refuses those options too).
    argv = [python, "-m", "adapters.testdoubles.serving_mock", *spec.vllm_args, "--host", "127.0.0.1",
            "--port", PORT, "--model-name", spec.served_model_name]
    return ServerPlan(kind="mock", argv=argv)


def redact_argv(argv: list[str]) -> list[str]:
    """The command line for showing: the value after (or in) a key-like flag becomes ``***``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        flag, eq, _ = arg.partition("=")
        if hide_next:
            out.append("***")
            hide_next = False
        elif _SECRET_FLAG.match(flag):
            out.append(f"{flag}=***" if eq else arg)
            hide_next = not eq
        else:
            out.append(arg)
    return out


def redact_text(text: str) -> str:
    """Best effort for process output shown in a status: key-like values and long tokens become ``***``."""
    for pattern in _SECRET_TEXT:
        text = pattern.sub(lambda m: m.group(1) + "***" + (m.group(3) if m.lastindex == 3 else ""), text)
    return text


def child_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A short allow-list of the control plane's environment, and ``adapters`` importable from anywhere."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in _ENV_PASSED if name in source}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), source.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the files as they are written
    return env
