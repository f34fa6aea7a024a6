"""The policy benchmark's table, verdict, configs and its section of docs/benchmarks.md (issue 10: ≥ 0.85x)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from loadtests.paired import PairedRun
from loadtests.policy_bench import _config, _parse, _section, _write_doc, policy_table
from loadtests.wrk import WrkResult


def _run(off_rps: float, on_rps: float, off_cpu: float | None = 200.0, on_cpu: float | None = 220.0) -> PairedRun:
    def wrk(rps: float) -> WrkResult:
        return WrkResult(requests=int(rps * 3), duration_s=3.0, rps=rps, p50_ms=1.0, p99_ms=2.0)

    return PairedRun(wrk(off_rps), wrk(on_rps), off_cpu, on_cpu)


def test_verdict_is_on_the_median_paired_ratio() -> None:
    text = policy_table([_run(1000, 900), _run(1000, 700), _run(1000, 860)])
    assert "| on / off | 0.86 |" in text and "PASS:" in text and "ratio range 0.70 to 0.90" in text
    assert "FAIL:" in policy_table([_run(1000, 840)])
    assert policy_table([]) == "(no runs)\n"
    with pytest.raises(SystemExit):
        _parse(["--pairs", "0"])


def test_configs_switch_the_policy_plugins() -> None:
    up = SimpleNamespace(chat_url="http://u/c", stream_url="http://u/s")
    off = _config(1, up, None)
    assert {p["name"]: p.get("enabled", True) for p in off["plugins"]} == {"auth": False, "guardrails": False,
                                                                          "limits": False}
    on = {p["name"]: p for p in _config(1, up, "redis://r:6379/0")["plugins"]}
    assert on["auth"]["settings"] == {"required": "always"} and on["guardrails"]["enabled"] is False
    assert on["limits"]["settings"] == {"backend": "redis", "redis_url": "redis://r:6379/0"}
    memory = {p["name"]: p for p in _config(1, up, "redis://r:6379/0", "limits-memory")["plugins"]}
    assert memory["auth"]["enabled"] is False and memory["limits"]["settings"] == {"backend": "memory"}
    assert off["pricing"]["models"][0]["model"] == "canned"  # both sides price the route alike


def test_the_doc_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n", encoding="utf-8")
    _write_doc(doc, _section(policy_table([_run(1000, 900)]), "cmd one", "off 0, on 0", 21.5))
    _write_doc(doc, _section(policy_table([_run(1000, 800)]), "cmd two", "off 0, on 0", 22.0))
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nkept\n")
    assert text.count("<!-- policy:start") == 1 and text.count("<!-- policy:end -->") == 1
    assert "cmd two" in text and "cmd one" not in text and "(22.0 requests per round trip" in text
