"""Linear-time regular expressions for patterns written by policy authors: RE2, through pyarrow.

Python's ``re`` backtracks: a pattern such as ``(a+)+$`` takes exponential time on
``"aaaa…!"``, and a guardrail runs its patterns over text the client (or the model)
chose, on the event loop. RE2 (pyarrow's regex kernels, a base dependency) runs in
time linear in the text, whatever the pattern. It does not support lookarounds or
backreferences: ``Re2.compile`` refuses such a pattern with ``ValueError``.

Syntax is RE2's, which for the common subset (classes, repeats, alternation, groups,
``(?i)``) reads like Python's; ``\\d``, ``\\w`` and ``\\b`` are ASCII in RE2. Each call
costs tens of microseconds (a kernel call), so callers test ``search`` (one boolean
pass) before asking for ``spans``. pyarrow is imported on first use only.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Re2"]

# Markers that wrap each match in the replaced text; one absent from the text is chosen.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SENTINELS = ("\x00", *(chr(c) for c in range(0xFDD0, 0xFDF0)))


class Re2:
    """One compiled pattern. ``search(text)``: does it match anywhere; ``spans(text)``: where."""

    __slots__ = ("_find", "_match", "_pa", "_replace", "pattern")

    def __init__(self, pattern: str) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.pattern = pattern
        self._pa = pa
        self._match = (pc.get_function("match_substring_regex"), pc.MatchSubstringOptions(pattern))
        self._find = pc.get_function("replace_substring_regex")
        self._replace: dict[str, Any] = {}
        try:
            self._match[0].call([pa.array([""])], self._match[1])
        except pa.ArrowInvalid as err:
            raise ValueError(f"RE2 cannot run this pattern: {str(err).removeprefix('Invalid regular expression: ')}")\
                from None

    @classmethod
    def compile(cls, pattern: str) -> Re2:
        return cls(pattern)

    def _array(self, text: str) -> Any:
        try:
            return self._pa.array([text])
        except UnicodeEncodeError:  # lone surrogates (JSON decoders refuse them): one U+FFFD each keeps offsets
            return self._pa.array([_SURROGATE.sub("\ufffd", text)])

    def search(self, text: str) -> bool:
        fn, opts = self._match
        return bool(fn.call([self._array(text)], opts)[0].as_py())

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Every non-empty match, leftmost first and non-overlapping, as character offsets."""
        if not self.search(text):
            return []
        mark = next((c for c in _SENTINELS if c not in text), None)
        if mark is None:  # every marker occurs in the text: a contrived input, refused rather than misread
            raise ValueError("text contains every match marker")
        opts = self._replace.get(mark)
        if opts is None:
            import pyarrow.compute as pc

            opts = self._replace[mark] = pc.ReplaceSubstringOptions(self.pattern, f"{mark}\\0{mark}")
        marked = self._find.call([self._array(text)], opts)[0].as_py()
        out: list[tuple[int, int]] = []
        pos = 0
        for i, piece in enumerate(marked.split(mark)):
            if i % 2 and piece:
                out.append((pos, pos + len(piece)))
            pos += len(piece)
        return out
