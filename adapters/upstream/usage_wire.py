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


class _InputDetails(msgspec.Struct, gc=False):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_creation_tokens: int | None = None


class _OutputDetails(msgspec.Struct, gc=False):
    reasoning_tokens: int | None = None


class WireUsage(msgspec.Struct, gc=False):
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


def to_usage(w: WireUsage) -> Usage:
    """Runs per request on the hot path (non-streamed bodies; a stream's last usage once): plain
    `or` chains and branches, no helper calls; the bare OpenAI shape first (~1.5k instructions)."""
    prompt = w.prompt_tokens
    if (prompt is not None and w.prompt_tokens_details is None and w.completion_tokens_details is None
            and w.cache_read_input_tokens is None and w.cache_creation_input_tokens is None
            and w.prompt_cache_hit_tokens is None):
        completion = w.completion_tokens or 0
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    inp = w.prompt_tokens_details or w.input_tokens_details
    out = w.completion_tokens_details or w.output_tokens_details
    if inp is None:
        read = w.cache_read_input_tokens or w.prompt_cache_hit_tokens or 0
        write = w.cache_creation_input_tokens or 0
    else:
        read = inp.cached_tokens or w.cache_read_input_tokens or w.prompt_cache_hit_tokens or 0
        write = inp.cache_write_tokens or inp.cache_creation_tokens or w.cache_creation_input_tokens or 0
    if prompt is None:
        prompt = w.input_tokens or 0
        if w.cache_read_input_tokens is not None or w.cache_creation_input_tokens is not None:
            prompt += read + write  # Anthropic's shape: input_tokens is the uncached rest
        elif prompt < read + write:
            prompt += read + write
    elif prompt < read + write:  # cannot include them: an exclusive count
        prompt += read + write
    done = w.completion_tokens
    completion = (w.output_tokens or 0) if done is None else done
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
        cached_read_tokens=read, cache_write_tokens=write,
        reasoning_tokens=(out.reasoning_tokens or 0) if out is not None else 0,
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
