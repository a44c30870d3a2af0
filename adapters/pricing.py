"""List prices of real models, from genai-prices' bundled snapshot (no network at run time)."""

from __future__ import annotations

__all__ = ["list_price"]


def list_price(provider: str, model: str) -> tuple[float, float]:
    """(input, output) US dollars per million tokens of ``model`` at ``provider``.

    Raises:
        LookupError: genai-prices does not know the model; the spec must then give its prices.
    """
    from genai_prices import Usage, calc_price

    per_input = calc_price(Usage(input_tokens=1_000_000, output_tokens=0), model, provider_id=provider)
    per_output = calc_price(Usage(input_tokens=0, output_tokens=1_000_000), model, provider_id=provider)
    return float(per_input.total_price), float(per_output.total_price)
