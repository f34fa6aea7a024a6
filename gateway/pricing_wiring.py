"""The usage worker's pricer: one `PriceBook` per config generation, swapped with it.

Each generation builds its book from `cfg.pricing` and litellm's bundled map (decoded once per
process, in a thread, by `adapters.pricing`). `Gateway` hands the new generation's pricer to
`UsageQueue.set_pricer` when it swaps generations, so a reload changes prices with one reference:
each batch is priced by one book, old or new, never a mix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from urllib.parse import urlparse

from adapters.pricing import load_price_map
from adapters.usage import UsageRecord
from gateway.config import GatewayCfg, ProviderCfg
from policies.pricing import MapEntry, PartialPrice, PriceBook, PriceOverride

__all__ = ["NO_UPSTREAM", "UsagePricer", "build_pricer", "litellm_prefix", "price_book"]

log = logging.getLogger("llmops.pricing")

NO_UPSTREAM = "-"
"""The provider of records no upstream answered (denied, unknown route, admin API): nothing to price."""
_WARNED_MAX = 10_000  # direct routing lets clients name any model: bound what we remember


def litellm_prefix(p: ProviderCfg) -> str | None:
    """The litellm provider whose map keys price this provider's models, when its name is not one."""
    if p.kind == "ollama":
        return "ollama"
    if p.kind == "litellm":
        custom = p.litellm_params.get("custom_llm_provider")
        return custom if isinstance(custom, str) and custom else None
    hosts = [urlparse(u).hostname or "" for u in p.urls()]
    if any(h == "api.openai.com" for h in hosts):
        return "openai"
    if any(h.endswith(".openai.azure.com") for h in hosts):
        return "azure"
    return None


def price_book(cfg: GatewayCfg, price_map: Mapping[str, MapEntry]) -> PriceBook:
    """`cfg` is validated (`check_config`): prices >= 0, no duplicates, GPU-hour providers known."""
    overrides = [
        PriceOverride(model=m.model, provider=m.provider, price=PartialPrice.per_million(
            m.input_per_mtok, m.output_per_mtok, m.cached_read_per_mtok, m.cache_write_per_mtok))
        for m in cfg.pricing.models
    ]
    gpu_hours = {g.provider: g.usd_per_gpu_hour * g.gpus for g in cfg.pricing.gpu_hours}
    prefixes = {p.name: prefix for p in cfg.providers if (prefix := litellm_prefix(p)) is not None}
    return PriceBook(overrides, gpu_hours, price_map, prefixes)


class UsagePricer:
    """`UsageQueue`'s pricer: prices a batch in place and warns once per process about each
    unpriced (provider, model), not per request (the warned set passes from pricer to pricer)."""

    def __init__(self, book: PriceBook, warned: set[tuple[str, str]] | None = None) -> None:
        self.book = book
        self.warned = set() if warned is None else warned

    def __call__(self, batch: Sequence[UsageRecord]) -> None:
        for key in self.book.price(batch, skip_provider=NO_UPSTREAM):
            if key not in self.warned and len(self.warned) < _WARNED_MAX:
                self.warned.add(key)
                log.warning("no price for model %r on provider %r: cost recorded as null "
                            "(set pricing.models in the config)", key[1], key[0])


async def build_pricer(cfg: GatewayCfg, previous: UsagePricer | None = None) -> UsagePricer:
    """The map is decoded in a thread the first time (~0.1 s), then shared."""
    price_map: Mapping[str, MapEntry] = {}
    if cfg.pricing.use_litellm_map:
        price_map = await asyncio.to_thread(load_price_map)
    return UsagePricer(price_book(cfg, price_map), None if previous is None else previous.warned)
