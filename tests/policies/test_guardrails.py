"""policies/guardrails.py (with regex_reach.py and re2.py): rules on whole texts and on streamed pieces."""

from __future__ import annotations

import random
import re
import time
from typing import Any

import msgspec
import pytest

from policies.documents import PolicyDocument, semantic_errors
from policies.guardrails import Blocked, Guardrails, RuleSet, StreamGuard, compile_guardrails, term_pattern
from policies.re2 import Re2
from policies.regex_reach import reach


def _rules(*guardrails: dict[str, Any], side: str = "output") -> RuleSet:
    doc = msgspec.convert({"guardrails": list(guardrails)}, PolicyDocument)
    g = compile_guardrails([("pol", doc)])
    assert g is not None
    rules = getattr(g, side)
    assert rules is not None
    return rules


PII_ALL = {"kind": "pii", "entities": ["email", "phone", "credit_card", "iban", "ip_address", "national_id"]}


def _stream(rules: RuleSet, pieces: list[str]) -> tuple[list[str], StreamGuard]:
    guard = StreamGuard(rules)
    out = [guard.feed(p) for p in pieces]
    out.append(guard.finish())
    return out, guard


# -- whole texts --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    ("mail john.doe@example.com now", "mail [EMAIL] now"),
    ("call +1 415 555 0100 today", "call [PHONE] today"),
    ("card 4111 1111 1111 1111.", "card [CREDIT_CARD]."),
    ("card 4111 1111 1111 1112.", "card 4111 1111 1111 1112."),  # fails Luhn: not a card
    ("ref 32 4111-1111-1111-1111 ok", "ref 32 [CREDIT_CARD] ok"),  # a look-alike before it hides nothing
    ("iban GB82 WEST 1234 5698 7654 32 ok", "iban [IBAN] ok"),
    ("from 192.168.0.1 and 2001:db8::8a2e:370:7334", "from [IP_ADDRESS] and [IP_ADDRESS]"),
    ("ssn 123-45-6789, nino AB 12 34 56 C", "ssn [NATIONAL_ID], nino [NATIONAL_ID]"),
])
def test_pii_redacts_each_entity(text: str, want: str) -> None:
    new, hits = _rules(PII_ALL).apply(text)
    assert new == want
    assert all(h.action == "redact" and h.policy == "pol" for h in hits)


def test_only_the_listed_entities_are_redacted() -> None:
    new, hits = _rules({"kind": "pii", "entities": ["email"]}).apply("a@b.co or +1 415 555 0100")
    assert new == "[EMAIL] or +1 415 555 0100"
    assert [(h.kind, h.detail) for h in hits] == [("pii", "email")]


def test_block_raises_naming_the_rule_never_the_text() -> None:
    rules = _rules({"kind": "pii", "entities": ["email"], "action": "block"})
    with pytest.raises(Blocked) as err:
        rules.apply("I am jane@example.org")
    assert err.value.hit.describe() == "pii (email)" and err.value.hit.policy == "pol"
    assert "jane" not in str(err.value) and "jane" not in repr(err.value.hit)


def test_log_finds_without_changing() -> None:
    rules = _rules({"kind": "regex", "pattern": r"tok-[0-9a-f]{8}", "action": "log"})
    text = "use tok-deadbeef"
    new, hits = rules.apply(text)
    assert new is text and [(h.kind, h.action, h.start, h.end) for h in hits] == [("regex", "log", 4, 16)]


def test_blocked_terms_match_whole_words_ignoring_case_unless_told() -> None:
    rules = _rules({"kind": "blocked_terms", "terms": ["ass", "secret plan"]}, side="input")
    assert rules.apply("a class of passes")[1] == []
    for text in ("an ASS", "the Secret Plan.", "ass"):
        with pytest.raises(Blocked):
            rules.apply(text)
    exact = _rules({"kind": "blocked_terms", "terms": ["Secret"], "caseSensitive": True}, side="input")
    assert exact.apply("a secret")[1] == []
    with pytest.raises(Blocked):
        exact.apply("a Secret")


def test_blocked_terms_in_unspaced_scripts_match_as_substrings() -> None:
    rules = _rules({"kind": "blocked_terms", "terms": ["机密"], "action": "log"}, side="input")
    assert len(rules.apply("这是机密文件")[1]) == 1


def test_term_pattern_is_a_trie_preferring_the_longest_term() -> None:
    pattern = term_pattern(["secret", "secret plan", "a+b"])
    assert pattern.count("secret") == 1  # shared prefix, one branch
    found = [m.group() for m in re.finditer(pattern, "the secret plan, a secret, a+b", re.IGNORECASE)]
    assert found == ["secret plan", "secret", "a+b"]  # regex metacharacters are literal


def test_regex_redacts_with_re2_and_ignores_empty_matches() -> None:
    assert _rules({"kind": "regex", "pattern": r"key=\w+", "action": "redact"}).apply("x key=abc y")[0] == \
        "x [REDACTED] y"
    assert _rules({"kind": "regex", "pattern": r"z*", "action": "block"}).apply("abc")[1] == []


@pytest.mark.timeout(20)
def test_a_hostile_regex_and_input_run_in_linear_time() -> None:
    """`(a+)+$` against 'aaa…!' backtracks exponentially in Python's re; RE2 does not backtrack."""
    rules = _rules({"kind": "regex", "pattern": r"(a+)+$", "action": "block"}, side="input")
    started = time.perf_counter()
    assert rules.apply("a" * 200_000 + "!") == ("a" * 200_000 + "!", [])
    guard = StreamGuard(rules)
    for _ in range(100):
        guard.feed("a" * 1000)
    guard.feed("!", True)
    assert time.perf_counter() - started < 10


def test_a_regex_re2_cannot_run_is_refused_at_compile_and_by_validation() -> None:
    doc = msgspec.convert({"guardrails": [{"kind": "regex", "pattern": r"foo(?=bar)"}]}, PolicyDocument)
    with pytest.raises(ValueError, match="RE2 cannot run"):
        compile_guardrails([("pol", doc)])
    (field, message), = semantic_errors(doc)  # the governance module answers it with a 422
    assert field == "document.guardrails[0].pattern" and "no lookarounds" in message


def test_max_input_keeps_the_tightest_limit_and_names_it() -> None:
    docs = [("wide", msgspec.convert({"guardrails": [{"kind": "max_input", "maxChars": 100}]}, PolicyDocument)),
            ("tight", msgspec.convert({"guardrails": [{"kind": "max_input", "maxChars": 10}]}, PolicyDocument))]
    g = compile_guardrails(docs)
    assert isinstance(g, Guardrails) and g.input is None and g.output is None
    g.check_size(10)
    with pytest.raises(Blocked, match="11 characters; policy 'tight' allows 10"):
        g.check_size(11)


def test_apply_to_sorts_rules_by_side_and_no_guardrails_is_none() -> None:
    doc = msgspec.convert({"guardrails": [
        {"kind": "blocked_terms", "terms": ["x"]},  # input by default
        {"kind": "regex", "pattern": "y", "applyTo": "output"},
        {"kind": "pii", "entities": ["email"], "applyTo": "both"},
    ]}, PolicyDocument)
    g = compile_guardrails([("p", doc)])
    assert g is not None and g.input is not None and g.output is not None
    assert [r.kind for r in g.input.gate] == ["blocked_terms", "pii"]
    assert [r.kind for r in g.output.gate] == ["regex", "pii"]
    assert compile_guardrails([("p", msgspec.convert({"limits": {"requestsPerMinute": 1}}, PolicyDocument))]) is None


# -- streams ------------------------------------------------------------------------------------

def test_an_email_split_across_two_pieces_is_redacted() -> None:
    out, _ = _stream(_rules({"kind": "pii", "entities": ["email"]}), ["write to john.do", "e@example.com today"])
    assert "".join(out) == "write to [EMAIL] today"
    assert out[0] == "write to "  # the words before it went out with the first piece


def test_a_term_split_across_pieces_is_blocked_before_any_of_it_is_sent() -> None:
    guard = StreamGuard(_rules({"kind": "blocked_terms", "terms": ["nuclear code"], "applyTo": "output"}))
    sent = guard.feed("the nucl") + guard.feed("ear co")
    with pytest.raises(Blocked):
        guard.feed("de is 1234")
    assert sent == "th"  # "e nucl" could be the start of the term: held, then refused with it


def test_prose_is_released_at_once_and_the_hold_is_bounded() -> None:
    rules = _rules(PII_ALL, {"kind": "blocked_terms", "terms": ["nuclear code"], "applyTo": "both"})
    words = ("The quick brown fox jumps over the lazy dog, then rests. " * 20).split(" ")
    pieces = [w + " " for w in words]
    out, guard = _stream(rules, pieces)
    assert "".join(out) == "".join(pieces)
    assert sum(1 for o in out[:-1] if o) >= len(pieces) - 1  # every piece released as its successor arrives
    guard = StreamGuard(rules)
    for _ in range(2000):  # one long run of characters an email may contain: held, but never beyond the cap
        guard.feed("a")
        assert guard.held <= 256


def test_log_rules_do_not_hold_the_stream_back() -> None:
    out, guard = _stream(_rules({"kind": "regex", "pattern": r"tok-[0-9a-f]{8}", "action": "log"}),
                         ["use tok-dead", "beef now"])
    assert out[:2] == ["use tok-dead", "beef now"]
    assert [(h.kind, h.action) for h in guard.hits] == [("regex", "log")]  # found across the boundary


def test_the_stream_redacts_exactly_what_the_whole_text_would() -> None:
    """Seeded random texts of PII, look-alikes and prose, cut at random: same answer as one pass."""
    rules = _rules(PII_ALL, {"kind": "regex", "pattern": r"tok-[0-9a-f]{8}", "action": "redact"},
                   {"kind": "blocked_terms", "terms": ["nuclear code", "xyzzy"], "action": "log"})
    tokens = ["john.doe@example.com", "a@b.co", "+1 415 555 0100", "(415) 555-0100", "4111 1111 1111 1111",
              "4111-1111-1111-1111", "GB82 WEST 1234 5698 7654 32", "192.168.0.1", "2001:db8::8a2e:370:7334",
              "123-45-6789", "AB 12 34 56 C", "tok-deadbeef", "nuclear code", "xyzzy", "hello", "12", "é", "机密",
              "@", "-", ".", "x"]
    rnd = random.Random(7)
    for _ in range(400):
        text = "".join(rnd.choice(tokens) + rnd.choice(["", " ", ", ", "\n"]) for _ in range(rnd.randint(1, 25)))
        want, hits = rules.apply(text)
        pieces, i = [], 0
        while i < len(text):
            n = rnd.randint(1, 10)
            pieces.append(text[i:i + n])
            i += n
        out, guard = _stream(rules, pieces)
        assert "".join(out) == want, text
        assert len(guard.hits) == len(hits), text


# -- reach --------------------------------------------------------------------------------------

def test_reach_bounds_width_chars_and_lookarounds() -> None:
    r = reach(r"(?<!\w)tok-[0-9a-f]{8}\b")
    assert (r.width, r.ahead, r.behind) == (12, 1, 1)
    assert r.tail("see tok-de") == 6 and r.tail("see tok-de, ") == 0
    assert reach(r"a+").width == 256 and reach(r"a+", cap=40).width == 40
    anything = reach(r"secret.*")
    assert anything.chars is None and anything.tail("x" * 1000) == 256
    assert reach(r"(?i)abc").tail("xyzAB") == 2  # case-insensitive classes
    assert reach(r"[^,]+").chars is None  # a negated class: any character


def test_reach_names_what_every_match_contains_so_text_without_it_is_not_scanned() -> None:
    assert reach(r"\bsk-(?:live|test)_\w+").required == "sk-"
    assert reach(r"(?:\d{1,3}\.){3}\d{1,3}").required == "."  # inside a repeat that occurs at least once
    assert reach(r"(?i)tok-\d").required == ""  # case-insensitive: no literal to test with `in`
    assert reach(r"(?:ab)?cd|x").required == ""  # a choice: nothing common
    assert reach(r"(?:a1|2)+").digit and reach(r"\+?\d{3}").digit
    assert not reach(r"a|1").digit and not reach(r"[a1]").digit and not reach(r"\d?x").digit


def test_re2_spans_are_character_offsets() -> None:
    assert Re2(r"k\d").spans("é k1 ü k22") == [(2, 4), (7, 9)]
    assert Re2(r"k\d").spans("\x00 k1") == [(2, 4)]  # a NUL in the text: another marker is used
