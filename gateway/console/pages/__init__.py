"""The console's sections: one module per section, each exporting `HANDLERS` (paths relative to /console)."""

from __future__ import annotations

from typing import Any

from gateway.console.pages import (
    catalog_datasets,
    catalog_models,
    chat,
    evaluation,
    gates,
    governance,
    prompts,
    serving,
    training,
    usage,
)

__all__ = ["HANDLERS"]

HANDLERS: list[Any] = [
    *chat.HANDLERS, *serving.HANDLERS, *catalog_models.HANDLERS, *catalog_datasets.HANDLERS, *training.HANDLERS,
    *evaluation.HANDLERS, *gates.HANDLERS, *prompts.HANDLERS, *usage.HANDLERS, *governance.HANDLERS,
]
