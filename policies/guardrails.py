"""Guardrails: find, redact or block PII, terms and patterns in prompts and answers. Pure, no I/O.

``compile_guardrails(policies)`` turns the ``guardrails`` of the policy documents that apply
to a request into two ``RuleSet``s, one for the prompt and one for the answer (by each
rule's ``applyTo``), plus the tightest ``max_input``. Rule kinds:

* ``pii``: ``policies.pii``'s detectors (regex plus validator: Luhn, IBAN checksum, ...),
  redacted as ``[EMAIL]``, ``[PHONE]``, ``[CREDIT_CARD]``, ``[IBAN]``, ``[IP_ADDRESS]``, ``[NATIONAL_ID]``;
* ``blocked_terms``: whole words where the term's edge is a letter or digit of a script
  that separates words with spaces (``class`` does not contain ``ass``), a plain substring
  otherwise (CJK, Thai); case-insensitive unless ``caseSensitive``;
* ``regex``: the author's pattern, run by RE2 (``policies.re2``: linear time whatever the
  pattern or the text), redacted as ``[REDACTED]``; zero-width matches are ignored.

``RuleSet.apply(text)`` scans a whole text: it raises ``Blocked`` on a ``block`` match and
returns the text with ``redact`` matches replaced and the hits (``log`` ones included).
``StreamGuard`` does the same for text that arrives in pieces: it releases all but the
tail a match still in progress could occupy (``policies.regex_reach``), so a match split
across pieces is found whole, and prose is released at once. A match longer than the
reach cap (256 characters by default: the bound for ``a+``-style patterns) may be split and
only its later part seen. ``Hit`` never carries matched text, only its rule and position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import msgspec

from policies.documents import (
    BlockedTermsGuardrail,
    Guardrail,
    MaxInputGuardrail,
    PiiGuardrail,
    PolicyDocument,
    RegexGuardrail,
)
from policies.pii import ENTITY_RULES, rules_for
from policies.re2 import Re2
from policies.regex_reach import Reach, reach

__all__ = [
    "Blocked",
    "Guardrails",
    "Hit",
    "RuleSet",
    "StreamGuard",
    "compile_guardrails",
    "term_pattern",
]

Kind = Literal["pii", "blocked_terms", "regex", "max_input"]
_ENTITY_OF = {rule: entity for entity, rules in ENTITY_RULES.items() for rule in rules}
_DIGIT = re.compile(r"\d").search


class Hit(msgspec.Struct, frozen=True, gc=False):
    """A match: which rule of which policy, and where; never the matched text."""

    kind: Kind
    action: str  # redact, block or log
    policy: str
    detail: str = ""  # the PII entity (email, phone, ...); empty for terms and regexes
    start: int = 0
    end: int = 0

    def describe(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


class Blocked(Exception):
    """A ``block`` rule matched (or the prompt is over ``max_input``)."""

    def __init__(self, hit: Hit, message: str = "") -> None:
        super().__init__(message or f"guardrail {hit.describe()} of policy {hit.policy!r}")
        self.hit = hit


class _Rule:
    """One guardrail of one policy, compiled: ``find`` gives ``(start, end, detail)`` spans."""

    __slots__ = ("_runs", "_span", "action", "ahead", "behind", "policy", "reaches")

    kind: ClassVar[Kind]

    def __init__(self, action: str, policy: str, reaches: Sequence[Reach]) -> None:
        self.action, self.policy, self.reaches = action, policy, tuple(reaches)
        self.ahead = max(r.ahead for r in self.reaches)
        self.behind = max(r.behind for r in self.reaches)
        self._span = max(r.width for r in self.reaches)
        self._runs = tuple((r.chars, r.width) for r in self.reaches)

    def tail(self, text: str) -> int:
        """Characters at the end of ``text`` that a match still in progress may occupy: the longest
        of each pattern's trailing run of characters it can match, each cut to that pattern's width
        (``Reach.tail`` for several reaches at once: once per streamed piece, so kept lean)."""
        rev = text[:-self._span - 1:-1]  # the last characters, reversed: a run is then a match at 0
        best = 0
        for chars, width in self._runs:
            n = min(len(rev), width) if chars is None else chars.match(rev, 0, width).end()  # type: ignore[union-attr]
            if n > best:
                best = n
        return best

    def find(self, text: str, pos: int = 0) -> list[tuple[int, int, str]]:
        """Matches starting at ``pos`` or later; lookbehinds and ``\\b`` still read ``text[:pos]``."""
        raise NotImplementedError


class _Pii(_Rule):
    __slots__ = ("_detectors",)
    kind = "pii"

    def __init__(self, g: PiiGuardrail, policy: str, cap: int) -> None:
        rules = rules_for(g.entities)
        # One reach per detector: their union would join email's letters and phone's spaces, and
        # then any prose would look like a match in progress.
        reaches = [reach(r.regex.pattern, r.regex.flags, cap=cap) for r in rules]
        super().__init__(g.action, policy, reaches)
        self._detectors = tuple((r.regex.search, r.validator, _ENTITY_OF.get(r.name, r.name), x.required, x.digit)
                                for r, x in zip(rules, reaches, strict=True))

    def find(self, text: str, pos: int = 0) -> list[tuple[int, int, str]]:
        # Like `policies.pii.detect`, with two differences that make the answer independent of where
        # a scan starts (a stream is scanned piece by piece): after a candidate its validator
        # rejects, the search resumes one character on, so a look-alike cannot hide a real match it
        # overlaps ("32 4111-1111-1111-1111": "32 4111…" fails the issuer check, the card is still
        # found); and every validated candidate is kept, overlapping ones too (the redaction merges
        # them), so a match not yet complete cannot hide a finished one. Validated patterns are
        # bounded (at most 64 characters), so a retry costs at most that per position.
        found: list[tuple[int, int, str]] = []
        digits: bool | None = None
        for search, valid, entity, required, digit in self._detectors:
            if required not in text:  # an email needs its "@", an IPv4 address a ".": no scan without
                continue
            if digit:  # cards, IBANs, ids, IPv4, phones: prose without a digit needs none of them
                if digits is None:
                    digits = _DIGIT(text, pos) is not None
                if not digits:
                    continue
            at = pos
            while (m := search(text, at)) is not None:
                s, e = m.span()
                if valid is not None and not valid(m.group()):
                    at = s + 1
                    continue
                found.append((s, e, entity))
                at = e if e > s else e + 1
        return found


class _Terms(_Rule):
    __slots__ = ("_re",)
    kind = "blocked_terms"

    def __init__(self, g: BlockedTermsGuardrail, policy: str, cap: int) -> None:
        pattern, flags = term_pattern(g.terms), 0 if g.case_sensitive else re.IGNORECASE
        self._re = re.compile(pattern, flags)
        super().__init__(g.action, policy, [reach(pattern, flags, cap=cap)])

    def find(self, text: str, pos: int = 0) -> list[tuple[int, int, str]]:
        return [(m.start(), m.end(), "") for m in self._re.finditer(text, pos)]


class _Regex(_Rule):
    __slots__ = ("_re2", "_required")
    kind = "regex"

    def __init__(self, g: RegexGuardrail, policy: str, cap: int) -> None:
        self._re2 = Re2(g.pattern)  # ValueError when RE2 cannot run it (lookarounds, backreferences)
        r = reach(g.pattern, cap=cap)
        self._required = r.required
        super().__init__(g.action, policy, [r])

    def find(self, text: str, pos: int = 0) -> list[tuple[int, int, str]]:
        if self._required not in text:  # a plain substring test spares the RE2 call (tens of µs)
            return []
        # RE2 has no lookbehind; `text[:pos]` (a character or so) only informs a leading \b.
        return [(s, e, "") for s, e in self._re2.spans(text) if s >= pos]


_Trie = dict[str, "_Trie"]
_PLACEHOLDERS: dict[str, str] = {entity: f"[{entity.upper()}]" for entity in ENTITY_RULES}


def _spaced_word_char(ch: str) -> bool:
    """A letter or digit of a script that separates words with spaces (not CJK, Thai, Lao, Khmer, Myanmar)."""
    code = ord(ch)
    return ((ch.isalnum() or ch == "_") and code < 0x2E80
            and not (0x0E00 <= code <= 0x0EFF or 0x1000 <= code <= 0x109F or 0x1780 <= code <= 0x17FF))


def term_pattern(terms: Iterable[str]) -> str:
    """One regex for a term list, as a trie (one branch per distinct next character, not one per
    term), with a word boundary at each edge that is a word character (``_spaced_word_char``)."""
    root: _Trie = {}  # char -> subtrie; the key "" marks the end of a term
    for term in terms:
        node = root
        for ch in term:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: _Trie, last: str) -> str:
        alts = [re.escape(ch) + emit(child, ch) for ch, child in node.items() if ch]
        if "" in node:  # a term ends here; longer terms are tried first (leftmost-longest)
            alts.append(r"(?!\w)" if _spaced_word_char(last) else "")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return "(?:" + "|".join((r"(?<!\w)" if _spaced_word_char(ch) else "") + re.escape(ch) + emit(child, ch)
                            for ch, child in root.items()) + ")"


class RuleSet:
    """The rules for one direction. ``gate``: redact and block (they decide what is sent);
    ``watch``: log (they only observe, so a stream need not wait for them)."""

    __slots__ = ("gate", "watch")

    def __init__(self, rules: Sequence[_Rule]) -> None:
        self.gate = tuple(r for r in rules if r.action != "log")
        self.watch = tuple(r for r in rules if r.action == "log")

    def apply(self, text: str) -> tuple[str, list[Hit]]:
        """``text`` with ``redact`` matches replaced, and every hit; ``Blocked`` on a ``block`` match."""
        hits = _find(text, self.gate + self.watch)
        for h in hits:
            if h.action == "block":
                raise Blocked(h)
        return _redact(text, hits), hits


def _find(text: str, rules: Sequence[_Rule], pos: int = 0) -> list[Hit]:
    hits = [Hit(r.kind, r.action, r.policy, detail, s, e) for r in rules for s, e, detail in r.find(text, pos)]
    hits.sort(key=lambda h: (h.start, -h.end))
    return hits


def _placeholder(hit: Hit) -> str:
    return _PLACEHOLDERS.get(hit.detail, "[REDACTED]") if hit.kind == "pii" else "[REDACTED]"


def _redact(text: str, hits: Sequence[Hit], offset: int = 0) -> str:
    """Replace each ``redact`` hit (overlapping ones merged, the first one's placeholder kept)."""
    out: list[str] = []
    pos = 0
    for h in hits:
        if h.action != "redact":
            continue
        start, end = max(h.start - offset, 0), h.end - offset
        if end <= pos:
            continue  # inside the previous (merged) replacement
        if start >= pos:  # else it overlaps the previous one, whose replacement now covers it too
            out.append(text[pos:start])
            out.append(_placeholder(h))
        pos = end
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


class _Scanner:
    """Text in pieces through some rules: what may be released now, and the hits in it."""

    __slots__ = ("_ahead", "_before", "_behind", "_buf", "_rules")

    def __init__(self, rules: tuple[_Rule, ...]) -> None:
        self._rules = rules
        self._ahead = max(r.ahead for r in rules)
        self._behind = max(r.behind for r in rules)
        self._buf = ""
        self._before = ""  # the end of what was released, for lookbehinds and \b

    def push(self, text: str, final: bool) -> tuple[str, list[Hit]]:
        buf = self._buf + text
        if not buf:
            return "", []
        before = self._before
        off = len(before)
        hits = _find(before + buf, self._rules, off)
        if final:
            cut = len(buf)
        else:
            hold = self._ahead
            for rule in self._rules:  # once per streamed piece: a plain loop, no generator
                n = rule.tail(buf)
                if n > hold:
                    hold = n
            cut = len(buf) - hold
            for h in reversed(hits):  # a match across the cut is kept whole: cut before it
                if h.start - off < cut < h.end - off:
                    cut = h.start - off
            if cut <= 0:
                self._buf = buf
                return "", []
        released = buf[:cut]
        self._buf = buf[cut:]
        if self._behind:
            self._before = (before + released)[-self._behind:]
        if not hits:  # the usual piece: nothing found
            return released, hits
        done = [h for h in hits if h.end <= off + cut]
        for h in done:
            if h.action == "block":
                raise Blocked(h)
        return _redact(released, done, off), done

    @property
    def held(self) -> int:
        return len(self._buf)


class StreamGuard:
    """One streamed text (one choice of an answer): ``feed`` each piece and send what it returns,
    ``finish`` at the end for the rest. ``hits`` collects the redact and log hits as they become
    final (read and clear it as you go); a block hit raises ``Blocked`` from ``feed``/``finish``."""

    __slots__ = ("_gate", "_watch", "hits")

    def __init__(self, rules: RuleSet) -> None:
        self._gate = _Scanner(rules.gate) if rules.gate else None
        self._watch = _Scanner(rules.watch) if rules.watch else None
        self.hits: list[Hit] = []

    def feed(self, text: str, final: bool = False) -> str:
        """What may be sent now of everything fed so far; ``final``: the text ends here (= ``finish``)."""
        if self._watch is not None:
            self.hits += self._watch.push(text, final)[1]
        if self._gate is None:
            return text
        out, hits = self._gate.push(text, final)
        if hits:
            self.hits += hits
        return out

    def finish(self) -> str:
        return self.feed("", True)

    @property
    def held(self) -> int:
        """Characters received but not yet released."""
        return self._gate.held if self._gate is not None else 0


@dataclass(frozen=True)
class Guardrails:
    """What applies to one request: ``input``/``output`` rules (None: none for that side) and
    ``max_input``, the tightest prompt size as ``(characters, policy name)``."""

    input: RuleSet | None
    output: RuleSet | None
    max_input: tuple[int, str] | None

    def check_size(self, chars: int) -> None:
        if self.max_input is not None and chars > self.max_input[0]:
            limit, policy = self.max_input
            raise Blocked(Hit("max_input", "block", policy),
                          f"the prompt is {chars} characters; policy {policy!r} allows {limit}")


def _compile(g: Guardrail, policy: str, cap: int) -> _Rule:
    if isinstance(g, PiiGuardrail):
        return _Pii(g, policy, cap)
    if isinstance(g, BlockedTermsGuardrail):
        return _Terms(g, policy, cap)
    assert isinstance(g, RegexGuardrail)
    return _Regex(g, policy, cap)


def compile_guardrails(policies: Iterable[tuple[str, PolicyDocument]], *, cap: int = 256) -> Guardrails | None:
    """The guardrails of ``(policy name, document)`` pairs; None when they have none.

    ``cap`` bounds how much of a stream is held back for one pattern. Raises ``ValueError``
    for a regex RE2 cannot run (the caller decides whether that fails closed or open)."""
    inputs: list[_Rule] = []
    outputs: list[_Rule] = []
    max_input: tuple[int, str] | None = None
    for name, doc in policies:
        for g in doc.guardrails:
            if isinstance(g, MaxInputGuardrail):
                if max_input is None or g.max_chars < max_input[0]:
                    max_input = (g.max_chars, name)
                continue
            rule = _compile(g, name, cap)
            if g.apply_to in ("input", "both"):
                inputs.append(rule)
            if g.apply_to in ("output", "both"):
                outputs.append(rule)
    if not inputs and not outputs and max_input is None:
        return None
    return Guardrails(RuleSet(inputs) if inputs else None, RuleSet(outputs) if outputs else None, max_input)
