"""Money in integer pico-dollars ("pusd", 10**12 per US dollar), so the ledger's arithmetic is exact.

Floats would let ``spent + reserved`` creep one ulp past the budget and make a journal replay differ from
the live ledger. A pico-dollar resolves every list price to the token, and budgets are capped at
:data:`MAX_BUDGET_USD` so that the int64 sums of the ledger and the planners' kernels never overflow.
"""

from __future__ import annotations

import math

from runtime.types._errors import LimitError

__all__ = ["MAX_BUDGET_USD", "PUSD_PER_USD", "check_budget", "check_limit", "price_per_token_pusd", "to_pusd", "to_usd"]

PUSD_PER_USD = 10**12
MAX_BUDGET_USD = 1_000_000  # a budget no run of ontime's can reach; larger ones are refused, not rounded


def to_pusd(usd: float) -> int:
    """Dollars to pico-dollars, rounded down so a budget is never rounded up."""
    return math.floor(usd * PUSD_PER_USD + 1e-6)


def to_usd(pusd: int) -> float:
    """Pico-dollars to dollars, for people."""
    return pusd / PUSD_PER_USD


def price_per_token_pusd(usd_per_mtok: float) -> int:
    """A list price in dollars per million tokens as pico-dollars per token."""
    return round(usd_per_mtok * 10**6)


def check_limit(name: str, value: float) -> None:
    """Raise :class:`LimitError` unless ``value`` is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimitError(f"{name} must be a number, not {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond any float
        finite = False
    if not finite or value <= 0:
        raise LimitError(f"{name} must be positive and finite, not {value!r}")


def check_budget(budget: float) -> int:
    """A dollar budget as pico-dollars; raise :class:`LimitError` unless it is in (0, :data:`MAX_BUDGET_USD`]."""
    check_limit("budget", budget)
    if budget > MAX_BUDGET_USD:
        raise LimitError(f"budget must be at most ${MAX_BUDGET_USD:,} (MAX_BUDGET_USD), not ${budget:g}")
    return to_pusd(budget)
