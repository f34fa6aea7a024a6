"""Prompt templates, compiled once and rendered per request in a Jinja2 sandbox. Pure: no I/O, no clock.

``compile_template`` does all the work a template allows ahead of time: it parses and compiles every
message once (so a request never compiles), refuses a variable the template uses but does not declare,
type-checks the defaults, and renders a message that uses no variable right away, so a template
without variables renders by copying precomputed messages. ``CompiledTemplate.render`` then only
checks the values (required, type, ``max_length``) and runs the compiled code.

Errors, all ``ValueError``::

    ValueError
     ├── TemplateError      .path, .message: the template does not compile (syntax, an undeclared
     │    │                  variable, a default of the wrong type); the control module's 400/409
     │    └── RenderError   .path, .template: it compiled, but failed on these values (a sandbox
     │                       refusal, a range too big, output over the cap); the gateway's 400
     └── VariableError      .variable, .template: a value is missing, of the wrong type or too long;
                             the gateway's 400, naming the variable

Bounds: the sandbox (``ImmutableSandboxedEnvironment``) refuses attribute access to internals
(``''.__class__``) and mutation of values; on top of it the output of one render is capped at
``MAX_OUTPUT_CHARS`` (checked as it is produced, so a loop cannot build it first), ``range`` has a
budget of ``MAX_RANGE_ITEMS`` items per render (nested loops included), and ``*``, ``**``, ``+``,
``%``, calls and filters refuse a size argument or a result over the cap. CPU time is not bounded
(Jinja has no hook for it): a template's author can still write a slow loop over a long list.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import jinja2
from jinja2 import meta, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from policies.prompts.documents import TemplateDoc, VariableDoc, semantic_errors

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_RANGE_ITEMS",
    "CompiledTemplate",
    "RenderError",
    "TemplateError",
    "VariableError",
    "compile_template",
    "merge_variables",
]

MAX_OUTPUT_CHARS: Final = 1 << 20
"""Characters one render may produce over all its messages (about 1 MiB of ASCII)."""
MAX_RANGE_ITEMS: Final = 100_000
"""Items ``range`` may yield over one render, all loops together."""
_MAX_POW_BITS: Final = 1 << 16
_WIDTH_METHODS: Final = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})  # str methods
_WIDTH_FILTERS: Final = frozenset({"center", "indent", "wordwrap", "slice", "batch"})


class TemplateError(ValueError):
    """The template does not compile; ``path`` names where (``$.messages[1].content``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class RenderError(TemplateError):
    """The template failed on the values of one request; ``path`` names the message, ``template`` its ref."""

    def __init__(self, template: str, path: str, message: str) -> None:
        super().__init__(path, f"template {template} failed to render: {message}")
        self.template = template
        self.reason = message


class VariableError(ValueError):
    """A variable's value is missing, of the wrong type or too long; ``variable`` names it."""

    def __init__(self, template: str, variable: str, message: str) -> None:
        super().__init__(f"template {template}: variable {variable!r} {message}")
        self.template = template
        self.variable = variable


# -- the sandbox ---------------------------------------------------------------------------------

def _check_size_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A width or count over the output cap can only build something the cap would refuse: refuse it
    before it is built. Only for the arguments that are widths or counts: a large number is fine to print."""
    for value in (*args, *kwargs.values()):
        if type(value) is int and abs(value) > MAX_OUTPUT_CHARS:
            raise SecurityError(f"argument {value} is over the output limit of {MAX_OUTPUT_CHARS}")


def _check_result(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"a value of {len(value)} items is over the output limit of {MAX_OUTPUT_CHARS}")
    return value


class _PromptSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus size checks on the operators, calls and filters that can amplify.

    Intercepting the operators also keeps Jinja's optimizer from folding ``{{ "a" * 10**10 }}`` at
    compile time (it folds only what the sandbox does not intercept)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and type(n) is int and len(seq) * n > MAX_OUTPUT_CHARS:
                    raise SecurityError(f"repeating {len(seq)} items {n} times is over the output limit")
        elif operator == "**" and type(left) is int and type(right) is int and abs(left) > 1:
            if left.bit_length() * right > _MAX_POW_BITS:
                raise SecurityError(f"{left} ** {right} is too large")
        elif operator == "%" and isinstance(left, str) and "*" in left:  # "%*d" takes its width from the args
            _check_size_args(right if isinstance(right, tuple) else (right,), {})
        return _check_result(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(__obj, "__name__", None) in _WIDTH_METHODS and isinstance(getattr(__obj, "__self__", None), str):
            _check_size_args(args, kwargs)
        return _check_result(super().call(__context, __obj, *args, **kwargs))


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Check a filter's result and, for one that takes a width or count, its arguments after the value
    (and after the context or environment Jinja may pass first)."""
    skip = 2 if hasattr(func, "jinja_pass_arg") else 1
    sized = name in _WIDTH_FILTERS

    @functools.wraps(func)  # copies jinja_pass_arg, so Jinja still passes the context/environment
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if sized:
            _check_size_args(args[skip:], kwargs)
        return _check_result(func(*args, **kwargs))

    return bounded


@pass_context
def _range(context: Context, *args: int) -> range:
    """``range`` with one budget per render, so nested loops cannot multiply their way past it."""
    items = range(*args)
    budget: list[int] = getattr(context, "_llmops_range_budget", [MAX_RANGE_ITEMS])
    budget[0] -= len(items)
    if budget[0] < 0:
        raise OverflowError(f"range: more than {MAX_RANGE_ITEMS} items in one render")
    return items


def _environment() -> _PromptSandbox:
    # Autoescape off: prompts are plain text, not HTML. StrictUndefined: a typo fails, never renders "".
    # keep_trailing_newline off: a YAML block scalar (content: |) ends with a newline nobody meant to send.
    env = _PromptSandbox(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    env.globals = {"range": _range, "dict": dict, "namespace": env.globals["namespace"],
                   "cycler": env.globals["cycler"], "joiner": env.globals["joiner"]}  # no lipsum: random text
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    return env


_ENV: Final = _environment()
_GLOBALS: Final = dict(_ENV.globals)
_UNSUPPORTED: Final = {nodes.Block: "{% block %}", nodes.Extends: "{% extends %}", nodes.Include: "{% include %}",
                       nodes.Import: "{% import %}", nodes.FromImport: "{% from ... import %}"}


# -- variables -----------------------------------------------------------------------------------

def _json_type(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
             tuple: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), "an object" if isinstance(value, Mapping) else type(value).__name__)


def _is_number(v: Any) -> bool:
    return type(v) is int or (type(v) is float and math.isfinite(v))


_CHECKS: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "string": (lambda v: type(v) is str, "a string"),
    "integer": (lambda v: type(v) is int, "an integer"),  # not bool: True is no count
    "number": (_is_number, "a finite number"),
    "boolean": (lambda v: type(v) is bool, "a boolean"),
    "list": (lambda v: type(v) is list or type(v) is tuple, "a list"),
    "object": (lambda v: isinstance(v, Mapping), "an object"),
}


def _type_problem(var: VariableDoc, value: Any) -> str | None:
    check, expected = _CHECKS[var.type]
    if not check(value):
        return f"must be {expected}, not {_json_type(value)}"
    if var.max_length is not None and type(value) is str and len(value) > var.max_length:
        return f"is longer than {var.max_length} characters ({len(value)})"
    return None


def _required(var: VariableDoc) -> bool:
    return var.required if var.required is not None else var.default is None


def merge_variables(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge variable layers, later ones winning (route config < variant < request). A ``None`` value
    counts as not given, so a lower layer (or the template's default) shows through."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        if None in layer.values():  # rare: a None must not hide what lies under it
            merged.update((k, v) for k, v in layer.items() if v is not None)
        else:
            merged.update(layer)
    return merged


# -- compiled templates --------------------------------------------------------------------------

class CompiledTemplate:
    """One template version, ready to render: built by ``compile_template``, immutable, shared by requests."""

    __slots__ = ("_dynamic", "_messages", "_static", "_static_chars", "_vars",
                 "doc", "name", "ref", "variables", "version")

    def __init__(self, doc: TemplateDoc, version: int,
                 messages: tuple[tuple[str, jinja2.Template | None, str], ...]) -> None:
        self.doc = doc
        self.name = doc.name
        self.version = version
        self.ref = f"{doc.name}@{version}"
        self.variables: tuple[str, ...] = tuple(v.name for v in doc.variables)
        # (name, default, required, type check, max_length, doc): flat, so bind does no attribute lookups
        self._vars = tuple((v.name, v.default, _required(v), _CHECKS[v.type][0], v.max_length, v)
                           for v in doc.variables)
        self._messages = messages
        self._static_chars = sum(len(text) for _, t, text in messages if t is None)
        self._dynamic = any(t is not None for _, t, _ in messages)  # False: all rendered at compile time
        self._static = tuple({"role": role, "content": text} for role, _, text in messages)

    def __repr__(self) -> str:
        return f"<CompiledTemplate {self.ref}>"

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The declared variables' values (``values`` over the defaults), checked; extra names are ignored
        (a route's variables may serve several templates). An optional variable without value is None."""
        bound: dict[str, Any] = {}
        for name, default, required, check, max_length, var in self._vars:
            value = values.get(name)
            if value is None:
                value = default
                if value is None:
                    if required:
                        raise VariableError(self.ref, name, "is required")
                    bound[name] = None
                    continue
            if not check(value) or (max_length is not None and type(value) is str and len(value) > max_length):
                raise VariableError(self.ref, name, _type_problem(var, value) or "is not valid")
            bound[name] = value
        return bound

    def render(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages (``[{"role", "content"}]``) for these values (merge the layers first with
        ``merge_variables``). Raises VariableError or RenderError; never anything else."""
        if not self._dynamic:
            if self._vars:  # declared but unused: still checked, so a request gets the same 400 either way
                self.bind(values)
            return [dict(m) for m in self._static]
        context = _context({**_GLOBALS, **self.bind(values)})
        room = MAX_OUTPUT_CHARS - self._static_chars
        out: list[dict[str, str]] = []
        for i, (role, template, text) in enumerate(self._messages):
            if template is not None:
                text = _run(template, context, room, self.ref, i)
                room -= len(text)
            out.append({"role": role, "content": text})
        return out


def _context(parent: dict[str, Any]) -> Context:
    """One context for all the messages of a render, made directly (``Template.new_context`` costs
    twice as much, merging globals we already merged): ``_run`` clears what a message assigns, and
    messages have no blocks, so each sees only the values."""
    context = _ENV.context_class(_ENV, parent, None, {})
    context._llmops_range_budget = [MAX_RANGE_ITEMS]  # type: ignore[attr-defined]  # read by _range
    return context


def _run(template: jinja2.Template, context: Context, room: int, ref: str, i: int) -> str:
    """Render one message, stopping as soon as the output passes ``room`` characters."""
    path = f"$.messages[{i}].content"
    parts: list[str] = []
    try:
        chunks: Iterator[str] = template.root_render_func(context)
        for chunk in chunks:
            room -= len(chunk)
            if room < 0:
                raise RenderError(ref, path, f"the output is over the limit of {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
    except RenderError:
        raise
    except jinja2.UndefinedError as exc:
        raise RenderError(ref, path, f"{exc.message} (a value lacks what the template reads)") from None
    except Exception as exc:  # converted: a template's runtime failure is the request's 400, never a traceback
        raise RenderError(ref, path, f"{type(exc).__name__}: {exc}") from None
    finally:
        if context.vars:  # a top-level {% set %} or macro must not leak into the next message
            context.vars.clear()
            context.exported_vars.clear()
    return "".join(parts)


def compile_template(doc: TemplateDoc, version: int) -> CompiledTemplate:
    """Compile every message of ``doc`` once; raise TemplateError naming the first problem's path.

    Checked here, not per request: Jinja syntax (line and what is wrong), names the template uses but
    does not declare, defaults of the wrong type, duplicate variables; a message that uses no variable
    is rendered now, so its errors (``{{ ''.__class__ }}``, ``range(10**9)``) are compile errors too."""
    errors = semantic_errors(doc)
    if errors:
        raise TemplateError(*errors[0])
    for i, var in enumerate(doc.variables):
        if var.default is not None:
            problem = _type_problem(var, var.default)
            if problem is not None:
                raise TemplateError(f"$.variables[{i}].default", f"the default of {var.name!r} {problem}")
    declared = {v.name for v in doc.variables}
    compiled: list[tuple[str, jinja2.Template | None, str]] = []
    room = MAX_OUTPUT_CHARS
    ref = f"{doc.name}@{version}"
    for i, message in enumerate(doc.messages):
        path = f"$.messages[{i}].content"
        try:
            tree = _ENV.parse(message.content)
            template = _ENV.from_string(tree)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(path, f"line {exc.lineno}: {exc.message}") from None
        for node_type, tag in _UNSUPPORTED.items():
            node = tree.find(node_type)
            if node is not None:
                raise TemplateError(path, f"line {node.lineno}: {tag} is not supported: a message stands alone")
        undeclared = meta.find_undeclared_variables(tree) - declared
        if undeclared:
            names = ", ".join(repr(n) for n in sorted(undeclared))
            raise TemplateError(path, f"uses undeclared variable(s) {names}: declare them under variables")
        if meta.find_undeclared_variables(tree):
            compiled.append((message.role, template, ""))
            continue
        try:
            text = _run(template, _context(dict(_GLOBALS)), room, ref, i)
        except RenderError as exc:
            raise TemplateError(path, exc.reason) from None
        room -= len(text)
        compiled.append((message.role, None, text))
    return CompiledTemplate(doc, version, tuple(compiled))
