"""The exact optimum for small workflows, by dynamic programming: the ground truth MCP is tested against.

It solves the executor's own execution model over the paper's log-scale action space (every ready subtask
gets a model and a width from K, or waits; K also holds the width a batch shrinks to when the budget
cannot cover a K-wide one, as Retry and MCP do), for instances whose attempts are deterministic in length: every
profile has fixed output tokens, so an attempt's cost and latency are known and only success is random
(``1 - (1 - p)^k`` for a batch of k). Then all samples of a batch end together, which makes the state
small: completed subtasks, the batches in flight with their end times, the money not yet committed, and
the time. Decisions are taken where the executor takes them: at the start and after each batch ends.
"""

from __future__ import annotations

import itertools
import weakref
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from planners.baselines import DEFAULT_WIDTHS, MAX_BATCH
from runtime.types import (
    KIND_FIXED,
    Decision,
    Launch,
    Planner,
    PlannerSpecError,
    ProfileTable,
    Snapshot,
    UsageError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from runtime.types import PlannerContext

__all__ = ["ExactPlanner", "from_spec"]

MAX_SUBTASKS = 6
MAX_STATES = 2_000_000

# A batch in flight: (subtask, model, k, end time). State: (completed mask, batches, uncommitted pusd, now).
Batch = tuple[int, int, int, float]

_SOLVED: weakref.WeakKeyDictionary[ProfileTable, dict[tuple[float, tuple[int, ...]], Any]] = weakref.WeakKeyDictionary()


class ExactPlanner(Planner):
    """Plays the optimal policy of the log-scale action space (see the module docstring).

    Raises:
        PlannerSpecError: a profile is not fixed-length, or the workflow is too large to solve exactly.
    """

    in_thread = True

    def __init__(self, table: ProfileTable, deadline_s: float, widths: Sequence[int] = DEFAULT_WIDTHS) -> None:
        if table.n_subtasks > MAX_SUBTASKS:
            raise PlannerSpecError(f"exact: at most {MAX_SUBTASKS} subtasks, this workflow has {table.n_subtasks}")
        if table.has_history:
            raise PlannerSpecError("exact: solves independent attempts; for a repair loop use vine-dp")
        usable = table.kind >= 0
        if (table.kind[usable] != KIND_FIXED).any():
            raise PlannerSpecError("exact: every profile must have fixed output tokens ({'fixed': N})")
        self.table = table
        self.deadline = float(deadline_s)
        self.widths = tuple(sorted(set(widths)))
        self.name = f"exact:k={','.join(map(str, self.widths))}"
        n = table.n_subtasks
        self._deps = [sum(1 << int(d) for d in table.deps(i)) for i in range(n)]
        self._latency = table.min_latency  # fixed length: the one latency an attempt can have
        self._cost = [
            [table.cost_of(i, j, int(table.fixed_tokens[i, j])) for j in range(table.n_models)] for i in range(n)
        ]
        self._models = [[j for j in range(table.n_models) if usable[i, j]] for i in range(n)]
        self._states = 0
        # One solution per (table, deadline, widths), shared by the planners of every run that uses them:
        # an eval builds a planner per run, and the program does not depend on the run's seed.
        key = (self.deadline, self.widths)
        shared = _SOLVED.setdefault(table, {})
        if key not in shared:
            shared[key] = lru_cache(maxsize=None)(self._value_uncached)
        self._value: Callable[[int, tuple[Batch, ...], int, float], tuple[float, dict[int, Launch]]] = shared[key]

    # -- the dynamic program ---------------------------------------------------------------------------

    def optimum(self, budget_pusd: int) -> float:
        """The optimal probability of finishing a run that has not started, with this budget."""
        return self.value(0, (), budget_pusd, 0.0)

    def value(self, done: int, batches: tuple[Batch, ...], avail: int, now: float) -> float:
        """The optimal probability of finishing from a decision point."""
        return self._value(done, batches, avail, now)[0]

    def action_value(self, snapshot: Snapshot, launches: Mapping[int, Launch]) -> float:
        """Q*(s, a): the optimal probability of finishing after ``launches`` at this decision point, then the
        optimum from the next one, for any action the money left covers (also one outside this planner's
        action space: a width not in K, say). :meth:`state_value` is its maximum over the action space.

        Raises:
            UsageError: the launches reserve more than the money left.
        """
        done, batches, avail, now = self._state(snapshot)
        new, left = list(batches), avail
        for i, x in launches.items():
            left -= x.k * int(self.table.worst_cost[i, x.model])
            new.append((i, x.model, x.k, now + float(self._latency[i, x.model])))
        if left < 0:
            raise UsageError(f"exact: the launches reserve {avail - left} pusd, more than the {avail} left")
        return self._after(done, tuple(new), left)

    def state_value(self, snapshot: Snapshot) -> float:
        """V*(s): the optimal probability of finishing from this decision point."""
        return self.value(*self._state(snapshot))

    def _value_uncached(
        self, done: int, batches: tuple[Batch, ...], avail: int, now: float
    ) -> tuple[float, dict[int, Launch]]:
        t = self.table
        n = t.n_subtasks
        if done == (1 << n) - 1:
            return 1.0, {}
        self._states += 1
        if self._states > MAX_STATES:
            raise PlannerSpecError(f"exact: more than {MAX_STATES} states; the instance is too large to solve exactly")
        busy = {b[0] for b in batches}
        ready = [i for i in range(n) if not done >> i & 1 and i not in busy and self._deps[i] & ~done == 0]
        choices = []
        for i in ready:
            opts: list[tuple[int, int] | None] = [None]
            for j in self._models[i]:
                if now + float(self._latency[i, j]) > self.deadline:
                    continue
                worst = int(t.worst_cost[i, j])
                fits = avail // worst if worst else self.widths[-1]
                # K, plus the width a K-wide batch shrinks to when the budget cannot cover it (what Retry
                # and MCP's base actions launch), so no policy they can play lies outside this space.
                widths = {k for k in self.widths if k <= fits}
                if 0 < fits < self.widths[-1]:
                    widths.add(fits)
                opts.extend((j, k) for k in sorted(widths))
            choices.append(opts)
        best_v, best_a = -1.0, {}
        for combo in itertools.product(*choices):
            left = avail
            new = list(batches)
            action: dict[int, Launch] = {}
            for i, o in zip(ready, combo, strict=True):
                if o is None:
                    continue
                j, k = o
                left -= k * int(t.worst_cost[i, j])
                action[i] = Launch(j, k)
                new.append((i, j, k, now + float(self._latency[i, j])))
            if left < 0:
                continue
            v = self._after(done, tuple(new), left)
            if v > best_v:
                best_v, best_a = v, action
        return max(best_v, 0.0), best_a

    def _after(self, done: int, batches: tuple[Batch, ...], avail: int) -> float:
        """Expected value once the decision is made: the next batch to end decides what happens."""
        if not batches:
            return 0.0  # nothing in flight and nothing launched: the run stops here
        nxt = min(range(len(batches)), key=lambda x: (batches[x][3], x))
        i, j, k, end = batches[nxt]
        rest = batches[:nxt] + batches[nxt + 1 :]
        t = self.table
        freed = avail + k * (int(t.worst_cost[i, j]) - self._cost[i][j])
        q = 1.0 - (1.0 - float(t.p[i, j])) ** k
        v = 0.0
        if q > 0:
            v += q * self.value(done | 1 << i, rest, freed, end)
        if q < 1:
            v += (1 - q) * self.value(done, rest, freed, end)
        return v

    # -- the planner -----------------------------------------------------------------------------------

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision(self._value(*self._state(snapshot))[1])

    def _state(self, snapshot: Snapshot) -> tuple[int, tuple[Batch, ...], int, float]:
        """The program's state at a decision point: completed mask, batches in flight (in launch order, with
        their end times), the money not yet committed and the time."""
        done = sum(1 << i for i in snapshot.completed)
        batches = tuple(
            (b.subtask, b.model, b.k, b.started_at + float(self._latency[b.subtask, b.model]))
            for b in sorted(snapshot.in_flight, key=lambda b: b.batch)
            if not b.done
        )
        return done, batches, snapshot.budget_left_pusd, snapshot.now


def from_spec(args: Sequence[str], ctx: PlannerContext) -> ExactPlanner:
    """``exact[:k=1,4,16,64]``: the optimal policy, for small fixed-length workflows."""
    widths: Sequence[int] = DEFAULT_WIDTHS
    for arg in args:
        key, _, value = arg.partition("=")
        if key != "k":
            raise PlannerSpecError(f"exact: unknown option {arg!r} (k=1,4,16,64)")
        try:
            widths = [int(x) for x in value.split(",") if x]
        except ValueError:
            raise PlannerSpecError(f"exact: bad widths {value!r}") from None
        if not widths or min(widths) < 1 or max(widths) > MAX_BATCH:
            raise PlannerSpecError(f"exact: widths must be integers in 1..{MAX_BATCH}, not {value!r}")
    return ExactPlanner(ctx.table, ctx.deadline_s, widths)
