"""adapters/pricing.py: litellm's bundled price map read offline, once, without importing litellm;
real models' prices through it give exact Decimal costs."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

import adapters.pricing as pricing
from adapters.pricing import MAP_FILE, decode_price_map, litellm_map_path, load_price_map
from adapters.usage import UsageRecord
from policies.pricing import MapEntry, PriceBook

D = Decimal
ROOT = Path(__file__).resolve().parents[2]


def rec(provider: str, model: str, prompt: int, completion: int, cached: int = 0, written: int = 0) -> UsageRecord:
    return UsageRecord(request_id="r", route="r", provider=provider, model=model, stream=False, status=200,
                       latency_s=0.1, prompt_tokens=prompt, completion_tokens=completion,
                       cached_read_tokens=cached, cache_write_tokens=written)


def test_the_bundled_map_is_found_and_holds_thousands_of_models() -> None:
    path = litellm_map_path()
    assert path is not None and path.name == MAP_FILE and path.is_file()
    assert len(load_price_map()) > 3000


def test_real_prices_decode_exactly_from_the_json_text() -> None:
    entry = load_price_map()["gpt-4o-mini"]  # $0.15 / $0.60 per Mtok, cached reads $0.075
    assert entry == MapEntry(mode="chat", litellm_provider="openai", input_cost_per_token=D("1.5E-7"),
                             output_cost_per_token=D("6E-7"), cache_read_input_token_cost=D("7.5E-8"))


def test_real_models_cost_exact_decimals() -> None:
    book = PriceBook(price_map=load_price_map())
    # 2,000 prompt tokens of which 1,500 cached, 100 completion: 75 + 112.5 + 60 micro-dollars
    assert book.cost(rec("openai", "gpt-4o-mini", 2000, 100, cached=1500)) == (D("0.0002475"), "litellm")
    # gpt-4o: $2.50 / $10 per Mtok, cached $1.25: 1,000 uncached + 1,000 cached + 500 out
    assert book.cost(rec("openai", "gpt-4o", 2000, 500, cached=1000)) == (D("0.00875"), "litellm")
    # a litellm-kind model string; Anthropic's cache writes ($3.75/Mtok) priced apart from reads ($0.30)
    cost, _ = book.cost(rec("claude", "anthropic/claude-sonnet-4-5", 10_000, 200, cached=4000, written=5000))
    assert cost == D("0.02595")
    assert book.cost(rec("openai", "text-embedding-3-small", 1_000_000, 0)) == (D("0.02"), "litellm")


def test_loaded_once_per_process() -> None:
    assert load_price_map() is load_price_map()


def test_read_offline_without_importing_litellm() -> None:
    """A fresh interpreter with sockets refused: the map loads and litellm stays unimported."""
    script = textwrap.dedent("""
        import socket, sys
        def refuse(*a, **k):
            raise AssertionError("network access")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from adapters.pricing import load_price_map
        m = load_price_map()
        assert len(m) > 3000, len(m)
        assert "litellm" not in sys.modules, "litellm was imported"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_without_litellm_the_map_is_empty_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pricing, "_cached", None)
    monkeypatch.setattr(pricing.importlib.util, "find_spec", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="llmops.pricing"):
        assert dict(load_price_map()) == {}
        assert dict(load_price_map()) == {}
    assert [r.getMessage() for r in caplog.records].count(
        "litellm is not installed: no model price map, only configured prices apply") == 1


def test_malformed_entries_are_skipped_not_the_map(caplog: pytest.LogCaptureFixture) -> None:
    data = (b'{"sample_spec": {"mode": "one of: chat"}, "bad": {"input_cost_per_token": "free"},'
            b' "good": {"input_cost_per_token": 7.5e-08, "output_cost_per_token": 1, "max_tokens": 10}}')
    with caplog.at_level(logging.WARNING, logger="llmops.pricing"):
        entries = decode_price_map(data)
    assert entries == {"good": MapEntry(input_cost_per_token=D("7.5E-8"), output_cost_per_token=D(1))}
    assert "1 malformed entries skipped" in caplog.text


def test_an_unreadable_or_non_object_file_gives_an_empty_map(tmp_path: Path) -> None:
    bad = tmp_path / "map.json"
    bad.write_bytes(b"[1, 2]")
    assert dict(load_price_map(bad)) == {}
    assert dict(load_price_map(tmp_path / "missing.json")) == {}
