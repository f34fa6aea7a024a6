"""Wire types of the prompts API: camelCase envelopes around the documents, which keep the YAML's shape.

A template or experiment ``document`` is exactly what the gateway YAML's ``prompts:`` section holds
(``policies.prompts.documents``: snake_case, unknown fields rejected), so an entry can move between the
file and the API unchanged; the fields around it (``expectedVersion``, ``createdAt``, …) are camelCase
like the rest of the admin API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from adapters.adminapi import MAX_VERSION
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, ExperimentState, TemplateDoc

__all__ = [
    "Experiment",
    "ExperimentCreate",
    "ExperimentEvent",
    "ExperimentUpdate",
    "Source",
    "Template",
    "TemplateCreate",
    "TemplateUpdate",
    "TemplateVersion",
]

Source = Literal["api", "config"]
Counter = Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)]

# What the service refuses beyond the schema: a 422 (the OpenAPI finisher declares it with this text).
_TEMPLATE_RULES = ("variable names that repeat; message content that is not a valid Jinja2 template "
                   "(data.errors names the message); on PUT, a document.name other than the path's")
_EXPERIMENT_RULES = ("variant names that repeat; a control naming no variant; sampling params a variant may not "
                     "set; weights all 0; a guardrail without max or max_ratio_to_control; adaptive.min_share too "
                     "large for the variants; a variant template that names no stored template or version; a "
                     "document.state other than draft (use start, pause, stop); on PUT, a document.id other "
                     "than the path's")


class _Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    pass


class TemplateCreate(_Request, frozen=True):
    __semantic_rules__: ClassVar[str] = _TEMPLATE_RULES

    document: TemplateDoc


class TemplateUpdate(_Request, frozen=True):
    """Full replacement: the next version, unless the document is unchanged. ``expectedVersion`` guards
    against lost updates (409 when the latest version is another)."""

    __semantic_rules__: ClassVar[str] = _TEMPLATE_RULES

    document: TemplateDoc
    expected_version: Counter | None = None


class ExperimentCreate(_Request, frozen=True):
    __semantic_rules__: ClassVar[str] = _EXPERIMENT_RULES

    document: ExperimentDoc


class ExperimentUpdate(_Request, frozen=True):
    """A new declaration (the next revision, unless unchanged); the runtime state is kept.
    ``expectedRevision`` guards against lost updates."""

    __semantic_rules__: ClassVar[str] = _EXPERIMENT_RULES

    document: ExperimentDoc
    expected_revision: Counter | None = None


class Template(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A template's latest version. ``source: config``: owned by the gateway YAML, read-only here."""

    name: str
    version: int
    source: Source
    document: TemplateDoc
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class TemplateVersion(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    version: int
    source: Source
    document: TemplateDoc
    created_at: datetime
    created_by: str


class Experiment(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The declaration (``document``, bumping ``revision``) and what changes while it runs (``runtime``:
    state, adaptive weights, stopped variants, winner, rollback). ``state`` repeats ``runtime.state``."""

    id: str
    route: str
    state: ExperimentState
    revision: int
    source: Source
    document: ExperimentDoc
    runtime: ExperimentRuntime
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class ExperimentEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One entry of an experiment's history; ``actor`` is a key id, ``config`` or ``supervisor``."""

    id: int
    experiment_id: str
    at: datetime
    kind: str
    actor: str
    message: str
    detail: dict[str, Any]
