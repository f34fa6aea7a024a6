"""Token counting for upstreams that report no usage. Runs off the hot path (the usage worker's thread).

Uses tiktoken with the encodings litellm bundles, so it never touches the network: the
model's own encoding (`encoding_for`: o200k_base for the gpt-4o, gpt-4.1, gpt-5 and o-series
families, cl100k_base for everything else, whose real tokenizer we do not have offline).
Without tiktoken or the files, `counter_for` returns None and the caller estimates
~4 characters per token and must say so (gateway/metering.py sets `usage_source="estimated"`);
the first estimate logs a warning, so the fallback is never silent.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

__all__ = ["count_tokens", "counter_for", "encoding_for", "estimate_tokens", "tokenizer_available"]

Counter = Callable[[str], int]

# Model-name families (after any `provider/` prefix and `ft:`) that tiktoken maps to o200k_base.
_O200K_FAMILIES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss", "o1", "o3", "o4")

log = logging.getLogger("llmops.metering")


def encoding_for(model: str) -> str:
    name = model.rsplit("/", 1)[-1].lower().removeprefix("ft:")
    for family in _O200K_FAMILIES:
        if name.startswith(family) and name[len(family) : len(family) + 1] in ("", "-", ":", "."):
            return "o200k_base"
    return "cl100k_base"


@cache
def _load(encoding: str) -> Counter | None:
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
        if bundled.is_dir():
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    try:
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
    except Exception:  # missing package or no offline encoding file: the caller estimates instead
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))


@cache
def _encoder() -> Counter | None:
    """cl100k_base, the fallback encoding; None means no tokenizer at all."""
    return _load("cl100k_base")


@cache
def _warn_estimating() -> None:
    log.warning("no tokenizer available (tiktoken with litellm's bundled encodings): tokens of upstreams "
                "that report no usage are estimated at ~4 characters per token, usage_source=estimated")


def counter_for(model: str) -> Counter | None:
    """The model's encoding (cl100k_base when its own cannot load); None: estimate, and say so."""
    base = _encoder()
    if base is None:
        _warn_estimating()
        return None
    name = encoding_for(model)
    return base if name == "cl100k_base" else (_load(name) or base)


def tokenizer_available() -> bool:
    """Whether `count_tokens` counts (True) or estimates characters / 4 (False)."""
    return _encoder() is not None


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def count_tokens(text: str, model: str = "") -> int:
    if not text:
        return 0
    counter = counter_for(model)
    return estimate_tokens(text) if counter is None else counter(text)
