"""How far a regular expression's match can reach: what a stream scanner must hold back.

A guardrail that scans a streamed answer sees it in chunks; a match split across two
chunks is only found if the scanner keeps the end of one chunk until the next arrives.
``reach(pattern)`` says how much that is, from the pattern's parse tree (Python's own
``re`` parser, so it reads exactly the syntax the policy documents validate):

* ``width``: the longest match (capped: ``a+`` has no bound, see ``Reach.width``);
* ``chars``: a regex matching any run of characters a match can consume, or None when
  that is any character (``.``, ``[^x]``). Text that ends in a character outside it
  cannot be inside a match still in progress, which lets prose be released promptly;
* ``ahead``/``behind``: characters the pattern looks at past its match's ends
  (lookarounds, ``\\b``, ``$``), which must exist before a match is trusted;
* ``required``: a literal every match contains (``tok-`` in ``tok-[0-9a-f]{8}``), and
  ``digit``: whether every match contains a digit: text without them needs no scan at all.

Conservative by construction: anything the walk does not recognise widens the answer
(any character, the cap), never narrows it.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

# The parser behind `re.compile` and its opcodes (private, untyped; the same in 3.11-3.13).
_parser: Any = importlib.import_module("re._parser")
sre: Any = importlib.import_module("re._constants")

__all__ = ["Reach", "reach"]

_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d", sre.CATEGORY_NOT_DIGIT: r"\D", sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S", sre.CATEGORY_WORD: r"\w", sre.CATEGORY_NOT_WORD: r"\W",
}
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


@dataclass(frozen=True)
class Reach:
    """``width`` is at most the ``cap`` given to ``reach``: a longer match may be split by a
    chunk boundary and then only its part in the later chunk is seen (the documented limit)."""

    width: int
    chars: re.Pattern[str] | None  # None: any character may be inside a match
    ahead: int
    behind: int
    required: str = ""  # a literal every match contains (case-sensitive patterns only), or ""
    digit: bool = False  # every match contains a decimal digit (``\\d``: any script's)

    def tail(self, text: str) -> int:
        """How many characters at the end of ``text`` a match still in progress may occupy."""
        if self.chars is None:
            return min(len(text), self.width)
        rev = text[:-self.width - 1:-1]  # the last `width` characters, reversed
        return self.chars.match(rev).end()  # type: ignore[union-attr]  # `[...]*` always matches


class _Walk:
    def __init__(self, state: Any) -> None:
        self.state = state
        self.parts: list[str] = []
        self.any = False
        self.ignorecase = False
        self.ahead = 0
        self.behind = 0

    def items(self, data: Any, after: int = 0) -> None:
        """Walk a sequence; ``after``: the fewest characters any match has after it, which a
        lookahead here reads before it reads past the match (``(?!000)\\d{3}`` never does)."""
        least = [_parser.SubPattern(self.state, [item]).getwidth()[0] for item in data]
        rest = after + sum(least)
        for (op, av), width in zip(data, least, strict=True):
            rest -= width  # now: the fewest characters after this item
            if op == sre.LITERAL:
                self.parts.append(_char(av))
            elif op in (sre.NOT_LITERAL, sre.ANY):
                self.any = True
            elif op == sre.IN:
                self.charset(av)
            elif op in _REPEATS:
                self.items(av[2], rest)
            elif op == sre.SUBPATTERN:
                _group, add_flags, _del_flags, sub = av
                self.ignorecase |= bool(add_flags & re.IGNORECASE)
                self.items(sub, rest)
            elif op == sre.ATOMIC_GROUP:
                self.items(av, rest)
            elif op == sre.BRANCH:
                for sub in av[1]:
                    self.items(sub, rest)
            elif op in (sre.ASSERT, sre.ASSERT_NOT):
                direction, sub = av
                width = min(sub.getwidth()[1], 1 << 16)
                if direction == 1:
                    self.ahead = max(self.ahead, width - rest)
                else:
                    self.behind = max(self.behind, width)
            elif op == sre.AT:  # \b, \B, ^, $, \A, \Z: one character either side
                self.behind = max(self.behind, 1)
                if rest == 0:
                    self.ahead = max(self.ahead, 1)
            else:  # group references, conditionals, anything newer: assume the worst
                self.any = True

    def charset(self, items: Any) -> None:
        for op, av in items:
            if op == sre.LITERAL:
                self.parts.append(_char(av))
            elif op == sre.RANGE:
                self.parts.append(f"{_char(av[0])}-{_char(av[1])}")
            elif op == sre.CATEGORY and av in _CATEGORIES:
                self.parts.append(_CATEGORIES[av])
            else:  # NEGATE ([^...]) and the rest: nearly any character
                self.any = True


def _char(code: int) -> str:
    return f"\\U{code:08x}"


def reach(pattern: str, flags: int = 0, *, cap: int = 256) -> Reach:
    """The reach of ``pattern`` (compiled with ``flags``); ``re.error`` if it does not compile."""
    tree = _parser.parse(pattern, flags)
    walk = _Walk(tree.state)
    walk.items(tree.data)
    width = min(tree.getwidth()[1], cap)
    if "[:" in pattern:  # POSIX classes: Python reads a set of literals, RE2 a class; don't guess
        walk.any = True
    ignorecase = walk.ignorecase or bool(tree.state.flags & re.IGNORECASE)
    required = "" if ignorecase else _required(tree.data)
    chars = None
    if not walk.any:
        body = "".join(walk.parts)
        chars = re.compile(f"[{body}]*" if body else "", re.IGNORECASE if ignorecase else 0)
    return Reach(width=width, chars=chars, ahead=min(walk.ahead, cap), behind=min(walk.behind, cap),
                 required=required, digit=_needs_digit(tree.data))


def _digits_only(op: Any, av: Any) -> bool:
    if op == sre.LITERAL:
        return chr(av).isdecimal()
    if op == sre.IN:
        return bool(av) and all((o == sre.CATEGORY and a == sre.CATEGORY_DIGIT)
                                or (o == sre.RANGE and 0x30 <= a[0] <= a[1] <= 0x39)
                                or (o == sre.LITERAL and chr(a).isdecimal()) for o, a in av)
    return False


def _needs_digit(data: Any) -> bool:
    """Whether every match contains a digit: some item in the sequence is one, or is a group, a repeat
    (at least once) or a choice all of whose branches need one."""
    for op, av in data:
        if _digits_only(op, av):
            return True
        if op in _REPEATS and av[0] >= 1 and _needs_digit(av[2]):
            return True
        if op == sre.SUBPATTERN and _needs_digit(av[3]):
            return True
        if op == sre.BRANCH and all(_needs_digit(alt) for alt in av[1]):
            return True
    return False


def _required(data: Any) -> str:
    """The longest literal that every match contains: a run of literals in the pattern's sequence,
    or one inside a group or a repeat that occurs at least once (``(?:\\d+\\.){3}`` needs ".")."""
    best, run = "", ""
    for op, av in data:
        if op == sre.LITERAL:
            run += chr(av)
            if len(run) > len(best):
                best = run
            continue
        if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):  # zero-width: a run goes on past them
            continue
        run = ""
        inner = ""
        if op in _REPEATS and av[0] >= 1:
            inner = _required(av[2])
        elif op == sre.SUBPATTERN and not av[1] & re.IGNORECASE:
            inner = _required(av[3])
        elif op == sre.ATOMIC_GROUP:
            inner = _required(av)
        if len(inner) > len(best):
            best = inner
    return best
