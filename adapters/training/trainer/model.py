"""The reference trainer's model: a byte-level neural language model (Bengio et al., 2003) in numpy.

The previous ``context_length`` bytes are embedded, concatenated, passed through ``layers`` tanh layers and
projected to a softmax over the 256 byte values. It is small enough to train on a CPU in seconds and real
enough that its loss falls measurably: it is what the embedded default and the test suite train. Weights are
float32 safetensors (tensor names below) with a ``config.json`` naming the architecture, so a fine-tune can tell
this model from a Hugging Face one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from adapters.training.trainer.jobenv import BadInput, Hyper

__all__ = [
    "ARCHITECTURE_NAME",
    "MODEL_TYPE",
    "VOCAB_SIZE",
    "Adam",
    "Arch",
    "Params",
    "config_bytes",
    "init_params",
    "load_tensors",
    "loss_and_grads",
    "loss_only",
    "read_tensors",
    "save_tensors",
]

ARCHITECTURE_NAME = "LlmopsByteMLP"
MODEL_TYPE = "llmops-byte-mlp"
VOCAB_SIZE = 256
Params = dict[str, np.ndarray]
_HF_HINT = "use the Hugging Face trainer (train extra): trainer 'huggingface'"


@dataclass(frozen=True)
class Arch:
    context_length: int = 16
    embedding_dim: int = 32
    hidden_dim: int = 128
    layers: int = 1

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Arch:
        """From the job's ``LLMOPS_ARCHITECTURE`` (camelCase; small defaults for what is absent)."""
        h = Hyper(spec, "architecture")
        if spec.get("model_type") not in (None, MODEL_TYPE) or spec.get("modelType") not in (None, MODEL_TYPE):
            raise BadInput(f"architecture model_type {spec.get('model_type') or spec.get('modelType')!r} is not "
                           f"the reference trainer's ({MODEL_TYPE}); {_HF_HINT}")
        arch = cls(context_length=h.get_int("contextLength", cls.context_length, lo=1, hi=256),
                   embedding_dim=h.get_int("embeddingDim", cls.embedding_dim, lo=1, hi=1024),
                   hidden_dim=h.get_int("hiddenDim", cls.hidden_dim, lo=1, hi=4096),
                   layers=h.get_int("layers", cls.layers, lo=1, hi=8))
        extra = [k for k in h.unknown() if k not in ("model_type", "modelType")]
        if extra:
            raise BadInput(f"architecture has keys the reference trainer does not know: {', '.join(extra)} "
                           f"(it takes contextLength, embeddingDim, hiddenDim, layers); for another model, {_HF_HINT}")
        return arch

    @classmethod
    def from_config(cls, config: Any) -> Arch:
        """From a base model's ``config.json``; one this trainer did not write is ``BadInput``."""
        if not isinstance(config, dict) or config.get("model_type") != MODEL_TYPE:
            kind = config.get("model_type") if isinstance(config, dict) else None
            raise BadInput(f"the base model ({kind or 'unknown type'}) is not a reference-trainer model; {_HF_HINT}")
        try:
            return cls(context_length=int(config["context_length"]), embedding_dim=int(config["embedding_dim"]),
                       hidden_dim=int(config["hidden_dim"]), layers=int(config["num_hidden_layers"]))
        except (KeyError, TypeError, ValueError):
            raise BadInput("the base model's config.json lacks the reference trainer's dimensions") from None

    def config(self) -> dict[str, Any]:
        """``config.json`` of a model with this architecture (Hugging Face's keys where they exist)."""
        return {"architectures": [ARCHITECTURE_NAME], "model_type": MODEL_TYPE, "vocab_size": VOCAB_SIZE,
                "context_length": self.context_length, "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim, "num_hidden_layers": self.layers, "torch_dtype": "float32",
                "tokenizer": "bytes"}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"embed.weight": (VOCAB_SIZE, self.embedding_dim)}
        width = self.context_length * self.embedding_dim
        for i in range(self.layers):
            shapes[f"layers.{i}.weight"] = (width, self.hidden_dim)
            shapes[f"layers.{i}.bias"] = (self.hidden_dim,)
            width = self.hidden_dim
        shapes["head.weight"] = (self.hidden_dim, VOCAB_SIZE)
        shapes["head.bias"] = (VOCAB_SIZE,)
        return shapes

    def as_params(self) -> dict[str, int]:
        return {"architecture.contextLength": self.context_length, "architecture.embeddingDim": self.embedding_dim,
                "architecture.hiddenDim": self.hidden_dim, "architecture.layers": self.layers}


def init_params(arch: Arch, rng: np.random.Generator) -> Params:
    """Scaled Gaussian weights; the head starts small so the first loss is close to ln(256)."""
    params: Params = {}
    for name, shape in arch.shapes().items():
        if name.endswith(".bias"):
            params[name] = np.zeros(shape, np.float32)
        elif name == "embed.weight":
            params[name] = rng.standard_normal(shape, dtype=np.float32)
        else:
            scale = 0.1 if name == "head.weight" else 1.0
            params[name] = (rng.standard_normal(shape, dtype=np.float32) * (scale / np.sqrt(shape[0]))).astype(
                np.float32)
    return params


def _forward(params: Params, arch: Arch, ctx: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The layer inputs (the embedded context first, then each tanh output) and the logits."""
    x = params["embed.weight"][ctx].reshape(ctx.shape[0], -1)
    acts = [x]
    for i in range(arch.layers):
        x = np.tanh(x @ params[f"layers.{i}.weight"] + params[f"layers.{i}.bias"])
        acts.append(x)
    return acts, x @ params["head.weight"] + params["head.bias"]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    out: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out


def loss_only(params: Params, arch: Arch, ctx: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy in nats per byte."""
    _, logits = _forward(params, arch, ctx)
    return float(-_log_softmax(logits)[np.arange(len(targets)), targets].mean())


def loss_and_grads(params: Params, arch: Arch, ctx: np.ndarray, targets: np.ndarray) -> tuple[float, Params]:
    """The batch's mean cross-entropy and its gradient with respect to every parameter."""
    n = len(targets)
    acts, logits = _forward(params, arch, ctx)
    logp = _log_softmax(logits)
    loss = float(-logp[np.arange(n), targets].mean())
    d = np.exp(logp)
    d[np.arange(n), targets] -= 1.0
    d /= n
    grads: Params = {"head.weight": acts[-1].T @ d, "head.bias": d.sum(axis=0)}
    dx = d @ params["head.weight"].T
    for i in reversed(range(arch.layers)):
        dpre = dx * (1.0 - acts[i + 1] ** 2)
        grads[f"layers.{i}.weight"] = acts[i].T @ dpre
        grads[f"layers.{i}.bias"] = dpre.sum(axis=0)
        dx = dpre @ params[f"layers.{i}.weight"].T
    dembed = np.zeros_like(params["embed.weight"])
    np.add.at(dembed, ctx.reshape(-1), dx.reshape(-1, arch.embedding_dim))
    grads["embed.weight"] = dembed
    return loss, {k: v.astype(np.float32, copy=False) for k, v in grads.items()}


class Adam:
    """Adam with bias correction; its moments are part of a checkpoint so a resumed run continues smoothly."""

    def __init__(self, params: Params, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def step(self, params: Params, grads: Params, lr: float) -> None:
        self.t += 1
        c1 = 1.0 - self.beta1 ** self.t
        c2 = 1.0 - self.beta2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.beta1 * self.m[k] + (1.0 - self.beta1) * g
            self.v[k] = self.beta2 * self.v[k] + (1.0 - self.beta2) * (g * g)
            params[k] -= (lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)).astype(np.float32)

    def tensors(self) -> Params:
        out = {f"m.{k}": v for k, v in self.m.items()}
        out.update({f"v.{k}": v for k, v in self.v.items()})
        out["t"] = np.array([self.t], np.int64)
        return out

    def load(self, tensors: Params) -> None:
        for k in self.m:
            m, v = tensors[f"m.{k}"], tensors[f"v.{k}"]
            if m.shape != self.m[k].shape or v.shape != self.v[k].shape:
                raise ValueError(f"optimizer state {k} has the wrong shape")
            self.m[k], self.v[k] = m.astype(np.float32), v.astype(np.float32)
        self.t = int(tensors["t"][0])


def save_tensors(tensors: Params, metadata: dict[str, str] | None = None) -> bytes:
    return st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)


def read_tensors(data: bytes) -> Params:
    """Tensors from safetensors bytes; ``ValueError`` for anything that is not a safetensors file."""
    try:
        return st_load(data)
    except SafetensorError as exc:
        raise ValueError(f"not a safetensors file: {str(exc)[:120]}") from None


def load_tensors(data: bytes, arch: Arch) -> Params:
    """Weights from safetensors bytes, checked against ``arch`` (``ValueError`` when they do not fit)."""
    tensors = read_tensors(data)
    expected = arch.shapes()
    if set(tensors) != set(expected):
        raise ValueError(f"tensors {sorted(set(tensors) ^ set(expected))[:4]} do not match the architecture")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, expected {shape}")
    return {k: v.astype(np.float32) for k, v in tensors.items()}


def config_bytes(arch: Arch) -> bytes:
    return json.dumps(arch.config(), indent=2).encode()
