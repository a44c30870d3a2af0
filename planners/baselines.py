"""The MCP paper's baselines: Retry-k (online, a fixed local rule) and Uniform (static budget split).

Both name one model "family"; on a subtask that model cannot run they fall back to the cheapest model
that can, so a family baseline is defined on every workflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from planners.base import Decision, Launch, Planner, Snapshot

if TYPE_CHECKING:
    from planners.base import Played
    from runtime._profiles import ProfileTable

__all__ = ["MAX_WIDTH", "RetryPlanner", "UniformPlanner"]

MAX_WIDTH = 64  # the widest batch either baseline launches at once (the paper's largest K)


def _width(table: ProfileTable, i: int, j: int, want: int, left_pusd: int, left_tokens: int | None) -> int:
    """The widest batch up to ``want`` whose worst case fits what is left of the budget and token cap."""
    worst = int(table.worst_cost[i, j])
    k = min(want, left_pusd // worst) if worst > 0 else want
    if left_tokens is not None:
        k = min(k, left_tokens // int(table.max_tokens[j]))
    return k


def _model_for(table: ProfileTable, i: int, model: int) -> int:
    return model if table.kind[i, model] >= 0 else int(table.cheapest[i])


class RetryPlanner(Planner):
    """Retry-k: every ready subtask gets ``k`` samples on ``model``, as many times as it takes.

    When the budget left (after reservations) cannot cover ``k`` worst-case samples, the batch shrinks to
    what it can cover, and to nothing when not even one fits.
    """

    in_thread = False

    def __init__(self, table: ProfileTable, model: int, k: int) -> None:
        self.table = table
        self.model = model
        self.k = k
        self.name = f"retry:{table.model_names[model]}:{k}"

    def decide(self, snapshot: Snapshot) -> Decision:
        left, tokens = snapshot.budget_left_pusd, snapshot.output_tokens_left
        launches: dict[int, Launch] = {}
        for i in snapshot.ready:
            j = _model_for(self.table, i, self.model)
            k = _width(self.table, i, j, self.k, left, tokens)
            if k >= 1:
                launches[i] = Launch(j, k)
                left -= k * int(self.table.worst_cost[i, j])
                tokens = None if tokens is None else tokens - k * int(self.table.max_tokens[j])
        return Decision(launches, reason=None if launches else "budget")

    def play(self, start: Snapshot, seed: int, first: int, count: int) -> Played:
        from planners.kernels import SnapshotSim

        return SnapshotSim(start)({}, self.model, self.k, count, seed, first_sim=first)


class UniformPlanner(Planner):
    """Uniform: before the run, split the budget evenly across subtasks and turn each share into a fixed
    number of rollouts (share / expected cost of one attempt on ``model``).

    A ready subtask launches its remaining rollouts (at most :data:`MAX_WIDTH` at a time, and no more than
    the ledger can cover) until one succeeds or its rollouts run out. It never moves budget between
    subtasks: that is what makes it static.
    """

    in_thread = False

    def __init__(self, table: ProfileTable, model: int, budget_pusd: int) -> None:
        self.table = table
        self.model = model
        self.name = f"uniform:{table.model_names[model]}"
        share = budget_pusd // table.n_subtasks
        self.rollouts = tuple(
            int(share // max(1, int(table.mean_cost[i, _model_for(table, i, model)]))) for i in range(table.n_subtasks)
        )

    def decide(self, snapshot: Snapshot) -> Decision:
        left, tokens = snapshot.budget_left_pusd, snapshot.output_tokens_left
        launches: dict[int, Launch] = {}
        for i in snapshot.ready:
            j = _model_for(self.table, i, self.model)
            remaining = self.rollouts[i] - snapshot.samples_launched[i]
            k = _width(self.table, i, j, min(remaining, MAX_WIDTH), left, tokens)
            if k >= 1:
                launches[i] = Launch(j, k)
                left -= k * int(self.table.worst_cost[i, j])
                tokens = None if tokens is None else tokens - k * int(self.table.max_tokens[j])
        # Out of rollouts or out of ledger: either way this static split has no money left for the subtask.
        return Decision(launches, reason=None if launches else "budget")

    def play(self, start: Snapshot, seed: int, first: int, count: int) -> Played:
        from planners.kernels import SnapshotSim

        return SnapshotSim(start)({}, self.model, MAX_WIDTH, count, seed, rollouts=self.rollouts, first_sim=first)
