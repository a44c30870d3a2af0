"""The ledger: worst-case reservations, settlement, release, and spent + reserved <= cap at every step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import InvariantError, Ledger, Usage

if TYPE_CHECKING:
    from runtime._ledger import Reservation


def test_reserve_settle_release() -> None:
    led = Ledger(1000, output_token_cap=100)
    res = led.reserve(Usage(600, 60))
    assert res is not None
    assert led.available == Usage(400, 40, 2**62)
    released = led.settle(res, used=Usage(120, 10), share=Usage(300, 30))
    assert released == Usage(180, 20)
    assert led.spent == Usage(120, 10) and led.reserved == Usage(300, 30)
    led.settle(res, used=Usage(300, 30), share=Usage(300, 30))
    assert led.reserved == Usage() and led.spent == Usage(420, 40)
    assert res.held == Usage()


def test_reservation_beyond_any_cap_is_refused_and_holds_nothing() -> None:
    led = Ledger(1000, output_token_cap=50, tool_call_cap=1)
    assert led.reserve(Usage(1001)) is None
    assert led.reserve(Usage(10, 51)) is None
    assert led.reserve(Usage(0, 0, 2)) is None
    assert led.reserved == Usage()
    assert led.reserve(Usage(1000, 50, 1)) is not None


def test_settling_more_than_reserved_is_an_invariant_error() -> None:
    led = Ledger(1000)
    res = led.reserve(Usage(100))
    assert res is not None
    with pytest.raises(InvariantError):
        led.settle(res, used=Usage(101), share=Usage(100))
    with pytest.raises(InvariantError):
        led.settle(res, used=Usage(10), share=Usage(200))


ops = st.lists(
    st.tuples(st.sampled_from(["reserve", "settle"]), st.integers(0, 400), st.integers(1, 4), st.floats(0, 1)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(budget=st.integers(1, 2000), token_cap=st.none() | st.integers(1, 300), steps=ops)
def test_spent_plus_reserved_never_exceeds_caps(
    budget: int, token_cap: int | None, steps: list[tuple[str, int, int, float]]
) -> None:
    led = Ledger(budget, output_token_cap=token_cap)
    open_: list[tuple[Reservation, Usage, int]] = []  # reservation, per-sample share, samples left
    for op, amount, k, frac in steps:
        if op == "reserve":
            share = Usage(amount, amount // 4)
            res = led.reserve(share * k)
            if res is not None:
                open_.append((res, share, k))
        elif open_:
            res, share, left = open_.pop(0)
            used = Usage(int(share.pusd * frac), int(share.output_tokens * frac))
            led.settle(res, used, share)
            if left > 1:
                open_.insert(0, (res, share, left - 1))
        assert led.spent.pusd + led.reserved.pusd <= budget
        if token_cap is not None:
            assert led.spent.output_tokens + led.reserved.output_tokens <= token_cap
        assert min(led.spent.pusd, led.reserved.pusd) >= 0
