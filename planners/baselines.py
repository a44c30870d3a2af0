"""The MCP paper's baselines: Retry-k (online, a fixed local rule) and Uniform (static budget split).

Both name one model "family"; on a subtask that model cannot run they fall back to the cheapest model that can, so a
family baseline is defined on every workflow. ``best-retry`` and ``best-uniform`` pick the family (and width) that
simulation says is best for the run's budget and deadline, as the paper reports its baselines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from runtime.types import Decision, Launch, Planner, PlannerSpecError, Reason, Snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from runtime.types import PlannerContext, Played, ProfileTable

__all__ = [
    "DEFAULT_WIDTHS",
    "MAX_BATCH",
    "MAX_WIDTH",
    "RetryPlanner",
    "UniformPlanner",
    "best_retry_from_spec",
    "best_uniform_from_spec",
    "retry_from_spec",
    "uniform_from_spec",
]

DEFAULT_WIDTHS = (1, 4, 16, 64)  # the paper's width portfolio K
MAX_WIDTH = DEFAULT_WIDTHS[-1]  # the widest batch either baseline launches at once
MAX_BATCH = 10_000  # the widest batch a spec may ask for (no endpoint takes more in one go)
_SELECTION_SIMS = 2000  # closed-loop simulations per candidate when best-retry or best-uniform chooses
_P = TypeVar("_P", "RetryPlanner", "UniformPlanner")


def _model_for(table: ProfileTable, i: int, model: int) -> int:
    return model if table.kind[i, model] >= 0 else int(table.cheapest[i])


def _decide(table: ProfileTable, snapshot: Snapshot, model: int, want: Callable[[int], int]) -> Decision:
    """A batch on ``model`` (else the cheapest model that can run it) for each ready subtask ``i``, ``want(i)``
    wide or as wide as what is left of the budget and the token cap covers; "budget" if none fits."""
    left, tokens = snapshot.budget_left_pusd, snapshot.output_tokens_left
    launches: dict[int, Launch] = {}
    for i in snapshot.ready:
        j = _model_for(table, i, model)
        worst = snapshot.worst(i, j)
        k = min(want(i), left // worst) if worst > 0 else want(i)
        if tokens is not None:
            k = min(k, tokens // int(table.max_tokens[j]))
        if k >= 1:
            launches[i] = Launch(j, k)
            left -= k * worst
            tokens = None if tokens is None else tokens - k * int(table.max_tokens[j])
    return Decision(launches, reason=None if launches else Reason.BUDGET)


class RetryPlanner(Planner):
    """Retry-k: every ready subtask gets ``k`` samples on ``model`` (fewer if the budget left cannot cover ``k``
    worst cases), as many times as it takes."""

    in_thread = False

    def __init__(self, table: ProfileTable, model: int, k: int) -> None:
        self.table = table
        self.model = model
        self.k = k
        self.name = f"retry:{table.model_names[model]}:{k}"

    def decide(self, snapshot: Snapshot) -> Decision:
        return _decide(self.table, snapshot, self.model, lambda i: self.k)

    def play(self, start: Snapshot, seed: int, first: int, count: int) -> Played:
        from planners.kernels import SnapshotSim

        return SnapshotSim(start)({}, self.model, self.k, count, seed, first_sim=first)


class UniformPlanner(Planner):
    """Uniform: before the run, split the budget evenly across subtasks, each share a fixed number of rollouts
    (share / expected cost of one attempt on ``model``), launched at most :data:`MAX_WIDTH` at a time (and no more
    than the ledger covers) until one succeeds or they run out. Budget never moves between subtasks (static).
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
        # Out of rollouts or out of ledger: either way this static split has no money left for the subtask.
        return _decide(
            self.table, snapshot, self.model, lambda i: min(self.rollouts[i] - snapshot.samples_launched[i], MAX_WIDTH)
        )

    def play(self, start: Snapshot, seed: int, first: int, count: int) -> Played:
        from planners.kernels import SnapshotSim

        return SnapshotSim(start)({}, self.model, MAX_WIDTH, count, seed, rollouts=self.rollouts, first_sim=first)


def _model_arg(ctx: PlannerContext, args: Sequence[str], spec: str) -> int:
    if not args or not args[0]:
        return 0
    try:
        return ctx.table.model_index(args[0])
    except ValueError:
        known = ", ".join(ctx.table.model_names)
        raise PlannerSpecError(f"planner {spec!r}: unknown model {args[0]!r} (models: {known})") from None


def retry_from_spec(args: Sequence[str], ctx: PlannerContext) -> RetryPlanner:
    """``retry[:MODEL[:K]]`` (default: the first model, K = 1)."""
    spec = ":".join(["retry", *args])
    if len(args) > 2:
        raise PlannerSpecError(f"planner {spec!r}: expected retry[:MODEL[:K]]")
    k = 1
    if len(args) == 2:
        k = int(args[1]) if args[1].isdigit() else 0
        if not 1 <= k <= MAX_BATCH:
            raise PlannerSpecError(f"planner {spec!r}: K must be an integer in 1..{MAX_BATCH}, not {args[1]!r}")
    return RetryPlanner(ctx.table, _model_arg(ctx, args, spec), k)


def uniform_from_spec(args: Sequence[str], ctx: PlannerContext) -> UniformPlanner:
    """``uniform[:MODEL]`` (default: the first model)."""
    spec = ":".join(["uniform", *args])
    if len(args) > 1:
        raise PlannerSpecError(f"planner {spec!r}: expected uniform[:MODEL]")
    return UniformPlanner(ctx.table, _model_arg(ctx, args, spec), ctx.budget_pusd)


def best_retry_from_spec(args: Sequence[str], ctx: PlannerContext) -> RetryPlanner:
    """The Retry-k of the best (model, K) by simulation, as the paper reports its Retry baseline."""
    models = range(ctx.table.n_models)
    return _best("best-retry", args, ctx, (RetryPlanner(ctx.table, j, k) for j in models for k in DEFAULT_WIDTHS))


def best_uniform_from_spec(args: Sequence[str], ctx: PlannerContext) -> UniformPlanner:
    """The Uniform of the best model by simulation, as the paper reports its Uniform baseline."""
    models = range(ctx.table.n_models)
    return _best("best-uniform", args, ctx, (UniformPlanner(ctx.table, j, ctx.budget_pusd) for j in models))


def _best(name: str, args: Sequence[str], ctx: PlannerContext, candidates: Iterable[_P]) -> _P:
    """The first of the candidates that succeed most often in closed-loop simulations from the run's start."""
    if args:
        raise PlannerSpecError(f"planner {name!r} takes no options")
    snap = Snapshot.at_start(ctx.table, ctx.budget_pusd, ctx.deadline_s)
    return max(candidates, key=lambda p: float(p.play(snap, ctx.seed, 0, _SELECTION_SIMS)[0].mean()))
