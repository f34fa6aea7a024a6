"""Token counting for upstreams that report no usage. Runs off the hot path.

Uses tiktoken with the encodings litellm bundles (works offline); falls back
to a ~4 characters per token estimate when neither is installed, and then
`tokenizer_available()` is false: the caller must mark what it counted as
estimated (gateway/metering.py sets `usage_source="estimated"`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

__all__ = ["count_tokens", "tokenizer_available"]


@cache
def _encoder() -> Callable[[str], int] | None:
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
        if bundled.is_dir():
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    try:
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base")
    except Exception:  # missing package or no offline encoding: estimate instead
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))


def tokenizer_available() -> bool:
    """Whether `count_tokens` counts (True) or estimates characters / 4 (False)."""
    return _encoder() is not None


def count_tokens(text: str) -> int:
    if not text:
        return 0
    enc = _encoder()
    if enc is None:
        return max(1, (len(text) + 3) // 4)
    return enc(text)
