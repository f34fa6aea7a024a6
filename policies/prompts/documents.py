"""Prompt templates and A/B experiments: the documents, typed once for both sides.

The prompts control module validates and stores them (admin REST, or ``prompts:`` in the gateway
YAML, synced into the store on start and on every reload); the gateway's ``prompts`` plug-in reads
them from the ``templates`` and ``experiments`` snapshots. Shape errors are msgspec's, naming the
field (``$.variants[1].weight``); ``semantic_errors`` adds the cross-field rules with the same paths.

Which source wins: a template or experiment declared in the YAML is owned by the YAML (its
``source`` is ``config``): the admin API reads it but refuses to edit or delete it (409), and a
reload that changes its declaration writes a new version (templates) or revision (experiments).
Lifecycle actions (start, pause, stop, rollback) work on both: they change the experiment's
runtime state, not its declaration. A YAML declaration whose ``state`` differs from the stored
one is applied only when the declaration itself changed (so a reload does not undo a rollback).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "ALLOWED_PARAMS",
    "AdaptiveDoc",
    "ExperimentDoc",
    "ExperimentMetric",
    "ExperimentRuntime",
    "ExperimentState",
    "GuardrailDoc",
    "MessageTemplate",
    "PromptsCfg",
    "RampDoc",
    "TemplateDoc",
    "TemplateRef",
    "VariableDoc",
    "VariantDoc",
    "parse_template_ref",
    "semantic_errors",
]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
RouteName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
TemplateRef = Annotated[str, msgspec.Meta(
    min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(@[1-9][0-9]{0,8})?$",
    description="a template name (its latest version) or name@version, e.g. support@3")]
Weight = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]

# Sampling parameters a variant may set on the request body (anything else is refused at load).
ALLOWED_PARAMS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "seed", "stop", "n", "logit_bias", "top_k", "min_p", "repetition_penalty", "reasoning_effort",
})
ExperimentState = Literal["draft", "running", "paused", "stopped"]
ExperimentMetric = Literal["feedback_score", "feedback_rate", "error_rate", "latency_p50_s",
                           "cost_per_request_usd"]
"""What ``adaptive`` optimises and the winner is judged on: ``feedback_score`` (mean score),
``feedback_rate`` (share of requests with a positive label), higher is better; the others, lower is better."""


class _Doc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


# -- templates -------------------------------------------------------------------------------------

class VariableDoc(_Doc, frozen=True):
    """A template variable. With no ``default`` it is required: a request without it is a 400 naming it.
    ``type`` is checked on every value (a string "3" is not an integer); ``max_length`` bounds strings."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    type: Literal["string", "integer", "number", "boolean", "list", "object"] = "string"
    default: Any = None  # None: required (use `required: false` for an optional variable without default)
    required: bool | None = None  # None: required when there is no default
    max_length: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    description: str = ""


class MessageTemplate(_Doc, frozen=True):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, msgspec.Meta(max_length=200_000)]  # Jinja2, rendered in a SandboxedEnvironment


class TemplateDoc(_Doc, frozen=True):
    """A named template; every change is a new version (1, 2, ...). Its rendered ``messages`` go before
    the request's own messages (a system message of the template first of all)."""

    name: Name
    messages: Annotated[list[MessageTemplate], msgspec.Meta(min_length=1, max_length=50)]
    variables: Annotated[list[VariableDoc], msgspec.Meta(max_length=100)] = []
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""


def parse_template_ref(ref: str) -> tuple[str, int | None]:
    """``"support@3"`` -> ``("support", 3)``; ``"support"`` -> ``("support", None)`` (the latest)."""
    name, _, version = ref.partition("@")
    return name, int(version) if version else None


# -- experiments -----------------------------------------------------------------------------------

class VariantDoc(_Doc, frozen=True):
    """One arm: a template version and/or a target route (a route per model: the catalog publishes one
    for each approved model) and/or sampling parameters, with a relative weight."""

    name: Name
    weight: Weight = 1.0
    template: TemplateRef | None = None  # None: the route's own template (if any)
    route: RouteName | None = None  # None: the experiment's route
    params: dict[str, Any] = {}  # keys from ALLOWED_PARAMS; set on the request body
    variables: dict[str, Any] = {}  # template variables this arm sets (over the route's, under the request's)


class RampDoc(_Doc, frozen=True):
    """Allocation grows linearly from ``start_allocation`` to the experiment's ``allocation`` over
    ``duration_s`` after the experiment starts. Units already in stay in (a threshold on a fixed hash)."""

    start_allocation: Share = 0.05
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=90 * 86400)] = 3600.0


class GuardrailDoc(_Doc, frozen=True):
    """A variant whose ``metric`` exceeds ``max`` (absolute) or ``max_ratio_to_control`` x control's,
    once it has ``min_requests`` requests, is stopped automatically (its traffic goes to the others)."""

    metric: Literal["error_rate", "latency_p95_s", "cost_per_request_usd"]
    max: Annotated[float, msgspec.Meta(ge=0)] | None = None
    max_ratio_to_control: Annotated[float, msgspec.Meta(gt=0)] | None = None
    min_requests: Annotated[int, msgspec.Meta(ge=1)] = 100


class AdaptiveDoc(_Doc, frozen=True):
    """Shift weights toward the better variants on ``ExperimentDoc.metric`` (Thompson sampling), never
    below ``min_share`` each; declare a winner when P(best) >= the experiment's ``confidence``
    (track-and-stop) after ``min_requests`` per variant. A declared winner stays until a restart."""

    algorithm: Literal["thompson", "track_and_stop"] = "thompson"
    min_share: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.05
    min_requests: Annotated[int, msgspec.Meta(ge=1)] = 200
    interval_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0


class ExperimentDoc(_Doc, frozen=True):
    """An experiment on ``route``: ``allocation`` of its traffic split over ``variants`` by weight.

    ``unit`` names what keeps a request in one variant (sticky by a stable hash of experiment id and
    unit): ``user`` (the body's ``user``), ``session`` or ``episode`` (``llmops.session_id`` /
    ``llmops.episode_id`` in the body, or the ``x-llmops-session-id`` / ``x-llmops-episode-id``
    header), ``key`` (the API key's id) or ``header:<name>``. Requests without one are assigned at random.
    """

    id: Name
    route: RouteName
    variants: Annotated[list[VariantDoc], msgspec.Meta(min_length=2, max_length=20)]
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    control: Name | None = None  # the control variant's name; None: the first variant
    allocation: Share = 1.0
    unit: Annotated[str, msgspec.Meta(pattern=r"^(user|session|episode|key|header:[A-Za-z0-9-]{1,64})$")] = "user"
    ramp: RampDoc | None = None
    metric: ExperimentMetric = "feedback_score"
    confidence: Annotated[float, msgspec.Meta(gt=0.5, lt=1)] = 0.95
    min_effect: Annotated[float, msgspec.Meta(gt=0)] | None = None  # for sample-size guidance, in metric units
    guardrails: Annotated[list[GuardrailDoc], msgspec.Meta(max_length=10)] = []
    adaptive: AdaptiveDoc | None = None
    state: ExperimentState = "draft"  # the YAML's initial state; lifecycle actions change it at runtime

    @property
    def control_variant(self) -> str:
        return self.control or self.variants[0].name


class ExperimentRuntime(_Doc, frozen=True):
    """What changes while an experiment runs (the control module writes it; the gateway obeys it).

    ``weights``: the adaptive allocation's current weights by variant (empty: the document's);
    ``stopped_variants``: arms a guardrail (or an operator) stopped, given no new traffic;
    ``winner``: once set, every request of the route goes to it, until a restart clears it;
    ``rolled_back``: all traffic to the control variant (set by rollback; cleared by start).
    ``started_at`` (epoch seconds) anchors the ramp; ``revision`` counts declaration changes."""

    state: ExperimentState = "draft"
    started_at: float | None = None
    weights: dict[str, float] = {}
    stopped_variants: list[str] = []
    winner: str | None = None
    rolled_back: bool = False
    revision: int = 1


class PromptsCfg(_Doc, frozen=True):
    """The gateway YAML's ``prompts:`` section (GitOps): templates and experiments owned by the config."""

    templates: list[TemplateDoc] = []
    experiments: list[ExperimentDoc] = []


_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def semantic_errors(doc: TemplateDoc | ExperimentDoc) -> list[tuple[str, str]]:
    """(path, message) for rules msgspec cannot state: distinct names, a known control variant, allowed
    params, a positive total weight, guardrails with a threshold. Jinja syntax is checked by compiling
    (``policies.prompts.templates.compile_template``), not here."""
    errors: list[tuple[str, str]] = []
    if isinstance(doc, TemplateDoc):
        seen: set[str] = set()
        for i, var in enumerate(doc.variables):
            if var.name in seen:
                errors.append((f"$.variables[{i}].name", f"duplicate variable {var.name!r}"))
            seen.add(var.name)
        return errors
    names = [v.name for v in doc.variants]
    for i, name in enumerate(names):
        if name in names[:i]:
            errors.append((f"$.variants[{i}].name", f"duplicate variant {name!r}"))
    if doc.control is not None and doc.control not in names:
        errors.append(("$.control", f"no variant named {doc.control!r}"))
    if sum(v.weight for v in doc.variants) <= 0:
        errors.append(("$.variants", "the weights must not all be 0"))
    for i, v in enumerate(doc.variants):
        for key in sorted(set(v.params) - ALLOWED_PARAMS):
            errors.append((f"$.variants[{i}].params.{key}", f"not a sampling parameter a variant may set "
                                                            f"(allowed: {', '.join(sorted(ALLOWED_PARAMS))})"))
        for key in v.variables:
            if not _VAR_NAME.match(key):
                errors.append((f"$.variants[{i}].variables.{key}", "not a variable name"))
    for i, g in enumerate(doc.guardrails):
        if g.max is None and g.max_ratio_to_control is None:
            errors.append((f"$.guardrails[{i}]", "set max and/or max_ratio_to_control"))
    if doc.adaptive is not None and doc.adaptive.min_share * len(doc.variants) > 1:
        errors.append(("$.adaptive.min_share", "min_share x number of variants exceeds 1"))
    return errors
