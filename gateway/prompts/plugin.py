"""The ``prompts`` built-in plug-in: prompt templates and A/B experiments, in ``on_request``.

Per request, for the route asked for (``ctx.route_name or ctx.model``; ``/serve/{route}/chat`` names
it in the path):

1. An experiment live on the route assigns the request to a variant (``policies.prompts.assignment``:
   sticky by a stable hash of the experiment id and the request's unit, so the same on every replica
   and after a restart, with no store read). The variant applies its template (``name`` = latest,
   ``name@3`` pinned; none: the route's own), its ``route`` (a redirect: ``ctx.route_name``, before
   ``limits`` prices the route), its ``params`` (set on the body of chat and completions requests)
   and its ``variables``. A request in the experiment is tagged (``ctx.experiment``, ``ctx.variant``,
   the usage record, ``x-llmops-experiment`` / ``x-llmops-variant``).
2. Otherwise the route's own template applies, if it has one.
3. Templates render on the chat endpoint: their messages go before the request's own. Variables,
   each layer over the one before: the template's defaults, the route's ``template_variables``, the
   variant's ``variables``, the request's (``llmops.variables`` in the body, the SDK's ``extra_body``;
   or OpenAI's ``metadata``, its string values whose keys the template declares; ``llmops`` wins).
   A missing or ill-typed variable is a 400 ``invalid_request_error`` whose ``param`` names it.
   The version rendered is in ``x-llmops-template-version`` (``name@version``).

Always: the ``llmops`` key is removed from the body before it goes upstream, and the request's
episode (``llmops.episode_id``, else ``llmops.session_id``, else the ``x-llmops-episode-id`` or
``x-llmops-session-id`` header; a string of at most 128 characters) is ``ctx.episode_id``, so the
usage record carries it and feedback can name it.

Cost when idle (no template and no experiment on any route): a dictionary lookup for ``llmops``,
one pass over the header names, two identity checks of the snapshots and one dictionary lookup.
What applies is indexed once per snapshot pair (``gateway.prompts.index``; which source wins is
documented there).
"""

from __future__ import annotations

import time
from operator import itemgetter
from typing import Any, Final

from adapters.errors import GatewayError, InvalidRequest
from adapters.gateway_plugins import PluginHost, RequestContext
from adapters.snapshots import ControlSnapshots
from gateway.config import ConfigError, GatewayCfg
from gateway.prompts.index import Arm, Compiled, Index, RoutePlan, Template
from policies.prompts.assignment import unit_of
from policies.prompts.documents import ExperimentDoc, PromptsCfg, semantic_errors
from policies.prompts.templates import TemplateError, VariableError, compile_template, merge_variables

__all__ = ["MAX_EPISODE_ID", "PromptsPlugin", "TemplateNotFound"]

MAX_EPISODE_ID: Final = 128  # usage_records.episode_id's width
_EPISODE_HEADER = b"x-llmops-episode-id"
_SESSION_HEADER = b"x-llmops-session-id"
_EPISODE_HEADERS = frozenset({_EPISODE_HEADER, _SESSION_HEADER})
_name = itemgetter(0)
_NO_HEADERS: Final[dict[str, str]] = {}  # a unit read from the body or the key needs no decoded headers
_PARAMS_ON = frozenset({"chat", "completions"})  # endpoints whose bodies take sampling parameters


class TemplateNotFound(GatewayError):
    """A route or variant names a template this gateway has not got (not published, or not compiling):
    the operator's configuration, not the client's request, so a 500 naming the template."""

    def __init__(self, route: str, ref: str) -> None:
        super().__init__(f"Route '{route}' uses prompt template '{ref}', which is not available",
                         code="template_not_found")


class PromptsPlugin:
    """Templates and experiments on the request path; see the module docstring."""

    failure = "closed"

    def __init__(self, *, host: PluginHost | None = None, config: GatewayCfg | None = None) -> None:
        prompts = config.prompts if config is not None else PromptsCfg()
        self._prompts = prompts
        self._routes = {r.name: (r.template, dict(r.template_variables))
                        for r in (config.routes if config is not None else ())}
        for doc in prompts.experiments:  # a route of its own even without a template
            self._routes.setdefault(doc.route, (None, {}))
        shared: dict[str, Any] = host.shared.setdefault("prompts", {}) if host is not None else {}
        self._compiled: Compiled = shared.setdefault("compiled", Compiled())  # kept across generations
        self._started: dict[str, tuple[ExperimentDoc, float]] = shared.setdefault("started", {})
        self._yaml = self._check(prompts)
        self._idx = self._prev = Index(None, None, self._routes, prompts, self._yaml, self._compiled, self._started)

    def _check(self, prompts: PromptsCfg) -> dict[str, Template]:
        """The YAML's documents: semantic rules and Jinja syntax, at load (a ``ConfigError`` naming the key)."""
        out: dict[str, Template] = {}
        for i, doc in enumerate(prompts.templates):
            for path, message in semantic_errors(doc):
                raise ConfigError(f"$.prompts.templates[{i}]{path[1:]}: {message}")
            try:
                out[doc.name] = Template(compile_template(doc, 1))
            except TemplateError as exc:
                raise ConfigError(f"$.prompts.templates[{i}]{exc.path[1:]}: {exc.message}") from None
        for i, exp in enumerate(prompts.experiments):
            for path, message in semantic_errors(exp):
                raise ConfigError(f"$.prompts.experiments[{i}]{path[1:]}: {message}")
        return out

    # -- the index -----------------------------------------------------------------------------

    def _index(self, control: ControlSnapshots) -> Index:
        """The index of this request's snapshots: the current one, the previous one (requests that
        straddle a change), or a new one."""
        prev = self._prev
        if control.templates is prev.templates_from and control.experiments is prev.experiments_from:
            return prev
        idx = Index(control.templates, control.experiments, self._routes, self._prompts, self._yaml,
                    self._compiled, self._started)
        self._prev, self._idx = self._idx, idx
        return idx

    # -- the hook ------------------------------------------------------------------------------

    def on_request(self, ctx: RequestContext) -> None:
        body = ctx.body
        llm = body.get("llmops")
        if llm is not None:
            ctx.episode_id = _llmops_episode(ctx, llm)
        elif not _EPISODE_HEADERS.isdisjoint(map(_name, ctx.raw_headers)):
            ctx.episode_id = _header_episode(ctx)
        control = ctx.control
        idx = self._idx
        if control is not None and (control.templates is not idx.templates_from
                                    or control.experiments is not idx.experiments_from):
            idx = self._index(control)
        if idx.routes:
            plan = idx.routes.get(ctx.route_name or ctx.model)
            if plan is not None:
                self._apply(ctx, plan, llm)
        if llm is not None:
            del body["llmops"]

    def _apply(self, ctx: RequestContext, plan: RoutePlan, llm: dict[str, Any] | None) -> None:
        template, missing, variables = plan.template, plan.missing, plan.variables
        route = ctx.route_name or ctx.model
        exp = plan.experiment
        if exp is not None:
            p = ctx.principal
            unit = unit_of(exp.doc, ctx.body, ctx.headers if exp.headers else _NO_HEADERS,
                           p.key_id if p is not None else None)
            assigned = exp.assigner.assign(unit, time.time())
            if assigned is not None:
                arm: Arm = exp.arms[assigned.variant.name]
                template, missing, variables = arm.template, arm.missing, arm.variables
                if arm.route is not None:
                    ctx.route_name = arm.route
                if arm.params and ctx.endpoint in _PARAMS_ON:
                    ctx.body.update(arm.params)
                if assigned.tagged:
                    ctx.experiment, ctx.variant = exp.doc.id, assigned.variant.name
                    _headers(ctx, arm.headers)
        if ctx.endpoint != "chat":
            return  # templates are chat messages
        if missing is not None:
            raise TemplateNotFound(route, missing)
        if template is None:
            return
        given = _request_variables(ctx.body, llm, template)
        values = merge_variables(variables, given) if given else variables
        try:
            rendered = template.compiled.render(values)
        except VariableError as exc:
            raise InvalidRequest(f"Prompt {exc}", param=exc.variable,
                                 code="invalid_template_variable") from None
        except TemplateError as exc:  # a value the template cannot render (e.g. the sandbox refused it)
            raise InvalidRequest(f"Prompt {exc.message} ({exc.path})",
                                 param="llmops.variables", code="template_render_failed") from None
        messages = ctx.body.get("messages")
        ctx.body["messages"] = rendered + messages if isinstance(messages, list) else rendered
        _headers(ctx, [template.header])


def _headers(ctx: RequestContext, headers: list[tuple[bytes, bytes]]) -> None:
    """``ctx.add_response_header`` with names and values encoded once, at index time."""
    if ctx.response_headers is None:
        ctx.response_headers = list(headers)
    else:
        ctx.response_headers.extend(headers)


def _request_variables(body: dict[str, Any], llm: dict[str, Any] | None, template: Template) -> dict[str, Any]:
    """The request's own variables: ``metadata``'s string values the template declares, under
    ``llmops.variables``."""
    out: dict[str, Any] = {}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and template.variables:
        for name in template.variables:
            value = metadata.get(name)
            if isinstance(value, str):
                out[name] = value
    if llm is not None:
        given = llm.get("variables")
        if given is not None:
            if not isinstance(given, dict):
                raise InvalidRequest("'llmops.variables' must be an object of template variables",
                                     param="llmops.variables")
            out.update(given)
    return out


def _llmops_episode(ctx: RequestContext, llm: Any) -> str | None:
    """``llmops.episode_id``, else ``llmops.session_id``, else the headers'."""
    if not isinstance(llm, dict):
        raise InvalidRequest("'llmops' must be an object (variables, episode_id, session_id)", param="llmops")
    for field in ("episode_id", "session_id"):
        value = llm.get(field)
        if value is not None:
            return _checked(value, f"llmops.{field}")
    if _EPISODE_HEADERS.isdisjoint(map(_name, ctx.raw_headers)):
        return None
    return _header_episode(ctx)


def _header_episode(ctx: RequestContext) -> str | None:
    """``x-llmops-episode-id``, else ``x-llmops-session-id``. Callers first test whether either is there
    with ``_EPISODE_HEADERS.isdisjoint(map(_name, raw_headers))``: the same test in C, about half the
    instructions of this loop, for the requests (nearly all) that name neither."""
    episode = session = None
    for name, value in ctx.raw_headers:
        if name == _EPISODE_HEADER:
            episode = value
        elif name == _SESSION_HEADER:
            session = value
    if episode is not None:
        return _checked(episode.decode("latin-1"), _EPISODE_HEADER.decode())
    if session is not None:
        return _checked(session.decode("latin-1"), _SESSION_HEADER.decode())
    return None


def _checked(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_EPISODE_ID:
        raise InvalidRequest(f"'{where}' must be a non-empty string of at most {MAX_EPISODE_ID} characters",
                             param=where, code="invalid_episode_id")
    return value
