"""The prompts benchmark's verdict (issue 11: template + experiment add <= 0.2 ms to p50 at c=1), its config
(the YAML the gateway must accept) and its section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from loadtests.docsection import write_section
from loadtests.paired import PairedRun
from loadtests.prompts_bench import PROMPTS, _parse, _section, prompts_table
from loadtests.wrk import WrkResult
from policies.prompts.documents import PromptsCfg, semantic_errors
from policies.prompts.templates import compile_template


def _run(plain_p50: float, prompts_p50: float) -> PairedRun:
    def wrk(p50: float) -> WrkResult:
        return WrkResult(requests=3000, duration_s=3.0, rps=1000.0, p50_ms=p50, p99_ms=2 * p50)

    return PairedRun(wrk(plain_p50), wrk(prompts_p50), 500.0, 530.0)


def test_the_verdict_is_on_the_median_paired_p50_difference() -> None:
    text, added = prompts_table([_run(0.6, 0.7), _run(1.5, 1.55), _run(0.8, 1.2)])
    assert added == pytest.approx(0.1) and "PASS:" in text and "pairs at c=1" in text
    text, added = prompts_table([_run(0.6, 0.9), _run(0.6, 0.85)])
    assert added == pytest.approx(0.275) and "FAIL:" in text
    with pytest.raises(SystemExit):
        _parse(["--pairs", "0"])


def test_the_benchmarks_prompts_section_is_a_valid_config() -> None:
    cfg = msgspec.convert(PROMPTS, PromptsCfg)
    assert all(not semantic_errors(doc) for doc in (*cfg.templates, *cfg.experiments))
    for doc in cfg.templates:
        compile_template(doc, 1)  # raises on a template the gateway would refuse
    assert cfg.experiments[0].state == "running" and len(cfg.experiments[0].variants) == 3


def test_the_doc_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n", encoding="utf-8")
    for command in ("cmd one", "cmd two"):
        write_section(doc, "prompts", _section(prompts_table([_run(0.6, 0.65)])[0], command))
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nkept\n") and text.count("<!-- prompts:start") == 1
    assert "cmd two" in text and "cmd one" not in text
