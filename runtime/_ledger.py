"""The budget ledger: reserve the worst case before launching, settle what was used, release the rest.

Invariant (DESIGN.md #1): for every resource with a cap, ``spent + reserved <= cap`` at every instant. A
batch reserves ``k x`` one sample's worst case; each sample, when it ends, settles its real usage and
releases its share. Usage larger than the share reserved for it is a bug and raises
:class:`InvariantError` instead of silently overspending.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.types import InvariantError

__all__ = ["Ledger", "Reservation", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """An amount of every metered resource: pico-dollars, output tokens and tool calls."""

    pusd: int = 0
    output_tokens: int = 0
    tool_calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.pusd + other.pusd, self.output_tokens + other.output_tokens, self.tool_calls + other.tool_calls
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.pusd - other.pusd, self.output_tokens - other.output_tokens, self.tool_calls - other.tool_calls
        )

    def __mul__(self, k: int) -> Usage:
        return Usage(self.pusd * k, self.output_tokens * k, self.tool_calls * k)

    def fits_in(self, other: Usage) -> bool:
        """Is every component of this usage at most the same component of ``other``?"""
        return (
            self.pusd <= other.pusd
            and self.output_tokens <= other.output_tokens
            and self.tool_calls <= other.tool_calls
        )


@dataclass(slots=True)
class Reservation:
    """What is still held back for one batch (or one tool call)."""

    id: int
    held: Usage


class Ledger:
    """Tracks spent and reserved amounts against the budget (in pico-dollars) and the optional caps (None: none)."""

    __slots__ = ("_caps", "_next_id", "reserved", "spent")

    def __init__(self, budget_pusd: int, *, output_token_cap: int | None = None, tool_call_cap: int | None = None):
        unlimited = 2**62
        self._caps = Usage(
            budget_pusd,
            unlimited if output_token_cap is None else output_token_cap,
            unlimited if tool_call_cap is None else tool_call_cap,
        )
        self.spent = Usage()
        self.reserved = Usage()
        self._next_id = 0

    @property
    def budget_pusd(self) -> int:
        return self._caps.pusd

    @property
    def available(self) -> Usage:
        """What may still be reserved: cap - spent - reserved, per resource."""
        return self._caps - self.spent - self.reserved

    def can_reserve(self, amount: Usage) -> bool:
        return amount.fits_in(self.available)

    def reserve(self, amount: Usage) -> Reservation | None:
        """Hold ``amount`` back, or return None (and hold nothing) if a cap would be exceeded."""
        if not self.can_reserve(amount):
            return None
        self.reserved = self.reserved + amount
        self._next_id += 1
        return Reservation(self._next_id, amount)

    def settle(self, res: Reservation, used: Usage, share: Usage) -> Usage:
        """Debit ``used`` against ``share`` of ``res``; release and return the rest of that share."""
        if not share.fits_in(res.held):
            raise InvariantError(f"settling {share} from reservation {res.id} that holds only {res.held}")
        if not used.fits_in(share) or min(used.pusd, used.output_tokens, used.tool_calls) < 0:
            raise InvariantError(f"usage {used} exceeds the {share} reserved for it (reservation {res.id})")
        res.held = res.held - share
        self.reserved = self.reserved - share
        self.spent = self.spent + used
        return share - used
