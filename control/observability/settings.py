"""Observability's own settings (``control.module_settings.observability``), decoded once at start-up.

    control:
      module_settings:
        observability:
          gpus: {vllm: 8}        # GPUs behind each GPU-hour-priced provider (default 1)
          max_range_days: 400    # the longest window a report may cover
          max_hourly_range_days: 7  # ... at granularity=hour (168 buckets, as OpenAI's and Anthropic's usage APIs)
          refresh_interval_s: 60 # how often the daily summary catches up with changed days (0: never)
          refresh_grace_s: 600   # a day is summarised once it has been over this long

The rollups keep a GPU-hour-priced provider's hourly price (``usd_per_gpu_hour`` x ``gpus``), not the
GPU count, so reports learn ``gpus`` here to turn the hours a provider served into GPU-hours.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["ObservabilitySettings"]

ProviderName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class ObservabilitySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    gpus: dict[ProviderName, Annotated[int, msgspec.Meta(ge=1, le=100_000)]] = {}
    max_range_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 400
    # Hourly reports read the hourly rollups (about 1M rows a month at 10M requests): a week stays well under
    # a second on both databases, a month does not. Longer hourly series: ask a week at a time.
    max_hourly_range_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 7
    refresh_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    refresh_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 600.0

    def gpus_of(self, provider: str) -> int:
        """GPUs behind a GPU-hour-priced provider; 1 when not configured (reports then count provider-hours)."""
        return self.gpus.get(provider, 1)
