"""Clocks: the executor reads time only through one of these.

:class:`RealClock` is monotonic wall time. :class:`VirtualClock` is a discrete-event clock: when none of the
run's tasks is busy it jumps straight to the next wake-up, so the executor that runs against real endpoints
evaluates a two-hour deadline of the simulated adapter in milliseconds.

Everything that waits in a run must wait through the clock (``sleep_until``, :class:`Inbox`) and every task
must be started with :meth:`Clock.spawn`, or virtual time could jump while a task still had work to do at
the current instant. Waiting on anything else (a planner thread, a slow event consumer) keeps the task
busy, which freezes virtual time: exactly what we want.
"""

from __future__ import annotations

import contextvars
import heapq
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import anyio.lowlevel

from runtime.types._errors import LimitError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from anyio.abc import TaskGroup

__all__ = ["Clock", "Inbox", "RealClock", "TaskHandle", "VirtualClock", "single_error"]

T = TypeVar("T")


class _Waiter:
    __slots__ = ("event", "fired")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.fired = False


class TaskHandle:
    """A task started with :meth:`Clock.spawn`; :meth:`cancel` stops it at once."""

    __slots__ = ("_clock", "scope", "waiter")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.scope = anyio.CancelScope()
        self.waiter: _Waiter | None = None

    def cancel(self) -> None:
        self._clock._on_cancel(self)
        self.scope.cancel()


_current_handle: contextvars.ContextVar[TaskHandle | None] = contextvars.ContextVar("ontime_task", default=None)


class Clock(ABC):
    """Where a run reads the time and waits. Times are seconds on the clock's own scale."""

    @abstractmethod
    def now(self) -> float:
        """The current time."""

    def wall_time_of(self, t: float) -> float | None:
        """Clock time ``t`` on ``time.monotonic()``, or None if this clock does not follow the wall."""
        return None

    @abstractmethod
    async def sleep_until(self, t: float, *, order: tuple[int, ...] = ()) -> None:
        """Return at time ``t`` (at once if it has passed); ``order`` breaks ties on the virtual clock."""

    def spawn(self, tg: TaskGroup, fn: Callable[[], Awaitable[None]], *, name: str | None = None) -> TaskHandle:
        """Start ``fn`` in ``tg`` as a task this clock knows about, inside its own cancel scope."""
        handle = TaskHandle(self)
        self._enter()

        async def runner() -> None:
            _current_handle.set(handle)
            try:
                with handle.scope:
                    await fn()
            finally:
                self._exit()

        tg.start_soon(runner, name=name)
        return handle

    @contextmanager
    def participate(self) -> Iterator[None]:
        """Count the calling task as one of the run's tasks for as long as the context is open."""
        self._enter()
        try:
            yield
        finally:
            self._exit()

    def inbox(self) -> Inbox[T]:
        """A queue whose ``get`` waits through this clock."""
        return Inbox(self)

    # Hooks the virtual clock uses for its bookkeeping; the real clock needs none.
    def _enter(self) -> None:
        return None

    def _exit(self) -> None:
        return None

    def _on_cancel(self, handle: TaskHandle) -> None:
        return None

    def _wake(self, w: _Waiter) -> None:
        if not w.fired:
            w.fired = True
            w.event.set()

    @abstractmethod
    async def _wait(self, w: _Waiter, until: float | None) -> None:
        """Block until ``w`` is woken or the time ``until`` comes."""


class RealClock(Clock):
    """Monotonic wall time, in seconds since the clock was made.

    Args:
        speed: how many clock seconds pass per wall-clock second. 1 is real time; a higher value replays
            a simulated run faster than life (``ontime run --speed 60`` plays a 10-minute deadline in 10 s).
    """

    def __init__(self, speed: float = 1.0) -> None:
        if not (isinstance(speed, int | float) and 0 < speed < float("inf")):
            raise LimitError(f"speed must be positive and finite, not {speed!r}")
        self._t0 = time.monotonic()
        self.speed = speed

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def wall_time_of(self, t: float) -> float | None:
        return self._t0 + t / self.speed

    async def sleep_until(self, t: float, *, order: tuple[int, ...] = ()) -> None:
        await anyio.sleep(max(0.0, (t - self.now()) / self.speed))

    async def _wait(self, w: _Waiter, until: float | None) -> None:
        with anyio.move_on_after(None if until is None else max(0.0, (until - self.now()) / self.speed)):
            await w.event.wait()


class VirtualClock(Clock):
    """Discrete-event time: jumps to the next wake-up when every task of the run waits on the clock.

    Wake-ups at the same instant are delivered one at a time: sleeps before timeouts, then by their
    ``order`` key, then first registered first; a sleep until the current instant also waits its turn. With
    distinct keys a run is a deterministic function of its seed whatever the event loop (trio, for one,
    varies the order it starts tasks in).
    """

    _SLEEP, _TIMEOUT = 0, 1

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, tuple[int, ...], int, _Waiter]] = []
        self._seq = 0
        self._running = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, t: float, *, order: tuple[int, ...] = ()) -> None:
        if t < self._now:
            await anyio.lowlevel.checkpoint()
            return
        w = _Waiter()
        self._push(t, self._SLEEP, order, w)
        await self._block(w)

    async def _wait(self, w: _Waiter, until: float | None) -> None:
        if until is not None:
            self._push(until, self._TIMEOUT, (), w)
        await self._block(w)

    def _push(self, t: float, priority: int, order: tuple[int, ...], w: _Waiter) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, priority, order, self._seq, w))

    async def _block(self, w: _Waiter) -> None:
        # A task cancelled before it ever waited must not count itself idle: time could jump while it
        # still has to report what it did at this instant. Its wake-up is already on the heap: marked fired, so
        # that it is skipped there rather than counting a task that never waited as busy (forever).
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            w.fired = True
            raise
        handle = _current_handle.get()
        if handle is not None:
            handle.waiter = w
        self._running -= 1
        self._advance()
        try:
            await w.event.wait()
        finally:
            if handle is not None:
                handle.waiter = None
            if not w.fired:  # woken by cancellation from outside the clock
                w.fired = True
                self._running += 1

    def _wake(self, w: _Waiter) -> None:
        if not w.fired:
            self._running += 1
        super()._wake(w)

    def _advance(self) -> None:
        while self._running == 0 and self._heap:
            t, _, _, _, w = heapq.heappop(self._heap)
            if w.fired:
                continue
            if t > self._now:
                self._now = t
            self._wake(w)

    def _enter(self) -> None:
        self._running += 1

    def _exit(self) -> None:
        self._running -= 1
        self._advance()

    def _on_cancel(self, handle: TaskHandle) -> None:
        # Count the task as busy now, not when it next runs: it must see the same instant it was
        # cancelled at (to charge the tokens produced so far) before time may move on.
        w = handle.waiter
        if w is not None and not w.fired:
            w.fired = True
            self._running += 1


class Inbox(Generic[T]):
    """An unbounded single-consumer queue whose ``get`` waits through the clock.

    Items waiting together come out smallest ``order`` first, then first in, first out: on the virtual clock
    they were put at the same instant, so the consumer's view does not depend on the order producers ran in.
    """

    __slots__ = ("_clock", "_items", "_seq", "_waiter")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._items: list[tuple[tuple[int, ...], int, T]] = []
        self._seq = 0
        self._waiter: _Waiter | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, order: tuple[int, ...] = ()) -> None:
        self._seq += 1
        heapq.heappush(self._items, (order, self._seq, item))
        w = self._waiter
        if w is not None:
            self._waiter = None
            self._clock._wake(w)

    def take(self) -> T:
        """The next item, without waiting; the inbox must not be empty."""
        return heapq.heappop(self._items)[2]

    async def get(self, until: float | None = None) -> T | None:
        """The next item, or None if the time ``until`` comes first."""
        if not self._items:
            if until is not None and self._clock.now() >= until:
                await anyio.lowlevel.checkpoint()
            else:
                w = self._waiter = _Waiter()
                try:
                    await self._clock._wait(w, until)
                finally:
                    if self._waiter is w:
                        self._waiter = None
        return heapq.heappop(self._items)[2] if self._items else None


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise a task group's lone error on its own, so callers can ``except OntimeError``; a Ctrl-C
    (``KeyboardInterrupt``) among several errors wins, so ``except KeyboardInterrupt`` sees it."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        interrupts = [e for e in leaves if isinstance(e, KeyboardInterrupt)]
        if interrupts or len(leaves) == 1:
            raise (interrupts or leaves)[0] from None
        raise


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in _leaves(e)]
    return [error]
