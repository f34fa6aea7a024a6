"""Token prices and what a request cost: pure lookups and Decimal arithmetic, no I/O.

A ``PriceBook`` answers "what does this (provider, model) cost per token", in this order:

1. a config override for that provider and model;
2. the provider's GPU-hour price (a self-hosted endpoint): the record's cost stays null, its
   ``gpu_usd_per_hour`` says what the endpoint costs an hour, and reports spread it over the
   tokens served that hour (a provider-specific per-token override, above, is the alternative);
3. a config override for the model on any provider;
4. litellm's price map: ``<provider>/<model>``, ``<litellm prefix>/<model>``, then the bare model
   (and the model without its own ``prefix/`` when the entry belongs to that prefix);
5. nothing: cost null, never 0.

Overrides may be partial: each missing part falls back to the next source that has it, so an
override of the output price alone keeps the map's input price. A cached-read or cache-write
price missing everywhere costs as input. Cost (nothing counted twice, since ``prompt_tokens``
includes cached reads and cache writes)::

    (prompt - cached_read - cache_write) * input + cached_read * cached_read_price
        + cache_write * cache_write_price + completion * output

Money is ``Decimal`` throughout; map floats become Decimals through ``str()`` (or straight
from the JSON text, see ``adapters.pricing``), never by float arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Literal, Protocol

import msgspec

__all__ = [
    "MapEntry",
    "Metered",
    "PartialPrice",
    "PriceBook",
    "PriceOverride",
    "PriceSource",
    "Quote",
    "TokenPrice",
    "to_decimal",
]

PriceSource = Literal["config", "litellm", "gpu_hour"]

_TOKEN_MODES = frozenset({"chat", "completion", "embedding", "responses", "realtime"})
"""litellm modes priced per token; image, audio, video, rerank, search… entries price other units."""
_RESOLVE_CACHE_MAX = 4096  # distinct (provider, model) pairs kept resolved; direct routing makes it unbounded


def to_decimal(value: Decimal | float | int | str) -> Decimal:
    """A price as an exact Decimal: floats through ``str()`` (7.5e-08 -> Decimal('7.5E-8'))."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(str(value))
    return Decimal(value)


class TokenPrice(msgspec.Struct, frozen=True, kw_only=True):
    """A complete price in dollars per token."""

    input: Decimal
    output: Decimal
    cached_read: Decimal
    cache_write: Decimal

    def cost(self, prompt: int, completion: int, cached_read: int = 0, cache_write: int = 0) -> Decimal:
        # An upstream reporting more cached than prompt tokens is wrong; never bill a negative amount.
        uncached = max(prompt - cached_read - cache_write, 0)
        return (uncached * self.input + cached_read * self.cached_read + cache_write * self.cache_write
                + completion * self.output)


class PartialPrice(msgspec.Struct, frozen=True, kw_only=True):
    """Some parts of a price, in dollars per token; None: ask the next source."""

    input: Decimal | None = None
    output: Decimal | None = None
    cached_read: Decimal | None = None
    cache_write: Decimal | None = None

    @classmethod
    def per_million(
        cls,
        input: Decimal | None = None,  # the price's own name
        output: Decimal | None = None,
        cached_read: Decimal | None = None,
        cache_write: Decimal | None = None,
    ) -> PartialPrice:
        """From dollars per million tokens, exactly (a shift of the exponent, no rounding)."""
        return cls(input=_per_token(input), output=_per_token(output), cached_read=_per_token(cached_read),
                   cache_write=_per_token(cache_write))

    def under(self, other: PartialPrice) -> PartialPrice:
        """These parts, with ``other``'s where these are missing."""
        return PartialPrice(
            input=self.input if self.input is not None else other.input,
            output=self.output if self.output is not None else other.output,
            cached_read=self.cached_read if self.cached_read is not None else other.cached_read,
            cache_write=self.cache_write if self.cache_write is not None else other.cache_write,
        )

    def complete(self) -> TokenPrice | None:
        """A price needs input and output; cache prices default to input."""
        if self.input is None or self.output is None:
            return None
        return TokenPrice(
            input=self.input, output=self.output,
            cached_read=self.input if self.cached_read is None else self.cached_read,
            cache_write=self.input if self.cache_write is None else self.cache_write,
        )


def _per_token(per_mtok: Decimal | None) -> Decimal | None:
    return None if per_mtok is None else to_decimal(per_mtok).scaleb(-6)


class MapEntry(msgspec.Struct, frozen=True, kw_only=True):
    """The token prices of one litellm map entry (its own key names; other keys are ignored)."""

    mode: str | None = None
    litellm_provider: str | None = None
    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None
    cache_read_input_token_cost: Decimal | None = None
    cache_creation_input_token_cost: Decimal | None = None

    def token_price(self) -> PartialPrice | None:
        """None for entries that price something other than tokens (images, seconds, queries)."""
        if self.mode is not None and self.mode not in _TOKEN_MODES:
            return None
        if self.input_cost_per_token is None and self.output_cost_per_token is None:
            return None
        output = self.output_cost_per_token
        if output is None and self.mode == "embedding":  # embeddings produce no tokens
            output = Decimal(0)
        return PartialPrice(input=self.input_cost_per_token, output=output,
                            cached_read=self.cache_read_input_token_cost,
                            cache_write=self.cache_creation_input_token_cost)


class PriceOverride(msgspec.Struct, frozen=True, kw_only=True):
    """A configured price for a model, on one provider or (``provider`` None) on any."""

    model: str
    provider: str | None = None
    price: PartialPrice


class Quote(msgspec.Struct, frozen=True):
    """What a (provider, model) resolves to. ``price`` None with ``source`` None: unpriced."""

    price: TokenPrice | None = None
    source: PriceSource | None = None
    gpu_usd_per_hour: Decimal | None = None


class Metered(Protocol):
    """What pricing reads from (and writes to) a usage record (``adapters.usage.UsageRecord``)."""

    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal | None
    price_source: str | None
    gpu_usd_per_hour: Decimal | None


_UNPRICED = Quote()


class PriceBook:
    """Resolves (provider, model) to a price; immutable once built, so a reload swaps a whole book.

    ``gpu_hours``: provider -> dollars per hour for the whole endpoint (per-GPU price x GPUs).
    ``prefixes``: provider -> its litellm provider prefix when it differs from its name (e.g. a
    provider named ``oai`` pointing at api.openai.com: ``openai``)."""

    def __init__(
        self,
        overrides: Iterable[PriceOverride] = (),
        gpu_hours: Mapping[str, Decimal] | None = None,
        price_map: Mapping[str, MapEntry] | None = None,
        prefixes: Mapping[str, str] | None = None,
    ) -> None:
        self._exact: dict[tuple[str, str], PartialPrice] = {}
        self._any: dict[str, PartialPrice] = {}
        for o in overrides:
            if o.provider is None:
                self._any[o.model] = o.price
            else:
                self._exact[(o.provider, o.model)] = o.price
        self._gpu = dict(gpu_hours or {})
        self._map = price_map or {}
        self._prefixes = dict(prefixes or {})
        self._resolved: dict[tuple[str, str], Quote] = {}  # used by the usage worker only

    def resolve(self, provider: str, model: str) -> Quote:
        key = (provider, model)
        quote = self._resolved.get(key)
        if quote is None:
            quote = self._resolve(provider, model)
            if len(self._resolved) >= _RESOLVE_CACHE_MAX:
                self._resolved.clear()
            self._resolved[key] = quote
        return quote

    def _resolve(self, provider: str, model: str) -> Quote:
        exact = self._exact.get((provider, model))
        if exact is None and provider in self._gpu:
            return Quote(None, "gpu_hour", self._gpu[provider])
        layers = [p for p in (exact, self._any.get(model), self._lookup(provider, model)) if p is not None]
        merged = PartialPrice()
        for layer in layers:  # most specific first: each part from the first layer that has it
            merged = merged.under(layer)
        price = merged.complete()
        if price is None:
            return _UNPRICED
        configured = exact is not None or model in self._any
        return Quote(price, "config" if configured else "litellm")

    def _lookup(self, provider: str, model: str) -> PartialPrice | None:
        """The first litellm map entry, among the candidate keys, that prices tokens."""
        keys = [f"{provider}/{model}"]
        prefix = self._prefixes.get(provider)
        if prefix and prefix != provider and not model.startswith(f"{prefix}/"):
            keys.append(f"{prefix}/{model}")
        keys.append(model)
        for key in keys:
            entry = self._map.get(key)
            if entry is not None and (price := entry.token_price()) is not None:
                return price
        own, sep, bare = model.partition("/")  # litellm strings: "anthropic/claude-sonnet-4-5"
        if sep and (entry := self._map.get(bare)) is not None and entry.litellm_provider == own:
            return entry.token_price()
        return None

    def cost(self, record: Metered) -> tuple[Decimal | None, PriceSource | None]:
        """The record's cost and where its price came from; (None, "gpu_hour") for GPU-hour
        endpoints, (None, None) when unpriced."""
        quote = self.resolve(record.provider, record.model)
        if quote.price is None:
            return None, quote.source
        return quote.price.cost(record.prompt_tokens, record.completion_tokens, record.cached_read_tokens,
                                record.cache_write_tokens), quote.source

    def price(self, records: Sequence[Metered], skip_provider: str | None = None) -> list[tuple[str, str]]:
        """Set ``cost_usd``, ``price_source`` and ``gpu_usd_per_hour`` on each record in place and
        return the unpriced (provider, model) pairs met. Records whose provider is ``skip_provider``
        (no upstream was chosen) are left as they are."""
        unpriced: list[tuple[str, str]] = []
        for r in records:
            if r.provider == skip_provider:
                continue
            quote = self.resolve(r.provider, r.model)
            r.price_source, r.gpu_usd_per_hour = quote.source, quote.gpu_usd_per_hour
            if quote.price is not None:
                r.cost_usd = quote.price.cost(r.prompt_tokens, r.completion_tokens, r.cached_read_tokens,
                                              r.cache_write_tokens)
            else:
                r.cost_usd = None
                if quote.source is None:
                    unpriced.append((r.provider, r.model))
        return unpriced
