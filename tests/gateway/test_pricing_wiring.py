"""Pricing wired into the gateway: each config generation's PriceBook prices records on the usage
worker (before consumers see them), a reload swaps prices, bad pricing config fails at load."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.testdoubles.function_upstream import FunctionUpstream, chat_completion, stream_chunks
from adapters.upstream.base import Completion, Usage
from gateway.config import ConfigError, ProviderCfg, decode_config
from gateway.pricing_wiring import litellm_prefix
from tests.gateway.inprocess import fn_config, in_process

D = Decimal
MSG = [{"role": "user", "content": "hi"}]
# gpt-4o-mini in litellm's map: $0.15 / $0.60 per Mtok, cached reads $0.075
USAGE = {"prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100,
         "prompt_tokens_details": {"cached_tokens": 1500}}
GPT_4O_MINI_COST = D("0.0002475")  # 500 x 0.15 + 1,500 x 0.075 + 100 x 0.60 micro-dollars


def answer(call: Any) -> Any:
    """OpenAI's wire shape, cached reads in `prompt_tokens_details`, streamed or not."""
    if call.stream:
        chunks = stream_chunks(["Hel", "lo"])
        chunks[-1]["usage"] = USAGE
        return chunks
    body = chat_completion("Hello")
    body["usage"] = USAGE
    return body


async def _records(cfg: dict[str, Any], *requests: dict[str, Any], upstreams: dict[str, Any] | None = None,
                   **kwargs: Any) -> list[Any]:
    async with in_process(cfg, upstreams=upstreams or {"fn": FunctionUpstream(answer)}, **kwargs) as (gw, client):
        seen = _capture(gw)
        for body in requests:
            resp = await client.post("/v1/chat/completions", json=body)
            assert resp.status_code in (200, 404), resp.text
            await resp.aread()
        await gw.usage.drain()
    return seen


def _capture(gw: Any) -> list[Any]:
    seen: list[Any] = []

    class Capture:  # a consumer sees records already priced
        async def consume(self, records: Any) -> None:
            seen.extend((r.request_id, r.cost_usd, r.price_source, r.gpu_usd_per_hour, r.cached_read_tokens)
                        for r in records)

    gw.usage.add_consumer(Capture())
    return seen


@pytest.mark.parametrize("stream", [False, True])
async def test_cached_tokens_from_the_upstream_are_priced_at_the_cached_rate(stream: bool) -> None:
    seen = await _records(fn_config(("r", "gpt-4o-mini")), {"model": "r", "messages": MSG, "stream": stream})
    assert [s[1:] for s in seen] == [(GPT_4O_MINI_COST, "litellm", None, 1500)]


async def test_cache_writes_reported_by_the_adapter_are_priced_apart() -> None:
    cfg = fn_config(("r", "m"), pricing={"models": [{"model": "m", "input_per_mtok": "1", "output_per_mtok": "2",
                                                     "cached_read_per_mtok": "0.1", "cache_write_per_mtok": "1.25"}]})
    usage = Usage(prompt_tokens=10_000, completion_tokens=200, total_tokens=10_200, cached_read_tokens=4000,
                  cache_write_tokens=5000)
    up = FunctionUpstream(lambda call: Completion(raw=b'{"choices": []}', usage=usage))
    seen = await _records(cfg, {"model": "r", "messages": MSG}, upstreams={"fn": up})
    # 1,000 x 1 + 4,000 x 0.1 + 5,000 x 1.25 + 200 x 2 micro-dollars
    assert [s[1:3] for s in seen] == [(D("0.00805"), "config")]


async def test_provider_override_beats_model_wide_and_gpu_hour_providers_record_their_hourly_price() -> None:
    cfg = fn_config(("r", "gpt-4o-mini"), pricing={
        "models": [{"model": "gpt-4o-mini", "output_per_mtok": "1.00"},
                   {"model": "gpt-4o-mini", "provider": "fn", "input_per_mtok": "0.20"}],
        "gpu_hours": [{"provider": "gpu", "usd_per_gpu_hour": "2.50", "gpus": 4}]})
    cfg["providers"].append({"name": "gpu", "kind": "openai", "base_url": "http://gpu.invalid"})
    cfg["routes"].append({"name": "g", "targets": [{"provider": "gpu", "model": "gpt-4o-mini"}]})
    ups = {"fn": FunctionUpstream(answer), "gpu": FunctionUpstream(answer, "gpu")}
    seen = await _records(cfg, {"model": "r", "messages": MSG}, {"model": "g", "messages": MSG}, upstreams=ups)
    # fn: 500 x 0.20 (its own input) + 1,500 x 0.075 (the map's cached) + 100 x 1.00 (any provider's output)
    assert [s[1:4] for s in seen if s[2] == "config"] == [(D("0.0003125"), "config", None)]
    assert [s[1:4] for s in seen if s[2] == "gpu_hour"] == [(None, "gpu_hour", D("10.00"))]


async def test_unpriced_model_is_null_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="llmops.pricing")
    body = {"model": "r", "messages": MSG}
    seen = await _records(fn_config(("r", "our-finetune-7b")), body, body, {"model": "nope", "messages": MSG})
    assert [s[1:3] for s in seen] == [(None, None)] * 3  # two unpriced, one that reached no upstream
    warnings = [r.getMessage() for r in caplog.records if r.name == "llmops.pricing"]
    assert warnings == ["no price for model 'our-finetune-7b' on provider 'fn': cost recorded as null "
                        "(set pricing.models in the config)"]


async def test_the_map_can_be_switched_off() -> None:
    cfg = fn_config(("r", "gpt-4o-mini"), pricing={"use_litellm_map": False})
    seen = await _records(cfg, {"model": "r", "messages": MSG})
    assert [s[1:3] for s in seen] == [(None, None)]


async def test_reload_swaps_prices_and_a_bad_pricing_file_keeps_them(tmp_path: Path) -> None:
    def priced(input_per_mtok: str) -> dict[str, Any]:
        return fn_config(("r", "m"), pricing={"models": [{"model": "m", "input_per_mtok": input_per_mtok,
                                                          "output_per_mtok": "0"}]})

    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(priced("1")))
    body = {"model": "r", "messages": MSG}  # 2,000 prompt tokens at $/Mtok
    async with in_process(priced("1"), upstreams={"fn": FunctionUpstream(answer)}, config_path=path) as (gw, client):
        seen = _capture(gw)

        async def cost() -> Any:
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
            await gw.usage.drain()
            return seen[-1][1]

        assert await cost() == D("0.002")
        path.write_text(yaml.safe_dump(priced("3")))
        await gw.reload()
        assert await cost() == D("0.006")
        path.write_text(yaml.safe_dump(priced("-3")))
        with pytest.raises(ConfigError, match=r"\$\.pricing\.models\[0\]\.input_per_mtok: must be a number >= 0"):
            await gw.reload()
        assert await cost() == D("0.006")


BASE: dict[str, Any] = {"providers": [{"name": "vllm", "kind": "openai", "base_url": "http://vllm:8000/v1"}]}


@pytest.mark.parametrize(("pricing", "error"), [
    ({"gpu_hours": [{"provider": "vlm", "usd_per_gpu_hour": 2}]},
     r"\$\.pricing\.gpu_hours\[0\]\.provider: unknown provider 'vlm' \(known: vllm\)"),
    ({"gpu_hours": [{"provider": "vllm", "usd_per_gpu_hour": 2}, {"provider": "vllm", "usd_per_gpu_hour": 3}]},
     r"\$\.pricing\.gpu_hours\[1\]\.provider: duplicate GPU-hour price for provider 'vllm'"),
    ({"gpu_hours": [{"provider": "vllm", "usd_per_gpu_hour": -1}]},
     r"\$\.pricing\.gpu_hours\[0\]\.usd_per_gpu_hour: must be a number >= 0"),
    ({"gpu_hours": [{"provider": "vllm", "usd_per_gpu_hour": 2, "gpus": 0}]},
     r"\$\.pricing\.gpu_hours\[0\]\.gpus: must be >= 1"),
    ({"models": [{"model": "m", "output_per_mtok": "-0.5"}]},
     r"\$\.pricing\.models\[0\]\.output_per_mtok: must be a number >= 0"),
    ({"models": [{"model": "m", "cached_read_per_mtok": "NaN"}]},
     r"\$\.pricing\.models\[0\]\.cached_read_per_mtok: must be a number >= 0"),
    ({"models": [{"model": "m", "provider": "vllm", "input_per_mtok": 1},
                 {"model": "m", "provider": "vllm", "output_per_mtok": 1}]},
     r"\$\.pricing\.models\[1\]: duplicate price for model 'm' on provider 'vllm'"),
    ({"models": [{"model": "m"}]}, r"\$\.pricing\.models\[0\]: set at least one of input_per_mtok"),
    ({"models": [{"model": "", "input_per_mtok": 1}]}, r"\$\.pricing\.models\[0\]\.model: must be non-empty"),
    ({"models": [{"model": "m", "input_per_mtok": "cheap"}]}, r"\$\.pricing\.models\[0\]\.input_per_mtok"),
])
def test_bad_pricing_config_is_rejected_with_its_key_path(pricing: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        decode_config({**BASE, "pricing": pricing})


def test_the_same_model_may_be_priced_per_provider_and_for_any() -> None:
    cfg = decode_config({**BASE, "pricing": {"models": [{"model": "m", "input_per_mtok": 1},
                                                        {"model": "m", "provider": "vllm", "input_per_mtok": 0}]}})
    assert [m.input_per_mtok for m in cfg.pricing.models] == [D(1), D(0)]


@pytest.mark.parametrize(("provider", "prefix"), [
    ({"kind": "openai", "base_url": "https://api.openai.com/v1"}, "openai"),
    ({"kind": "openai", "base_url": "https://corp.openai.azure.com/openai"}, "azure"),
    ({"kind": "openai", "base_url": "http://vllm:8000/v1"}, None),
    ({"kind": "ollama", "base_url": "http://ollama:11434"}, "ollama"),
    ({"kind": "litellm"}, None),
    ({"kind": "litellm", "litellm_params": {"custom_llm_provider": "bedrock"}}, "bedrock"),
])
def test_litellm_prefix_of_a_provider(provider: dict[str, Any], prefix: str | None) -> None:
    assert litellm_prefix(ProviderCfg(name="p", **provider)) == prefix
