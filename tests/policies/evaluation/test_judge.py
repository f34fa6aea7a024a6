"""Judge prompts (built-in and inline rubrics, sandboxed) and strict parsing of the judge's answers."""

from __future__ import annotations

import pytest

from policies.evaluation.judge import (
    MAX_RUBRIC_CHARS,
    RUBRICS,
    PairJudgment,
    RubricError,
    combine_orders,
    compile_rubric,
    pairwise_summary,
    parse_pairwise,
    parse_pointwise,
    render_pairwise,
    render_pointwise,
)


def test_pointwise_prompt_carries_the_scale_the_inputs_and_the_answer_format() -> None:
    system, user = render_pointwise("correctness", input=[{"role": "user", "content": "2+2?"}], output="4",
                                    reference="4", scale_min=0, scale_max=10)
    assert system["role"] == "system" and user["role"] == "user"
    assert '{"score": <an integer from 0 to 10>, "rationale"' in system["content"]
    assert RUBRICS["correctness"].criteria in user["content"]
    assert "<input>\nuser: 2+2?\n</input>" in user["content"]
    assert "<reference>\n4\n</reference>" in user["content"] and "<response>\n4\n</response>" in user["content"]
    assert "<context>" not in user["content"]  # none given: no empty block


def test_pairwise_prompt_shows_a_then_b() -> None:
    system, user = render_pairwise("helpfulness", input="hi", output_a="first answer", output_b="second answer")
    assert '{"winner": "A" | "B" | "tie"' in system["content"]
    body = user["content"]
    assert body.index("<response_a>\nfirst answer") < body.index("<response_b>\nsecond answer")


def test_builtin_rubrics_refuse_items_without_what_they_need() -> None:
    with pytest.raises(RubricError, match="reference"):
        render_pointwise("correctness", input="q", output="o")
    with pytest.raises(RubricError, match="context"):
        render_pointwise("faithfulness", input="q", output="o", reference="r")
    user = render_pointwise("faithfulness", input="q", output="o", context="the doc")[1]
    assert user["content"].count("<context>\nthe doc\n</context>") == 1


def test_inline_rubric_is_the_user_message_and_the_format_stays_ours() -> None:
    rubric = ("Is {{ output }} polite? ({{ scale_min }}-{{ scale_max }})"
              "{% if reference %} ref: {{ reference }}{% endif %}")
    system, user = render_pointwise(rubric, input="q", output="Thanks!")
    assert user["content"] == "Is Thanks! polite? (1-5)"  # a missing reference renders as ""
    assert '"score"' in system["content"]


@pytest.mark.parametrize(("rubric", "mode", "message"), [
    ("helpfullness", "pointwise", "unknown rubric 'helpfullness': the built-in ones are correctness, faithfulness"),
    ("Rate {{ ouput }}", "pointwise", "uses 'ouput'; a pointwise rubric can use input, output, reference"),
    ("Rate {{ input }}", "pointwise", "must show the judge {{ output }}"),
    ("{{ output }}", "pairwise", "uses 'output'; a pairwise rubric can use input, output_a, output_b"),
    ("{{ output_a }}", "pairwise", "must show the judge {{ output_b }}"),
    ("{{ output ", "pointwise", "line 1: unexpected end of template"),
    ("{{ ''.__class__.__mro__ }}{{ output }}", "pointwise", "SecurityError"),
    ("{% for i in range(10**9) %}{{ output }}{% endfor %}", "pointwise", "range: more than"),
    ("{% extends 'base' %}{{ output }}", "pointwise", "{% extends %} is not supported"),
    ("x" * (MAX_RUBRIC_CHARS + 1), "pointwise", "over the limit"),
    ("{{ output }}", "listwise", "mode must be"),
])
def test_bad_rubrics_are_refused_clearly_before_any_item(rubric: str, mode: str, message: str) -> None:
    with pytest.raises(RubricError) as err:
        compile_rubric(rubric, mode)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_a_render_that_grows_too_large_fails_with_a_clear_error() -> None:
    with pytest.raises(RubricError, match="over the limit of"):
        render_pointwise("{{ output }}{{ output }}", input="q", output="o" * 600_000)
    with pytest.raises(RubricError, match="scale_min < scale_max"):
        render_pointwise("helpfulness", input="q", output="o", scale_min=5, scale_max=5)


@pytest.mark.parametrize(("text", "score", "rationale"), [
    ('{"score": 4, "rationale": "Mostly right."}', 4, "Mostly right."),
    ('  {"rationale": "ok", "score": 1, "extra": true}\n', 1, "ok"),
    ('```json\n{"score": 5, "rationale": "great"}\n```', 5, "great"),
    ('Here is my verdict:\n```\n{"score": 2}\n```\nThanks.', 2, ""),
    ("The answer misses the point.\nScore: 2", 2, "The answer misses the point."),
    ("score : 3", 3, ""),
    ('{"score": 4.0}', 4, ""),
    ('{"score": "4"}', 4, ""),
    ('```json\n{"score": 4}\n```\nScore: 4', 4, ""),  # the same score twice is one score
    ("Score: 3\nScore: 3", 3, ""),
])
def test_parse_pointwise_accepts_the_documented_forms(text: str, score: int, rationale: str) -> None:
    judgment = parse_pointwise(text, 1, 5)
    assert (judgment.parsed, judgment.score, judgment.rationale, judgment.error) == (True, score, rationale, "")


@pytest.mark.parametrize(("text", "error"), [
    ('{"score": 4} {"score": 2}', "not one JSON object"),  # two JSON objects
    ('{"score": 7, "rationale": "excellent"}', "score 7 is outside the scale 1..5"),
    ('{"score": 0}', "outside the scale"),
    ("I would rate this answer 4 out of 5, maybe 3.", "no JSON object and no 'Score: <n>' line"),  # prose
    ("Sure! {\"score\": 4}", "no JSON object"),  # JSON inside prose, unfenced: not guessed at
    ("", "empty"),
    ('{"score": 4, "score": 5}', "twice"),
    ('{"score": true}', "boolean"),
    ('{"score": 3.5}', "not an integer"),
    ('{"score": "four"}', "not an integer"),
    ('{"score": NaN}', "NaN"),
    ('{"rationale": "fine"}', "has no score"),
    ('{"score": 4, "rationale": 5}', "rationale is not a string"),
    ("[4]", "no JSON object"),
    ('{"score": [4]}', "not an integer"),
    ("Score: 3\nScore: 4", "several different scores: [3, 4]"),
    ('```json\n{"score": 4}\n```\n```json\n{"score": 4}\n```', "2 fenced blocks"),
    ('```json\n{"score": 4}\n```\nScore: 2', "several different scores"),
    ("```json\n{score: 4}\n```", "not one JSON object"),
    ("Score: 4/5", "no JSON object"),
])
def test_parse_pointwise_never_guesses(text: str, error: str) -> None:
    judgment = parse_pointwise(text, 1, 5)
    assert not judgment.parsed and judgment.score is None
    assert error in judgment.error


@pytest.mark.parametrize(("text", "winner"), [
    ('{"winner": "A", "rationale": "clearer"}', "A"),
    ('{"winner": "b"}', "B"),
    ('{"winner": "Tie"}', "tie"),
    ("```json\n{\"winner\": \"B\"}\n```", "B"),
    ("Both are fine.\nWinner: tie", "tie"),
])
def test_parse_pairwise(text: str, winner: str) -> None:
    judgment = parse_pairwise(text)
    assert judgment.parsed and judgment.winner == winner


@pytest.mark.parametrize("text", [
    '{"winner": "C"}', '{"winner": "A"} {"winner": "B"}', "A is better.", '{"rationale": "x"}',
    "Winner: A\nWinner: B", '{"winner": 1}', '```{"winner": "A"}``` ```{"winner": "A"}```'])
def test_parse_pairwise_unparsed(text: str) -> None:
    judgment = parse_pairwise(text)
    assert not judgment.parsed and judgment.winner is None and judgment.error


def _pair(winner: str | None) -> PairJudgment:
    return PairJudgment(winner=winner, rationale="", parsed=winner is not None,  # type: ignore[arg-type]
                        error="" if winner else "unparsed")


@pytest.mark.parametrize(("first", "second", "outcome"), [
    ("A", "B", "x"),  # x shown first won, and x shown second won: x
    ("B", "A", "y"),
    ("tie", "tie", "tie"),
    ("A", "A", "inconsistent"),  # whichever was shown first won: position bias, a flip
    ("B", "B", "inconsistent"),
    ("A", "tie", "inconsistent"),
    ("tie", "A", "inconsistent"),
    (None, "A", "unparsed"),
    ("B", None, "unparsed"),
])
def test_combine_orders(first: str | None, second: str | None, outcome: str) -> None:
    assert combine_orders(_pair(first), _pair(second)) == outcome


def test_pairwise_summary_rates() -> None:
    outcomes = ["x"] * 5 + ["y"] * 2 + ["tie"] * 1 + ["inconsistent"] * 2 + ["unparsed"] * 3
    summary = pairwise_summary(outcomes)  # type: ignore[arg-type]
    assert summary == {"win_rate_x": 0.5, "win_rate_y": 0.2, "tie_rate": 0.1, "flip_rate": 0.2, "unparsed": 3,
                       "n": 10}
    assert pairwise_summary(["unparsed"]) == {"win_rate_x": None, "win_rate_y": None, "tie_rate": None,
                                              "flip_rate": None, "unparsed": 1, "n": 0}
    with pytest.raises(ValueError, match="unknown pairwise outcome"):
        pairwise_summary(["z"])  # type: ignore[list-item]
