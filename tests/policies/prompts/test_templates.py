"""policies/prompts/templates.py: compile once, render per request, every error naming its variable or path."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from policies.prompts.documents import TemplateDoc
from policies.prompts.templates import (
    MAX_OUTPUT_CHARS,
    CompiledTemplate,
    RenderError,
    TemplateError,
    VariableError,
    compile_template,
    merge_variables,
)


def doc(*contents: str, variables: list[dict[str, Any]] | None = None, roles: list[str] | None = None) -> TemplateDoc:
    roles = roles or ["system", "user", "assistant", "user"][: len(contents)]
    return msgspec.convert({"name": "support", "messages": [{"role": r, "content": c} for r, c in zip(roles, contents,
                                                                                                     strict=True)],
                            "variables": variables or []}, TemplateDoc)


def compiled(*contents: str, **variables: dict[str, Any]) -> CompiledTemplate:
    return compile_template(doc(*contents, variables=[{"name": k, **v} for k, v in variables.items()]), 1)


# -- happy paths ---------------------------------------------------------------------------------

def test_render_two_messages_with_defaults_and_values() -> None:
    t = compile_template(doc("You are {{ persona }}. Be {{ tone }}.", "Answer in {{ words }} words.",
                             variables=[{"name": "persona"}, {"name": "tone", "default": "brief"},
                                        {"name": "words", "type": "integer"}]), 3)
    assert (t.name, t.version, t.ref, t.variables) == ("support", 3, "support@3", ("persona", "tone", "words"))
    assert t.render({"persona": "a librarian", "words": 50}) == [
        {"role": "system", "content": "You are a librarian. Be brief."},
        {"role": "user", "content": "Answer in 50 words."},
    ]
    # a value wins over the default; names the template does not declare are ignored
    assert t.render({"persona": "x", "tone": "warm", "words": 1, "other": object()})[0]["content"] == \
        "You are x. Be warm."


def test_jinja_features_work_inside_the_sandbox() -> None:
    t = compiled("{% for item in items %}- {{ item.title|upper }}{% if not loop.last %}\n{% endif %}{% endfor %}"
                 "{% if extra %} ({{ extra }}){% endif %}",
                 items={"type": "list"}, extra={"required": False})
    assert t.render({"items": [{"title": "a"}, {"title": "b"}]}) == [{"role": "system", "content": "- A\n- B"}]
    assert t.render({"items": [], "extra": "more"})[0]["content"] == " (more)"


def test_static_template_is_rendered_at_compile_and_copied() -> None:
    t = compiled("Be kind.\n", "{% for i in range(3) %}{{ i }}{% endfor %}")
    first = t.render({})
    assert first == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "012"}]
    first[0]["content"] = "mutated"  # the caller may edit what it got: the next request is untouched
    assert t.render({})[0]["content"] == "Be kind."


def test_trailing_newline_of_a_yaml_block_is_dropped() -> None:
    assert compiled("Hello {{ who }}\n", who={}).render({"who": "you"})[0]["content"] == "Hello you"


def test_top_level_set_does_not_leak_into_the_next_message() -> None:
    t = compiled("{% set who = 'shadow' %}{{ who }} {{ n }}", "{{ who }}", who={}, n={"type": "integer"})
    assert [m["content"] for m in t.render({"who": "real", "n": 1})] == ["shadow 1", "real"]


def test_optional_variable_without_default_is_none() -> None:
    t = compiled("{{ note or 'none given' }}", note={"required": False})
    assert t.render({})[0]["content"] == "none given"


def test_declared_but_unused_required_variable_is_still_checked() -> None:
    t = compiled("static", customer={})
    with pytest.raises(VariableError) as err:
        t.render({})
    assert err.value.variable == "customer"


@pytest.mark.parametrize(("kind", "value"), [
    ("string", "s"), ("integer", 3), ("number", 3), ("number", 2.5), ("boolean", False), ("list", [1]),
    ("object", {"a": 1}),
])
def test_accepted_types(kind: str, value: Any) -> None:
    assert compiled("{{ v }}", v={"type": kind}).render({"v": value})[0]["content"] == str(value)


def test_merge_variables_later_layers_win_and_none_shows_through() -> None:
    merged = merge_variables({"a": 1, "b": 1, "c": 1}, None, {"b": 2}, {"c": None, "d": 4})
    assert merged == {"a": 1, "b": 2, "c": 1, "d": 4}
    assert merge_variables() == {}


# -- variable errors -----------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "value", "words"), [
    ("integer", "3", "must be an integer, not a string"),
    ("integer", True, "must be an integer, not a boolean"),
    ("integer", 2.0, "must be an integer, not a number"),
    ("number", "2.5", "must be a finite number, not a string"),
    ("number", False, "must be a finite number, not a boolean"),
    ("number", float("nan"), "must be a finite number"),
    ("string", 3, "must be a string, not an integer"),
    ("boolean", "true", "must be a boolean, not a string"),
    ("list", {"a": 1}, "must be a list, not an object"),
    ("object", [1], "must be an object, not a list"),
])
def test_wrong_type_names_the_variable(kind: str, value: Any, words: str) -> None:
    t = compiled("{{ count }}", count={"type": kind})
    with pytest.raises(VariableError) as err:
        t.render({"count": value})
    assert err.value.variable == "count"
    assert "'count'" in str(err.value) and words in str(err.value) and "support@1" in str(err.value)


def test_missing_required_variable_names_it() -> None:
    t = compiled("{{ a }} {{ customer }}", a={"default": "x"}, customer={})
    with pytest.raises(VariableError, match=r"variable 'customer' is required") as err:
        t.render({"a": "given"})
    assert err.value.variable == "customer"


def test_string_over_max_length_names_it() -> None:
    t = compiled("{{ q }}", q={"max_length": 5})
    assert t.render({"q": "12345"})[0]["content"] == "12345"
    with pytest.raises(VariableError, match=r"'q' is longer than 5 characters \(6\)") as err:
        t.render({"q": "123456"})
    assert err.value.variable == "q"


# -- compile errors ------------------------------------------------------------------------------

def test_syntax_error_names_path_and_line() -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(doc("fine", "line one\n{% if %}"), 1)
    assert err.value.path == "$.messages[1].content"
    assert "line 2" in str(err.value) and "Expected an expression" in str(err.value)


def test_undeclared_variable_is_a_compile_error_naming_it() -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(doc("{{ declared }}", "{{ declared }} {{ typo }} {{ other }}",
                             variables=[{"name": "declared"}]), 1)
    assert err.value.path == "$.messages[1].content"
    assert "'other', 'typo'" in str(err.value)


def test_default_of_wrong_type_is_a_compile_error() -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(doc("{{ n }}", variables=[{"name": "ok"}, {"name": "n", "type": "integer", "default": "3"}]),
                         1)
    assert err.value.path == "$.variables[1].default"
    assert "'n'" in str(err.value)


def test_duplicate_variable_is_a_compile_error() -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(doc("{{ a }}", variables=[{"name": "a"}, {"name": "a"}]), 1)
    assert err.value.path == "$.variables[1].name"


@pytest.mark.parametrize("source", ["{% block b %}x{% endblock %}", "{% include 'other' %}",
                                    "{% extends 'base' %}", "{% import 'm' as m %}"])
def test_cross_template_tags_are_refused(source: str) -> None:
    with pytest.raises(TemplateError, match="is not supported"):
        compile_template(doc(source), 1)


# -- the sandbox and the bounds ------------------------------------------------------------------

@pytest.mark.parametrize("source", ["{{ ''.__class__ }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}",
                                    "{{ range.__globals__ }}"])
def test_sandbox_refuses_internals_at_compile(source: str) -> None:
    with pytest.raises(TemplateError, match="SecurityError") as err:
        compile_template(doc(source), 1)
    assert err.value.path == "$.messages[0].content"


def test_sandbox_refuses_internals_of_a_value_at_render() -> None:
    t = compiled("{{ name.__class__ }}", name={})
    with pytest.raises(RenderError, match="SecurityError: access to attribute '__class__'") as err:
        t.render({"name": "x"})
    assert err.value.path == "$.messages[0].content" and err.value.template == "support@1"


def test_sandbox_refuses_mutating_a_value() -> None:
    t = compiled("{{ items.append(1) }}", items={"type": "list"})
    values = {"items": []}
    with pytest.raises(RenderError, match="unsafe"):
        t.render(values)
    assert values["items"] == []


@pytest.mark.parametrize("source", [
    "{% for i in range(10**9) %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'a' * 10**10 }}",
    "{{ 2 ** (10**9) }}",  # Jinja's ** groups left: 2 ** 10**9 would be 1024**9
    "{{ 'x'.ljust(10**9) }}",
    "{% for i in range(100000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}",
])
def test_abuse_in_a_static_message_is_a_compile_error(source: str) -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(doc(source), 1)
    assert err.value.path == "$.messages[0].content"


@pytest.mark.parametrize(("source", "values", "words"), [
    ("{% for i in range(n) %}.{% endfor %}", {"n": 10**9}, "range: more than 100000 items"),
    ("{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}", {"n": 400}, "range: more than"),
    ("{{ s * n }}", {"s": "ab", "n": 10**8}, "over the output limit"),
    ("{{ s|indent(n) }}", {"s": "a\nb", "n": 10**8}, "over the output limit"),
    ("{{ '%*d' % (n, 1) }}", {"n": 10**8}, "argument 100000000 is over the output limit"),
    ("{{ x.missing }}", {"x": {}}, "has no attribute 'missing'"),
])
def test_abuse_through_values_ends_in_a_render_error(source: str, values: dict[str, Any], words: str) -> None:
    variables = {k: {"type": "integer" if isinstance(v, int) else "object" if isinstance(v, dict) else "string"}
                 for k, v in values.items()}
    t = compiled(source, **variables)
    with pytest.raises(RenderError, match=words) as err:
        t.render(values)
    assert "support@1" in str(err.value)


@pytest.mark.parametrize("source", ["{{ s|center(n) }}", "{{ s|indent(n) }}", "{{ s.rjust(n) }}", "{{ s.zfill(n) }}"])
def test_size_arguments_are_refused_before_anything_is_built(source: str) -> None:
    t = compiled(source, s={}, n={"type": "integer"})
    assert t.render({"s": "a", "n": 3})[0]["content"].strip() in ("a", "00a")
    with pytest.raises(RenderError, match=f"argument {10**9} is over the output limit"):
        t.render({"s": "a", "n": 10**9})


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ '{:,}'.format(n) }}", "12,345,678"), ("{{ '%d'|format(n) }}", "12345678"), ("{{ '%d' % n }}", "12345678"),
    ("{{ dict(n=n).n }}", "12345678"), ("{{ n|round }}", "12345678"), ("{{ [n]|first }}", "12345678"),
])
def test_large_numbers_are_values_not_sizes(source: str, expected: str) -> None:
    assert compiled(source, n={"type": "integer"}).render({"n": 12_345_678})[0]["content"] == expected


def test_output_is_capped_over_all_messages() -> None:
    t = compiled("{{ a }}", "{{ b }}", "{% for x in items %}{{ b }}{% endfor %}",
                 a={}, b={}, items={"type": "list"})
    half = "x" * (MAX_OUTPUT_CHARS // 2)
    assert len(t.render({"a": half, "b": "", "items": [1]})[0]["content"]) == len(half)
    with pytest.raises(RenderError, match=f"over the limit of {MAX_OUTPUT_CHARS}") as err:
        t.render({"a": half, "b": half, "items": [1]})  # the third message crosses the line
    assert err.value.path == "$.messages[2].content"
    with pytest.raises(RenderError, match="over the limit"):
        t.render({"a": "", "b": "y" * 1000, "items": list(range(2000))})
