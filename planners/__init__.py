"""Decision makers behind one interface (:class:`planners.base.Planner`), made from a spec string.

``make_planner("retry:small:4", ...)`` parses ``NAME[:ARG...]``. Built-in names are listed in
:data:`BUILTIN`; any other NAME is looked up as a module ``planners.NAME`` with a ``from_spec`` function,
so a new planner arrives as one new file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planners.base import Planner, Snapshot
from runtime._errors import PlannerSpecError

if TYPE_CHECKING:
    from runtime._profiles import ProfileTable

__all__ = ["BUILTIN", "PlannerContext", "Planner", "make_planner"]


@dataclass(frozen=True, slots=True)
class PlannerContext:
    """What a planner factory may use: the profiles, the limits of the run and its seed."""

    table: ProfileTable
    budget_pusd: int
    deadline_s: float
    seed: int


Factory = Callable[[Sequence[str], PlannerContext], Planner]


def _model_arg(ctx: PlannerContext, args: Sequence[str], spec: str) -> int:
    if not args or not args[0]:
        return 0
    try:
        return ctx.table.model_index(args[0])
    except ValueError:
        raise PlannerSpecError(
            f"planner {spec!r}: unknown model {args[0]!r} (models: {', '.join(ctx.table.model_names)})"
        ) from None


def _retry(args: Sequence[str], ctx: PlannerContext) -> Planner:
    from planners.baselines import RetryPlanner

    spec = ":".join(["retry", *args])
    if len(args) > 2:
        raise PlannerSpecError(f"planner {spec!r}: expected retry[:MODEL[:K]]")
    k = 1
    if len(args) == 2:
        try:
            k = int(args[1])
        except ValueError:
            k = 0
        if k < 1:
            raise PlannerSpecError(f"planner {spec!r}: K must be a positive integer, not {args[1]!r}")
    return RetryPlanner(ctx.table, _model_arg(ctx, args, spec), k)


def _uniform(args: Sequence[str], ctx: PlannerContext) -> Planner:
    from planners.baselines import UniformPlanner

    spec = ":".join(["uniform", *args])
    if len(args) > 1:
        raise PlannerSpecError(f"planner {spec!r}: expected uniform[:MODEL]")
    return UniformPlanner(ctx.table, _model_arg(ctx, args, spec), ctx.budget_pusd)


_SELECTION_SIMS = 2000


def _best_retry(args: Sequence[str], ctx: PlannerContext) -> Planner:
    """The Retry-k of the best (model, K) by simulation, as the paper reports its Retry baseline."""
    from planners.baselines import RetryPlanner
    from planners.kernels import simulate_snapshot
    from planners.mcp import DEFAULT_WIDTHS

    if args:
        raise PlannerSpecError("planner 'best-retry' takes no options")
    snap = Snapshot.at_start(ctx.table, ctx.budget_pusd, ctx.deadline_s)
    values = {
        (j, k): float(simulate_snapshot(snap, {}, j, k, _SELECTION_SIMS, ctx.seed)[0].mean())
        for j in range(ctx.table.n_models)
        for k in DEFAULT_WIDTHS
    }
    j, k = max(values, key=lambda jk: values[jk])
    return RetryPlanner(ctx.table, j, k)


def _best_uniform(args: Sequence[str], ctx: PlannerContext) -> Planner:
    """The Uniform of the best model by simulation, as the paper reports its Uniform baseline."""
    from planners.baselines import MAX_WIDTH, UniformPlanner
    from planners.kernels import simulate_snapshot

    if args:
        raise PlannerSpecError("planner 'best-uniform' takes no options")
    snap = Snapshot.at_start(ctx.table, ctx.budget_pusd, ctx.deadline_s)
    best, best_value = None, -1.0
    for j in range(ctx.table.n_models):
        p = UniformPlanner(ctx.table, j, ctx.budget_pusd)
        ok = simulate_snapshot(snap, {}, j, MAX_WIDTH, _SELECTION_SIMS, ctx.seed, rollouts=p.rollouts)[0]
        if ok.mean() > best_value:
            best, best_value = p, float(ok.mean())
    assert best is not None
    return best


BUILTIN: dict[str, Factory] = {
    "retry": _retry,
    "uniform": _uniform,
    "best-retry": _best_retry,
    "best-uniform": _best_uniform,
}


def make_planner(spec: str, ctx: PlannerContext) -> Planner:
    """Build a fresh planner for one run from its spec string.

    Raises:
        PlannerSpecError: unknown planner name, unknown model, or malformed options.
    """
    name, *args = spec.strip().split(":")
    factory = BUILTIN.get(name)
    if factory is None and name.isidentifier() and name not in ("base", "baselines", "kernels"):
        try:
            module = importlib.import_module(f"planners.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"planners.{name}":
                raise
        else:
            factory = getattr(module, "from_spec", None)
    if factory is None:
        known = sorted(BUILTIN)
        raise PlannerSpecError(f"unknown planner {spec!r} (known: {', '.join(known)})")
    return factory(args, ctx)
