"""Providers' usage objects, read into the normalised `Usage` (see `base.Usage` for the convention).

One lenient wire struct covers the shapes an OpenAI-compatible body or chunk can carry:

- OpenAI chat/completions: `prompt_tokens`, `completion_tokens`,
  `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`;
- a cache-write count where one is reported: `prompt_tokens_details.cache_write_tokens` (the openai
  SDK's field, OpenRouter, litellm), `.cache_creation_tokens` (litellm) or top-level
  `cache_creation_input_tokens` (Anthropic-style proxies), and reads reported the same ways:
  top-level `cache_read_input_tokens`, DeepSeek's `prompt_cache_hit_tokens`;
- the Responses API: `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`,
  `output_tokens_details.reasoning_tokens`;
- Anthropic's Messages API: `input_tokens` EXCLUDES `cache_read_input_tokens` and
  `cache_creation_input_tokens`, so they are added in.

Where `prompt_tokens` is reported it already includes cached reads and writes (OpenAI's
convention, litellm's too); only a report that cannot be inclusive (fewer prompt tokens than
cached + written ones) is read as exclusive, so a cache is never billed twice nor dropped.
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.upstream.base import Usage

__all__ = ["WireUsage", "to_usage", "usage_json"]


class _InputDetails(msgspec.Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_creation_tokens: int | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class WireUsage(msgspec.Struct):
    """Every field optional: a provider sends a subset, often with explicit nulls."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    prompt_tokens_details: _InputDetails | None = None
    completion_tokens_details: _OutputDetails | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    prompt_cache_hit_tokens: int | None = None


_NO_INPUT = _InputDetails()


def _first(*values: int | None) -> int:
    for v in values:
        if v:
            return v
    return 0


def to_usage(w: WireUsage) -> Usage:
    inp = w.prompt_tokens_details or w.input_tokens_details or _NO_INPUT
    out = w.completion_tokens_details or w.output_tokens_details
    read = _first(inp.cached_tokens, w.cache_read_input_tokens, w.prompt_cache_hit_tokens)
    write = _first(inp.cache_write_tokens, inp.cache_creation_tokens, w.cache_creation_input_tokens)
    if w.prompt_tokens is not None:
        prompt = w.prompt_tokens
        if prompt < read + write:  # cannot include them: an exclusive count
            prompt += read + write
    else:
        prompt = w.input_tokens or 0
        if w.cache_read_input_tokens is not None or w.cache_creation_input_tokens is not None:
            prompt += read + write  # Anthropic's shape: input_tokens is the uncached rest
        elif prompt < read + write:
            prompt += read + write
    completion = w.completion_tokens if w.completion_tokens is not None else (w.output_tokens or 0)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
        cached_read_tokens=read, cache_write_tokens=write, reasoning_tokens=(out.reasoning_tokens or 0) if out else 0,
    )


def usage_json(u: Usage) -> dict[str, Any]:
    """`u` as OpenAI's chat `usage` object, for adapters that build OpenAI bodies themselves;
    the details only where non-zero."""
    out: dict[str, Any] = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                           "total_tokens": u.prompt_tokens + u.completion_tokens}
    if u.cached_read_tokens or u.cache_write_tokens:
        details = {"cached_tokens": u.cached_read_tokens}
        if u.cache_write_tokens:
            details["cache_write_tokens"] = u.cache_write_tokens
        out["prompt_tokens_details"] = details
    if u.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out
