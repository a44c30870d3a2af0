"""Clocks: the virtual clock jumps to the next wake-up only when every task of the run waits on it.

These run on both asyncio and trio: library code uses anyio only.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import anyio
import pytest

from runtime import RealClock, VirtualClock

if TYPE_CHECKING:
    from runtime.types._clock import Inbox

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_virtual_time_jumps_and_orders_wakeups() -> None:
    clock = VirtualClock()
    log: list[tuple[str, float]] = []

    async def sleeper(name: str, t: float, key: int) -> None:
        await clock.sleep_until(t, order=(key,))
        log.append((name, clock.now()))

    start = anyio.current_time()
    with clock.participate():
        async with anyio.create_task_group() as tg:
            for key, (name, t) in enumerate([("c", 3600.0), ("a2", 5.0), ("b", 60.0), ("a", 5.0)]):
                # Ties at 5.0 go by key, not by the order trio happens to start the tasks in.
                clock.spawn(tg, partial(sleeper, name, t, -key))
            inbox: Inbox[str] = clock.inbox()
            assert await inbox.get(until=10_000.0) is None  # nothing arrives: times out in virtual time
    assert log == [("a", 5.0), ("a2", 5.0), ("b", 60.0), ("c", 3600.0)]
    assert clock.now() == 10_000.0
    assert anyio.current_time() - start < 5.0  # hours of virtual time in (much) less than seconds of wall time


async def test_time_does_not_move_while_a_task_is_busy_elsewhere() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    async def sleeper() -> None:
        await clock.sleep_until(1.0)

    with clock.participate():
        async with anyio.create_task_group() as tg:
            clock.spawn(tg, sleeper)
            # The participating task waits on a worker thread, not on the clock: time must stand still.
            await anyio.to_thread.run_sync(lambda: None)
            seen.append(clock.now())
            await clock.sleep_until(2.0)
            seen.append(clock.now())
    assert seen == [0.0, 2.0]


async def test_inbox_item_wins_over_timeout_at_the_same_instant() -> None:
    clock = VirtualClock()
    with clock.participate():
        async with anyio.create_task_group() as tg:
            inbox: object = clock.inbox()

            async def producer() -> None:
                await clock.sleep_until(5.0)
                inbox.put("done")  # type: ignore[attr-defined]

            clock.spawn(tg, producer)
            assert await inbox.get(until=5.0) == "done"  # type: ignore[attr-defined]
            assert clock.now() == 5.0


async def test_cancelled_task_sees_the_instant_it_was_cancelled_at() -> None:
    clock = VirtualClock()
    ended: list[float] = []

    async def long_sleeper() -> None:
        try:
            await clock.sleep_until(100.0)
        finally:
            ended.append(clock.now())

    async def canceller(handle_box: list[object]) -> None:
        await clock.sleep_until(7.0)
        handle_box[0].cancel()  # type: ignore[attr-defined]

    with clock.participate():
        async with anyio.create_task_group() as tg:
            box: list[object] = [None]
            box[0] = clock.spawn(tg, long_sleeper)
            clock.spawn(tg, lambda: canceller(box))
            # Another timer well after the cancellation: time must not reach it before the cancelled task ran.
            await clock.sleep_until(50.0)
    assert ended == [7.0]


async def test_real_clock_measures_wall_time_and_speed_scales_it() -> None:
    clock = RealClock(speed=100.0)
    t0 = anyio.current_time()
    await clock.sleep_until(2.0)  # 2 clock seconds = 0.02 wall seconds
    wall = anyio.current_time() - t0
    assert clock.now() >= 2.0
    assert wall < 1.0
    inbox: Inbox[str] = clock.inbox()
    assert await inbox.get(until=clock.now() + 1.0) is None


def test_real_clock_rejects_nonpositive_speed() -> None:
    with pytest.raises(ValueError):
        RealClock(speed=0)


async def test_task_cancelled_before_it_first_waits_does_not_let_time_jump() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    async def victim() -> None:
        try:
            await clock.sleep_until(100.0)
        finally:
            seen.append(clock.now())

    with clock.participate():
        async with anyio.create_task_group() as tg:
            clock.spawn(tg, victim).cancel()  # cancelled before it ever ran
            await clock.sleep_until(1.0)
    assert seen == [0.0]
