"""The planner interface: what a planner sees (:class:`Snapshot`) and what it answers (:class:`Decision`).

A snapshot is an immutable view of one instant of a run; planners may keep it, hand it to another thread
or simulate from it. Subtasks and models are indices into ``snapshot.table``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.types._events import Reason
    from runtime.types._profiles import ProfileTable

__all__ = ["Decision", "FailedBatch", "InFlight", "Launch", "Played", "Planner", "PlannerContext", "Snapshot"]

Played = tuple[np.ndarray, np.ndarray, np.ndarray]  # closed-loop runs: success, pico-dollars spent, seconds


@dataclass(frozen=True, slots=True)
class Launch:
    """Run ``k`` parallel samples of a subtask on model ``model``."""

    model: int
    k: int


@dataclass(frozen=True, slots=True)
class Decision:
    """One :class:`Launch` per ready subtask to start now; a ready subtask left out waits ("not now").

    ``reason`` says why a planner launches nothing (``Reason.BUDGET``, ``Reason.DEADLINE``); the executor
    reports it as the run's failure reason when nothing is left in flight.
    """

    launches: Mapping[int, Launch] = field(default_factory=dict)
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class InFlight:
    """A batch whose samples have not all ended; ``done`` if its subtask already completed."""

    batch: int
    subtask: int
    model: int
    k: int
    started_at: float
    open_samples: int
    done: bool


@dataclass(frozen=True, slots=True)
class FailedBatch:
    """A batch that ended without a success; ``answered`` if at least one of its samples answered (else every one
    ended in an endpoint error: not an invocation of a repair loop, nor evidence about the case)."""

    subtask: int
    model: int
    k: int
    started_at: float
    ended_at: float
    answered: bool = True


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of a run when a decision is due.

    ``ready`` lists the subtasks that need a decision: every dependency complete, not complete themselves,
    and no batch in flight. Money is in pico-dollars; ``budget_left_pusd`` is after reservations.
    """

    table: ProfileTable
    now: float
    time_left: float
    budget_pusd: int
    budget_left_pusd: int
    output_tokens_left: int | None
    completed: frozenset[int]
    ready: tuple[int, ...]
    in_flight: tuple[InFlight, ...]
    failed: tuple[FailedBatch, ...]
    samples_launched: tuple[int, ...]  # per subtask, over the whole run
    cancel_siblings: bool = True  # the run's sibling rule, which a planner that simulates must follow
    rounds: bool = False  # synchronized rounds: the next decision only once nothing is in flight
    # [i, j] pico-dollars the ledger reserves for one sample, or None: ``table.worst_cost``. It differs from the
    # table once a subtask's real prompt is known (its bound, not the spec's estimate) and includes what checking
    # the output may cost (an LLM judge); a launch of k samples that does not fit k of these is narrowed.
    worst_pusd: np.ndarray | None = None

    def worst(self, i: int, j: int) -> int:
        """What the ledger reserves for one sample of subtask ``i`` on model ``j``."""
        return int((self.table.worst_cost if self.worst_pusd is None else self.worst_pusd)[i, j])

    @classmethod
    def at_start(
        cls,
        table: ProfileTable,
        budget_pusd: int,
        deadline_s: float,
        *,
        cancel_siblings: bool = True,
        rounds: bool = False,
    ) -> Snapshot:
        """The snapshot of a run that has not started yet (what choosing a plan in advance looks at)."""
        return cls(
            table=table,
            now=0.0,
            time_left=deadline_s,
            budget_pusd=budget_pusd,
            budget_left_pusd=budget_pusd,
            output_tokens_left=None,
            completed=frozenset(),
            ready=tuple(i for i in range(table.n_subtasks) if len(table.deps(i)) == 0),
            in_flight=(),
            failed=(),
            samples_launched=(0,) * table.n_subtasks,
            cancel_siblings=cancel_siblings,
            rounds=rounds,
        )


@dataclass(frozen=True, slots=True)
class PlannerContext:
    """What a planner factory may use: the profiles, the limits of the run and its seed."""

    table: ProfileTable
    budget_pusd: int
    deadline_s: float
    seed: int


class Planner(ABC):
    """Decides, at each event that changes what is possible, what to launch on each ready subtask.

    The executor creates one planner per run and calls :meth:`decide` at the start of the run and after
    every subtask completion and batch failure (in synchronized rounds, ``snapshot.rounds``, only once
    nothing is in flight). It re-checks each launch against the ledger and the clock, so a planner cannot
    overspend; a launch on a subtask that is not ready, a model that cannot run it, or ``k < 1`` raises
    :class:`runtime.PlannerError`.

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
        """Runs ``first`` .. ``first + count - 1`` of this planner from ``start`` whole in a simulation kernel,
        each on its own random stream of ``seed``; None if the planner has no kernel form. predict uses it
        to skip the executor's per-event cost, in threads: it must release the GIL."""
        return None
