"""policies/pricing.py: price precedence (override per provider, per model, litellm map, none),
GPU-hour providers, and the cost formula in exact Decimal arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.usage import UsageRecord
from policies.pricing import MapEntry, PartialPrice, PriceBook, PriceOverride, TokenPrice, to_decimal

D = Decimal
# A tiny map in litellm's shape, floats as litellm's JSON has them (0.15 / 0.60 / 0.075 $ per Mtok).
MAP = {
    "gpt-4o-mini": MapEntry(mode="chat", litellm_provider="openai", input_cost_per_token=to_decimal(1.5e-07),
                            output_cost_per_token=to_decimal(6e-07), cache_read_input_token_cost=to_decimal(7.5e-08)),
    "claude-sonnet-4-5": MapEntry(mode="chat", litellm_provider="anthropic", input_cost_per_token=D("3E-6"),
                                  output_cost_per_token=D("1.5E-5"), cache_read_input_token_cost=D("3E-7"),
                                  cache_creation_input_token_cost=D("3.75E-6")),
    "azure/gpt-4o-mini": MapEntry(mode="chat", litellm_provider="azure", input_cost_per_token=D("1.65E-7"),
                                  output_cost_per_token=D("6.6E-7")),
    "text-embedding-3-small": MapEntry(mode="embedding", input_cost_per_token=D("2E-8")),
    "dall-e-3": MapEntry(mode="image_generation", input_cost_per_token=D("1E-6"), output_cost_per_token=D("1E-6")),
    "per-second": MapEntry(mode="chat"),
}


def rec(provider: str, model: str, prompt: int = 0, completion: int = 0, cached: int = 0,
        written: int = 0) -> UsageRecord:
    return UsageRecord(request_id="r", route="r", provider=provider, model=model, stream=False, status=200,
                       latency_s=0.1, prompt_tokens=prompt, completion_tokens=completion,
                       cached_read_tokens=cached, cache_write_tokens=written)


def per_m(**parts: str) -> PartialPrice:
    return PartialPrice.per_million(**{k: D(v) for k, v in parts.items()})


def test_floats_become_exact_decimals_through_str() -> None:
    assert to_decimal(7.5e-08) == D("0.000000075")
    assert to_decimal(0.1) == D("0.1")  # not 0.1000000000000000055511151231257827...
    assert per_m(input="0.15").input == D("0.00000015")


def test_map_price_with_cached_reads_is_exact_and_not_double_counted() -> None:
    book = PriceBook(price_map=MAP)
    # 2,000 prompt tokens of which 1,500 cached: 500 at 0.15, 1,500 at 0.075, 100 out at 0.60 ($/Mtok)
    cost, source = book.cost(rec("openai", "gpt-4o-mini", prompt=2000, completion=100, cached=1500))
    assert (cost, source) == (D("0.0002475"), "litellm")
    assert isinstance(cost, Decimal)
    no_cache, _ = book.cost(rec("openai", "gpt-4o-mini", prompt=2000, completion=100))
    assert no_cache == D("0.00036")


def test_cache_writes_have_their_own_price() -> None:
    book = PriceBook(price_map=MAP)
    # 10,000 prompt = 1,000 uncached + 4,000 read + 5,000 written; 200 out
    cost, _ = book.cost(rec("anthropic", "claude-sonnet-4-5", prompt=10_000, completion=200, cached=4000,
                            written=5000))
    assert cost == 1000 * D("3E-6") + 4000 * D("3E-7") + 5000 * D("3.75E-6") + 200 * D("1.5E-5")
    assert cost == D("0.02595")  # 3,000 + 1,200 + 18,750 + 3,000 micro-dollars


def test_missing_cache_prices_cost_as_input() -> None:
    price = PartialPrice(input=D("1E-6"), output=D("2E-6")).complete()
    assert price == TokenPrice(input=D("1E-6"), output=D("2E-6"), cached_read=D("1E-6"), cache_write=D("1E-6"))
    assert price.cost(100, 10, cached_read=40, cache_write=30) == D("0.00012")


def test_more_cached_than_prompt_never_bills_negative_input() -> None:
    price = TokenPrice(input=D(1), output=D(0), cached_read=D("0.5"), cache_write=D(2))
    assert price.cost(prompt=10, completion=0, cached_read=8, cache_write=4) == D(12)


def test_lookup_order_provider_qualified_then_bare_then_litellm_prefix_of_the_model() -> None:
    book = PriceBook(price_map=MAP, prefixes={"corp-azure": "azure"})
    assert book.resolve("azure", "gpt-4o-mini").price.input == D("1.65E-7")  # type: ignore[union-attr]
    assert book.resolve("corp-azure", "gpt-4o-mini").price.input == D("1.65E-7")  # type: ignore[union-attr]
    assert book.resolve("openai", "gpt-4o-mini").price.input == D("1.5E-7")  # type: ignore[union-attr]
    # a litellm model string: the prefix names the entry's provider
    assert book.resolve("llm", "anthropic/claude-sonnet-4-5").source == "litellm"
    assert book.resolve("llm", "bedrock/claude-sonnet-4-5").source is None  # another provider's price


def test_non_token_entries_are_not_prices() -> None:
    book = PriceBook(price_map=MAP)
    assert book.cost(rec("openai", "dall-e-3", prompt=10)) == (None, None)
    assert book.cost(rec("x", "per-second", prompt=10)) == (None, None)
    emb = book.resolve("openai", "text-embedding-3-small")
    assert emb.price is not None and emb.price.output == 0  # embeddings have no output tokens


def test_unpriced_is_none_never_zero() -> None:
    book = PriceBook(price_map=MAP)
    r = rec("vllm", "my-finetune", prompt=100, completion=5)
    assert book.cost(r) == (None, None)
    r.cost_usd, r.price_source = D(1), "config"  # stale values must not survive a pricing pass
    assert book.price([r]) == [("vllm", "my-finetune")]
    assert (r.cost_usd, r.price_source, r.gpu_usd_per_hour) == (None, None, None)


def test_overrides_win_per_part_and_fall_back_to_the_map() -> None:
    book = PriceBook([PriceOverride(model="gpt-4o-mini", price=per_m(output="1.00"))], price_map=MAP)
    quote = book.resolve("openai", "gpt-4o-mini")
    assert quote.source == "config"
    assert quote.price == TokenPrice(input=D("1.5E-7"), output=D("0.000001"), cached_read=D("7.5E-8"),
                                     cache_write=D("1.5E-7"))
    cost, _ = book.cost(rec("openai", "gpt-4o-mini", prompt=2000, completion=100, cached=1500))
    assert cost == D("0.0002875")  # 75 + 112.5 + 100 micro-dollars


def test_provider_specific_override_beats_model_wide_part_by_part() -> None:
    book = PriceBook([
        PriceOverride(model="llama", price=per_m(input="1", output="2", cached_read="0.5")),
        PriceOverride(model="llama", provider="cheap", price=per_m(input="0.1")),
    ])
    cheap = book.resolve("cheap", "llama").price
    assert cheap == TokenPrice(input=D("1E-7"), output=D("0.000002"), cached_read=D("5E-7"), cache_write=D("1E-7"))
    assert book.resolve("other", "llama").price.input == D("0.000001")  # type: ignore[union-attr]


def test_an_incomplete_override_without_map_entry_is_unpriced() -> None:
    book = PriceBook([PriceOverride(model="mine", price=per_m(input="1"))], price_map=MAP)
    assert book.cost(rec("p", "mine", prompt=10, completion=10)) == (None, None)


def test_gpu_hour_provider_records_hourly_price_not_a_cost() -> None:
    book = PriceBook(gpu_hours={"vllm": D("2.50") * 4}, price_map=MAP)
    r = rec("vllm", "gpt-4o-mini", prompt=100, completion=10)  # even a model the map knows
    assert book.price([r]) == []
    assert (r.cost_usd, r.price_source, r.gpu_usd_per_hour) == (None, "gpu_hour", D("10.00"))
    assert book.cost(r) == (None, "gpu_hour")


def test_per_token_override_on_a_gpu_hour_provider_is_the_alternative() -> None:
    book = PriceBook([PriceOverride(model="llama", provider="vllm", price=per_m(input="0.2", output="0.2")),
                      PriceOverride(model="other", price=per_m(input="9", output="9"))],
                     gpu_hours={"vllm": D(3)})
    assert book.cost(rec("vllm", "llama", prompt=1_000_000)) == (D("0.2"), "config")
    assert book.resolve("vllm", "other").source == "gpu_hour"  # a model-wide price does not override it


def test_records_without_an_upstream_are_left_alone() -> None:
    book = PriceBook(price_map=MAP)
    r = rec("-", "-")
    assert book.price([r], skip_provider="-") == []
    assert (r.cost_usd, r.price_source) == (None, None)


def test_resolutions_are_cached_and_bounded() -> None:
    book = PriceBook(price_map=MAP)
    first = book.resolve("openai", "gpt-4o-mini")
    assert book.resolve("openai", "gpt-4o-mini") is first
    for i in range(5000):
        book.resolve("p", f"m{i}")
    assert len(book._resolved) <= 4096


@pytest.mark.parametrize("prompt", [0, 1, 123_456_789])
def test_cost_is_linear_in_exact_decimals(prompt: int) -> None:
    price = TokenPrice(input=D("1.5E-7"), output=D("6E-7"), cached_read=D("7.5E-8"), cache_write=D("1.5E-7"))
    assert price.cost(prompt, 0) == prompt * D("0.00000015")
