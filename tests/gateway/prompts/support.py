"""Shared helpers of the prompts plug-in's tests: a config on the mock upstream, snapshot builders."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from adapters.snapshots import ExperimentSpec, ExperimentsSnapshot, TemplateSpec, TemplatesSnapshot
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, TemplateDoc

MSG = [{"role": "user", "content": "hi"}]

SUPPORT = {
    "name": "support",
    "messages": [{"role": "system", "content": "You support {{ product }} for {{ customer }}, in {{ tone }}."}],
    "variables": [{"name": "product"}, {"name": "customer"}, {"name": "tone", "default": "English"},
                  {"name": "tier", "type": "integer", "default": 1}],
}


def config(url: str, *, routes: list[dict[str, Any]] | None = None, prompts: dict[str, Any] | None = None,
           **extra: Any) -> dict[str, Any]:
    """Provider ``p`` on ``url``; routes ``support`` (template support, product llmops), ``plain``,
    ``alt`` and ``other`` unless ``routes`` replaces them; the ``support`` template in the YAML."""
    def route(name: str, model: str, **more: Any) -> dict[str, Any]:
        return {"name": name, "targets": [{"provider": "p", "model": model}], "retry_backoff_s": 0.0, **more}

    return {
        "server": {"log_level": "warning"},
        "control": {"enabled": False},
        "providers": [{"name": "p", "kind": "openai", "base_url": url}],
        "routes": routes if routes is not None else [
            route("support", "m-support", template="support", template_variables={"product": "llmops"}),
            route("plain", "m-plain"), route("alt", "m-alt"), route("other", "m-other")],
        "prompts": prompts if prompts is not None else {"templates": [SUPPORT]},
        **extra,
    }


def template(name: str, version: int, content: str, *, latest: bool = True, source: str = "api",
             variables: list[dict[str, Any]] | None = None) -> TemplateSpec:
    doc = msgspec.convert({"name": name, "messages": [{"role": "system", "content": content}],
                           "variables": variables or []}, TemplateDoc)
    return msgspec.convert({"name": name, "version": version, "document": msgspec.to_builtins(doc),
                            "latest": latest, "source": source}, TemplateSpec)


def templates(*specs: TemplateSpec, generation: int = 1) -> TemplatesSnapshot:
    return TemplatesSnapshot(generation=generation, published_at=datetime.now(UTC), templates=list(specs))


def experiment(doc: dict[str, Any], **runtime: Any) -> ExperimentSpec:
    return ExperimentSpec(document=msgspec.convert(doc, ExperimentDoc), runtime=ExperimentRuntime(**runtime))


def experiments(*specs: ExperimentSpec, generation: int = 1) -> ExperimentsSnapshot:
    return ExperimentsSnapshot(generation=generation, published_at=datetime.now(UTC), experiments=list(specs))
