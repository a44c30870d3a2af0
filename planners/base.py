"""The planner interface: one method, ``decide(snapshot) -> Decision``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from runtime._snapshot import Decision, FailedBatch, InFlight, Launch, Snapshot

if TYPE_CHECKING:
    import numpy as np

    Played = tuple[np.ndarray, np.ndarray, np.ndarray]  # per run: success, pico-dollars spent, seconds elapsed

__all__ = ["Decision", "FailedBatch", "InFlight", "Launch", "Planner", "Snapshot"]


class Planner(ABC):
    """Decides, at each event that changes what is possible, what to launch on each ready subtask.

    The executor creates one planner per run and calls :meth:`decide` at the start of the run and after
    every subtask completion and batch failure (in synchronized rounds, ``snapshot.rounds``, only once
    nothing is in flight). It re-checks each launch against the ledger and the clock,
    so a planner cannot overspend; a launch on a subtask that is not ready, a model that cannot run it,
    or ``k < 1`` raises :class:`runtime.PlannerError`.

    Attributes:
        name: the spec string that made this planner (``retry:small:4``); appears in events.
        in_thread: whether ``decide`` is heavy enough to run in a worker thread (the event loop keeps
            consuming events meanwhile). Cheap rules set it to False to save the thread hop.
    """

    name: str = "planner"
    in_thread: bool = True

    @abstractmethod
    def decide(self, snapshot: Snapshot) -> Decision:
        """Return the launches to make now; may be called from a worker thread."""

    def play(self, start: Snapshot, seed: int, first: int, count: int) -> Played | None:
        """Runs ``first`` .. ``first + count - 1`` of this planner from ``start``, played whole in a
        simulation kernel (the executor's execution model, on the profiles), each from its own random
        stream of ``seed``; or None when the planner has no kernel form. predict uses it to avoid the
        executor's per-event cost; it must release the GIL, as predict plays chunks in threads."""
        return None
