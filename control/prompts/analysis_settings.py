"""Settings of the experiment results and the supervisor (``control.module_settings.prompts.analysis``)::

    control:
      module_settings:
        prompts:
          analysis:
            results_sample_cap: 200000   # per-request rows per variant the results endpoint reads (then: a sample)
            supervisor: true             # run the supervisor on this replica
            interval_s: 10               # guardrail checks; adaptive experiments at their own adaptive.interval_s
            supervisor_sample_cap: 20000 # per-request rows per variant a supervisor check reads
            draws: 10000                 # posterior draws of the adaptive allocation
            min_weight_change: 0.02      # adaptive weights are rewritten only when one moves this much
            read_timeout_s: 30           # deadline of each read of an experiment's records (store default: 5)
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["AnalysisSettings"]


class AnalysisSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    results_sample_cap: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 200_000
    supervisor: bool = True
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    supervisor_sample_cap: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 20_000
    draws: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 10_000
    min_weight_change: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.02
    read_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
