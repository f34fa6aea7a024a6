"""The prompts module's settings (``control.module_settings.prompts``), decoded at start-up and on every reload.

The gateway fills two keys from its own YAML (control/ never reads the gateway's config), so an operator
does not write them by hand:

``declared``
    The YAML's top-level ``prompts:`` section (``PromptsCfg``): templates and experiments the config owns,
    synced into the store at start-up and on every reload (``control.prompts.sync``).
``route_templates``
    The ``template`` of every YAML route (``"name"`` or ``"name@3"``): a version a route pins is kept in the
    ``templates`` snapshot even when it is no longer the latest.

``sync_retry_s`` is the operator's: how long to wait before retrying a sync the database refused (down
or too slow) while the gateway itself reloaded fine; so is ``analysis`` (``AnalysisSettings``: the results
endpoint's sample cap, and whether and how often this replica's supervisor runs).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from control.prompts.analysis_settings import AnalysisSettings
from policies.prompts.documents import PromptsCfg

__all__ = ["PromptsSettings"]


class PromptsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    declared: PromptsCfg = PromptsCfg()
    route_templates: list[str] = []
    sync_retry_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    analysis: AnalysisSettings = AnalysisSettings()  # the results endpoint and the supervisor
