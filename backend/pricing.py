"""What an LLM call cost, from the tokens the provider reported.

Prices come from the ``genai-prices`` package (pydantic's table, maintained by its authors and
versioned with its releases; it needs no network at run time). A deployment overrides the price of
a model it runs privately (``CREWRUN_PRICES='{"my-model": {"input_per_mtok": 0.5,
"output_per_mtok": 1.5}}'``, USD per million tokens); an override wins over the table. A model
neither knows has no cost (None), which the totals report as unknown rather than as zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

_MILLION = Decimal(1_000_000)


class PriceOverride(BaseModel):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # part of input_tokens

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Usage:
        """A provider's usage report as CrewAI hands it over (OpenAI's or Anthropic's names)."""
        details = report.get("prompt_tokens_details") or {}
        cached = report.get("cached_prompt_tokens") or (
            details.get("cached_tokens") if isinstance(details, dict) else 0
        )
        return cls(
            input_tokens=int(report.get("prompt_tokens") or report.get("input_tokens") or 0),
            output_tokens=int(report.get("completion_tokens") or report.get("output_tokens") or 0),
            cached_input_tokens=int(cached or 0),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
        )


class PriceTable:
    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None) -> None:
        self._overrides = dict(overrides or {})
        # The table is imported here, where a worker is built (0.3 s of CPU, once per process), not
        # by the first priced call: it imports httpx2, and openai's SDK looks httpx2 up in
        # sys.modules on every request. While one attempt's thread was half-way through that
        # import, concurrent attempts failed with "partially initialized module 'httpx2' has no
        # attribute 'Timeout'".
        import genai_prices  # noqa: F401

    def cost(self, model: str, usage: Usage, provider: str | None = None) -> float | None:
        """USD, or None when no price is known for the model."""
        override = self._overrides.get(model)
        if override is not None:
            return float(_priced(usage, override))
        return _table_cost(
            _bare(model), provider, usage.input_tokens, usage.output_tokens, usage.cached_input_tokens
        )


def _priced(usage: Usage, price: PriceOverride) -> Decimal:
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cached_rate = (
        price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
    )
    total = (
        Decimal(usage.input_tokens - cached) * Decimal(str(price.input_per_mtok))
        + Decimal(cached) * Decimal(str(cached_rate))
        + Decimal(usage.output_tokens) * Decimal(str(price.output_per_mtok))
    )
    return total / _MILLION


def _bare(model: str) -> str:
    """CrewAI's provider prefixes (``openai/gpt-4o``) are not part of a model's name."""
    return model.split("/", 1)[1] if "/" in model else model


def _table_cost(
    model: str, provider: str | None, input_tokens: int, output_tokens: int, cached: int
) -> float | None:
    from genai_prices import Usage as TableUsage
    from genai_prices import calc_price

    usage = TableUsage(
        input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached or None
    )
    try:
        found = calc_price(usage, model, provider_id=provider) if provider else calc_price(usage, model)
    except LookupError:
        if provider is None:
            return None
        try:  # the provider CrewAI names may not be the table's (a gateway, a proxy)
            found = calc_price(usage, model)
        except LookupError:
            return None
    return float(found.total_price)
