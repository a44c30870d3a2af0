"""Virtual time for a program's run: the clock moves on only when nothing of the run can act at this instant.

A program is code of its own (task groups, events), which the virtual clock cannot see waiting; so its run holds
the clock still (:class:`Quiet`) from the moment a call launches or returns (or the program starts) until the
program has been quiet for :data:`QUIET_ROUNDS` turns of the event loop: a program's work between calls takes no
virtual time. A sandboxed program is another process: its run holds the clock (:class:`Hold`) whenever none of
its requests is outstanding (it is computing) and gives it back while one is (a sandboxed program that computes
while another of its calls waits is seen as waiting: its next call may start late, never early).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from runtime.types import Clock

__all__ = ["QUIET_ROUNDS", "Hold", "Quiet"]

# Turns of the event loop a program must make no call in before virtual time may move on. A program's step from
# one call's result to its next call takes a few turns (a task ends, its task group wakes its parent, the parent
# calls); one that spends more turns between calls only starts its next call later in virtual time, never earlier.
QUIET_ROUNDS = 16


class Hold:
    """One share in the clock's count of busy tasks, taken and given back at will (each idempotent)."""

    __slots__ = ("_clock", "_cm")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._cm: AbstractContextManager[None] | None = None

    def take(self) -> None:
        if self._cm is None:
            self._cm = self._clock.participate()
            self._cm.__enter__()

    def give(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)


class Quiet:
    """Holds the clock while the program may be acting: from each :meth:`touch` until :data:`QUIET_ROUNDS`
    turns of the event loop have passed without one (see the module's docstring)."""

    __slots__ = ("_hold", "_touches", "_wake")

    def __init__(self, clock: Clock) -> None:
        self._hold = Hold(clock)
        self._touches = 0
        self._wake = anyio.Event()

    def touch(self) -> None:
        """The program acted (or may act now): hold the clock until it has been quiet again."""
        self._touches += 1
        self._hold.take()
        self._wake.set()

    async def serve(self) -> None:
        """Give the clock back each time the program has gone quiet; runs until cancelled."""
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                seen, quiet = self._touches, 0
                while quiet < QUIET_ROUNDS:
                    await anyio.lowlevel.checkpoint()
                    seen, quiet = self._touches, 0 if self._touches != seen else quiet + 1
                self._hold.give()
        finally:
            self._hold.give()
