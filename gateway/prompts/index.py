"""What the ``prompts`` plug-in applies, indexed once per snapshot pair and config generation.

Sources, and which one wins (one rule, "the YAML wins by name"):

* **Templates.** The ``templates`` snapshot (``TemplateSpec``: each template's latest version and
  every pinned version a route or experiment names) and the YAML's ``prompts.templates``. A name
  the YAML declares renders the YAML's document as its latest version: its version number is the
  published one when the published latest holds the same document (the prompts module syncs the
  YAML into the store with ``source: config``), the next one while that sync has not landed yet,
  and 1 without any published version (no control plane: embedded, tests). ``name@N`` is always a
  published version (the YAML's own is ``@1`` when nothing is published under its name).
* **Experiments.** The ``experiments`` snapshot (``ExperimentSpec``: document and runtime state:
  rollback, winner, stopped variants, adaptive weights) wins by id: it is what lifecycle actions
  change. A YAML experiment not (yet) in it applies with its declared ``state``, started when this
  gateway first saw that declaration (the ramp's anchor).
* **Route templates.** The generation's routes: the YAML's ``template`` / ``template_variables``, or
  a store route's (a served endpoint's), a YAML route winning by name (``apply_routes``).

Templates compile on first use and stay compiled across snapshots (a version never changes), so a
new snapshot costs the request that first sees it a few dictionary builds, not a Jinja compile of
every template. The YAML's templates compile when the plug-in is built, so a broken one fails the
config load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from adapters.snapshots import ExperimentSpec, ExperimentsSnapshot, TemplateSpec, TemplatesSnapshot
from policies.prompts.assignment import Assigner
from policies.prompts.documents import (
    ExperimentDoc,
    ExperimentRuntime,
    PromptsCfg,
    TemplateDoc,
    parse_template_ref,
)
from policies.prompts.templates import CompiledTemplate, TemplateError, compile_template, merge_variables

__all__ = ["Arm", "Compiled", "Experiment", "Index", "RoutePlan", "Template", "experiment_priority"]

log = logging.getLogger("llmops.prompts")

_CACHE_MAX = 10_000  # compiled template versions kept across snapshots
TEMPLATE_HEADER = b"x-llmops-template-version"
EXPERIMENT_HEADER = b"x-llmops-experiment"
VARIANT_HEADER = b"x-llmops-variant"


class Template:
    """One compiled template version, ready for a request: its header, its declared variables."""

    __slots__ = ("compiled", "header", "name", "variables", "version")

    def __init__(self, compiled: CompiledTemplate) -> None:
        self.name, self.version, self.compiled = compiled.name, compiled.version, compiled
        self.variables = compiled.variables
        self.header = (TEMPLATE_HEADER, _latin1(compiled.ref))


class Compiled:
    """Compiled template versions by (name, version), kept across snapshots: a version never changes,
    except the YAML-only ``@1`` of a template edited in the YAML (checked by document equality)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], tuple[TemplateDoc, Template]] = {}

    def get(self, name: str, version: int, doc: TemplateDoc) -> Template:
        key = (name, version)
        hit = self._cache.get(key)
        if hit is not None and (hit[0] is doc or hit[0] == doc):
            return hit[1]
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        found = Template(compile_template(doc, version))
        self._cache[key] = (doc, found)
        return found


class Arm:
    """One variant as applied: the template to render (its own, else the route's), the variables
    under the request's (route's, then the variant's), the route it redirects to and its params."""

    __slots__ = ("headers", "missing", "params", "route", "template", "variables")

    def __init__(self, template: Template | None, missing: str | None, variables: dict[str, Any],
                 route: str | None, params: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
        self.template, self.missing, self.variables = template, missing, variables
        self.route, self.params, self.headers = route, params, headers


class Experiment:
    """A route's experiment: its document, its assigner and its arms by variant name. ``headers``: its
    unit is read from the request headers (so they are decoded for it)."""

    __slots__ = ("arms", "assigner", "doc", "headers")

    def __init__(self, doc: ExperimentDoc, assigner: Assigner, arms: dict[str, Arm]) -> None:
        self.doc, self.assigner, self.arms = doc, assigner, arms
        self.headers = doc.unit not in ("user", "key")


class RoutePlan:
    """What a request to one route gets: its template and variables, and its experiment if any."""

    __slots__ = ("experiment", "missing", "template", "variables")

    def __init__(self, template: Template | None, missing: str | None, variables: dict[str, Any],
                 experiment: Experiment | None) -> None:
        self.template, self.missing, self.variables, self.experiment = template, missing, variables, experiment


def experiment_priority(spec: ExperimentSpec) -> tuple[int, float]:
    """Which of several experiments on one route applies: a running one, then one rolled back or with
    a winner (everyone gets one variant, counted), then a paused or stopped one (control, uncounted:
    ``policies.prompts.assignment``), the most recently started first; a draft (rank 0) never applies."""
    rt = spec.runtime
    if rt.state == "running":
        rank = 3
    elif rt.rolled_back or rt.winner is not None:
        rank = 2
    else:
        rank = 1 if rt.state != "draft" else 0
    return rank, rt.started_at or 0.0


class Index:
    """One (templates, experiments) snapshot pair with one generation's config, resolved."""

    __slots__ = ("experiments", "experiments_from", "missing", "routes", "templates", "templates_from")

    def __init__(self, templates: TemplatesSnapshot | None, experiments: ExperimentsSnapshot | None,
                 routes: Mapping[str, tuple[str | None, dict[str, Any]]], prompts: PromptsCfg,
                 yaml_templates: Mapping[str, Template], compiled: Compiled,
                 started: dict[str, tuple[ExperimentDoc, float]]) -> None:
        self.templates_from, self.experiments_from = templates, experiments  # the snapshots it indexes
        self.missing: set[str] = set()
        self.templates = _TemplateRefs(templates.templates if templates is not None else (), prompts.templates,
                                       yaml_templates, compiled)
        specs = {s.document.id: s for s in experiments.experiments} if experiments is not None else {}
        for doc in prompts.experiments:
            if doc.id not in specs:  # the snapshot wins by id; a YAML one not published yet applies as declared
                specs[doc.id] = ExperimentSpec(document=doc, source="config", runtime=ExperimentRuntime(
                    state=doc.state, started_at=_started(started, doc)))
        by_route: dict[str, ExperimentSpec] = {}
        for spec in specs.values():
            if experiment_priority(spec)[0] == 0:
                continue  # a draft: the route serves as if it had none
            other = by_route.get(spec.document.route)
            if other is None or experiment_priority(spec) > experiment_priority(other):
                if other is not None:
                    log.warning("experiments %s and %s are both live on route %r: %s applies",
                                other.document.id, spec.document.id, spec.document.route, spec.document.id)
                by_route[spec.document.route] = spec
        self.experiments = by_route
        self.routes: dict[str, RoutePlan] = {}
        for name, (ref, variables) in routes.items():
            if ref is not None or name in by_route:
                self.routes[name] = self._plan(name, ref, variables)
        for name in by_route.keys() - self.routes.keys():  # should not happen: routes() covers them
            self.routes[name] = self._plan(name, None, {})
        if self.missing:
            log.warning("prompt templates named by routes or experiments but not published: %s",
                        ", ".join(sorted(self.missing)))

    def _plan(self, name: str, ref: str | None, variables: dict[str, Any]) -> RoutePlan:
        template = self._resolve(ref)
        missing = ref if ref is not None and template is None else None
        spec = self.experiments.get(name)
        experiment = None
        if spec is not None:
            arms = {}
            for v in spec.document.variants:
                own = self._resolve(v.template) if v.template is not None else None
                arm_missing = v.template if v.template is not None and own is None else missing
                arms[v.name] = Arm(own or template, arm_missing, merge_variables(variables, v.variables),
                                   v.route, dict(v.params), [(EXPERIMENT_HEADER, _latin1(spec.document.id)),
                                                             (VARIANT_HEADER, _latin1(v.name))])
            experiment = Experiment(spec.document, Assigner(spec), arms)
        return RoutePlan(template, missing, dict(variables), experiment)

    def _resolve(self, ref: str | None) -> Template | None:
        if ref is None:
            return None
        found = self.templates.get(ref)
        if found is None:
            self.missing.add(ref)
        return found


class _TemplateRefs:
    """Template refs (``name``: the latest; ``name@N``) to compiled versions, resolved on first use."""

    __slots__ = ("_compiled", "_found", "_latest", "_pinned", "_yaml")

    def __init__(self, specs: Iterable[TemplateSpec], yaml_docs: Iterable[TemplateDoc],
                 yaml_templates: Mapping[str, Template], compiled: Compiled) -> None:
        self._compiled = compiled
        self._pinned: dict[tuple[str, int], TemplateSpec] = {}
        self._latest: dict[str, TemplateSpec] = {}
        for s in specs:
            self._pinned[(s.name, s.version)] = s
            if s.latest:
                self._latest[s.name] = s
        self._yaml: dict[str, tuple[TemplateDoc, int]] = {}
        for doc in yaml_docs:
            published = self._latest.get(doc.name)
            if published is None:
                version = 1
            elif published.document == doc:
                version = published.version
            else:  # the YAML changed and the prompts module has not published the new version yet
                version = published.version + 1
            self._yaml[doc.name] = (doc, version)
        self._found: dict[str, Template | None] = {}
        for name, template in yaml_templates.items():  # compiled at build: reused when the version matches
            entry = self._yaml.get(name)
            if entry is not None and entry[1] == template.version:
                self._found[name] = template

    def get(self, ref: str) -> Template | None:
        if ref in self._found:
            return self._found[ref]
        try:
            found = self._get(ref)
        except TemplateError as exc:  # validated when stored, so not expected: unusable, like a missing one
            log.error("prompt template %s does not compile (%s): requests that need it fail", ref, exc)
            found = None
        self._found[ref] = found
        return found

    def _get(self, ref: str) -> Template | None:
        name, version = parse_template_ref(ref)
        found: Template | None = None
        own = self._yaml.get(name)
        if version is None:
            if own is not None:
                found = self._compiled.get(name, own[1], own[0])
            elif (spec := self._latest.get(name)) is not None:
                found = self._compiled.get(name, spec.version, spec.document)
        elif (spec := self._pinned.get((name, version))) is not None:
            found = self._compiled.get(name, version, spec.document)
        elif own is not None and own[1] == version:
            found = self._compiled.get(name, version, own[0])
        return found


def _started(started: dict[str, tuple[ExperimentDoc, float]], doc: ExperimentDoc) -> float:
    """When this gateway first saw this declaration of a YAML experiment (kept across reloads)."""
    hit = started.get(doc.id)
    if hit is not None and hit[0] == doc:
        return hit[1]
    at = time.time()
    started[doc.id] = (doc, at)
    return at


def _latin1(text: str) -> bytes:
    return text.encode("latin-1", "replace")
