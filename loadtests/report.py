"""Markdown for benchmark results: throughput tables, ratios and PASS/FAIL lines.

Pure functions of measured numbers, so the tables are unit-tested without load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.sweep import Series

__all__ = ["Check", "check_lines", "fmt", "ratio", "ratio_table", "throughput_table"]


@dataclass(frozen=True)
class Check:
    """One target from the issue. `passed=None` means it could not be measured (SKIP)."""

    name: str
    passed: bool | None
    detail: str

    @property
    def line(self) -> str:
        verdict = "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return f"{verdict}: {self.name} — {self.detail}"


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(num: Series | None, den: Series | None, concurrency: int) -> float | None:
    """req/s of `num` over `den` at one concurrency, or None when either point is missing."""
    if num is None or den is None:
        return None
    a, b = num.points.get(concurrency), den.points.get(concurrency)
    if a is None or b is None or b.rps <= 0:
        return None
    return a.rps / b.rps


def throughput_table(series: Sequence[Series], concurrencies: Sequence[int], direct_key: str | None = None) -> str:
    """One row per (concurrency, series); 'added p50' is against the `direct_key` series at that c."""
    direct = next((s for s in series if s.key == direct_key), None)
    head = "| c | series | req/s | p50 ms | p99 ms |"
    sep = "|---:|---|---:|---:|---:|"
    if direct is not None:
        head += " added p50 ms |"
        sep += "---:|"
    head += " errors |"
    sep += "---:|"
    rows = [head, sep]
    for c in concurrencies:
        for s in series:
            p = s.points.get(c)
            name = f"({s.key}) {s.label}" if len(s.key) == 1 else s.label
            if p is None:
                cells = [str(c), name, "-", "-", "-"] + (["-"] if direct is not None else []) + ["-"]
            else:
                cells = [str(c), name, fmt(p.rps, 0), fmt(p.p50_ms), fmt(p.p99_ms)]
                if direct is not None:
                    base = direct.points.get(c)
                    added = None if base is None or s is direct else p.p50_ms - base.p50_ms
                    cells.append("0" if s is direct else fmt(added))
                cells.append(str(p.errors))
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def ratio_table(pairs: Sequence[tuple[str, Series | None, Series | None]], concurrencies: Sequence[int]) -> str:
    """Columns are concurrencies; each row is `label`: num req/s ÷ den req/s."""
    head = "| ratio (req/s) | " + " | ".join(f"c={c}" for c in concurrencies) + " |"
    sep = "|---|" + "---:|" * len(concurrencies)
    rows = [head, sep]
    for label, num, den in pairs:
        cells = [fmt(ratio(num, den, c)) for c in concurrencies]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def check_lines(checks: Sequence[Check]) -> str:
    return "\n".join(f"- {c.line}" for c in checks) + "\n"
