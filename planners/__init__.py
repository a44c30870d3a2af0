"""Planners (:class:`runtime.types.Planner`) made from a spec string, search-agent controllers from a name.

``make_planner("retry:small:4", ctx)`` parses ``NAME[:ARG...]`` and calls the factory :data:`PLANNERS` names for NAME.
A factory lives in its own module and is imported on first use (the kernels behind ``mcp`` compile on their first
call), so a new planner is one new module and one line here.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING

from runtime.types import PlannerSpecError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runtime.types import Planner, PlannerContext, QAController

__all__ = ["ABLATIONS", "CONTROLLERS", "PLANNERS", "make_controller", "make_planner"]

# NAME -> "module:factory"; each factory takes the spec's arguments and the run's context.
PLANNERS = {
    "mcp": "planners.mcp:from_spec",
    "retry": "planners.baselines:retry_from_spec",
    "uniform": "planners.baselines:uniform_from_spec",
    "best-retry": "planners.baselines:best_retry_from_spec",
    "best-uniform": "planners.baselines:best_uniform_from_spec",
    "exact": "planners.exact:from_spec",
    "vine": "planners.vine:vine_from_spec",
    "murakkab": "planners.vine:murakkab_from_spec",
    "vine-dp": "planners.vine:dp_from_spec",
}
# QA controller name -> "module:class"; the ablations are VOI without one of its parts.
CONTROLLERS = {
    "voi": "planners.voi:VOIController",
    "bavt": "planners.bavt:BAVT",
    "bats": "planners.qa_baselines:BATS",
    "search-o1": "planners.qa_baselines:SearchO1",
    "search-then-answer": "planners.qa_baselines:SearchThenAnswer",
}
ABLATIONS = ("voi-no-penalty", "voi-no-norm", "voi-no-struct", "voi-no-guards")


def _load(target: str) -> object:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def make_planner(spec: str, ctx: PlannerContext) -> Planner:
    """Build a fresh planner for one run from its spec string.

    Raises:
        PlannerSpecError: unknown planner name, unknown model, or malformed options.
    """
    name, *args = spec.strip().split(":")
    target = PLANNERS.get(name)
    if target is None:
        raise PlannerSpecError(f"unknown planner {spec!r} (known: {', '.join(sorted(PLANNERS))})")
    factory: Callable[[Sequence[str], PlannerContext], Planner] = _load(target)  # type: ignore[assignment]
    return factory(args, ctx)


def make_controller(name: str, seed: int = 0) -> QAController:
    """A search-agent controller by name: one of :data:`CONTROLLERS` or :data:`ABLATIONS` (``seed`` seeds the draws
    of one that makes any, BAVT's node selection).

    Raises:
        UsageError: an unknown name.
    """
    if name in ABLATIONS:
        from planners.voi import VOIController

        return VOIController.without(name.removeprefix("voi-no-"))
    target = CONTROLLERS.get(name)
    if target is None:
        raise UsageError(f"unknown controller {name!r} (known: {', '.join([*CONTROLLERS, *ABLATIONS])})")
    cls: Callable[..., QAController] = _load(target)  # type: ignore[assignment]
    return cls(seed=seed) if "seed" in inspect.signature(cls).parameters else cls()
