"""How likely a run is to finish within its budget and deadline, before any money is spent.

The MCP paper's closed-loop estimate (Appendix B.6): play ``runs`` complete executions of the online
planner, replanning after every event exactly as a real run would, on the simulated backend built from the
workflow's profiles, and count the ones that finish within both limits. The estimate is as good as the
profiles: on the simulated backend it is the success rate ``ontime eval`` measures, up to Monte Carlo
error, which the 95% interval states.

Predicted runs use seeds of their own (``PREDICT_SEED_OFFSET`` on), so a prediction never replays the
runs an evaluation with small seeds measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime._api import WorkflowLike, prepare
from runtime._errors import UsageError
from runtime._eval import run_seeds, summarize, wilson_interval
from runtime._spec import load_workflow
from runtime._workflow import Workflow

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runtime._eval import RunSummary

__all__ = ["PREDICT_SEED_OFFSET", "Prediction", "predict"]

PREDICT_SEED_OFFSET = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Prediction:
    """The predicted chance of finishing within both limits, with what a run would cost and take."""

    planner: str
    budget: float
    deadline: float
    runs: int  # closed-loop simulations behind the estimate
    p_success: float
    ci95: tuple[float, float]  # Wilson 95% interval of p_success
    expected_cost: float  # US dollars, mean over all runs, failed ones included
    expected_elapsed: float  # seconds, mean over all runs
    wall_s: float  # how long the prediction took

    def to_dict(self) -> dict[str, Any]:
        return {
            "planner": self.planner,
            "budget": self.budget,
            "deadline": self.deadline,
            "runs": self.runs,
            "p_success": self.p_success,
            "ci95": list(self.ci95),
            "expected_cost": self.expected_cost,
            "expected_elapsed": self.expected_elapsed,
            "wall_s": self.wall_s,
        }


def predict(
    workflow: WorkflowLike,
    budget: float,
    deadline: float,
    *,
    planner: str | None = None,
    runs: int = 1000,
    precision: float | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> Prediction:
    """Predict the chance that ``run(workflow, budget, deadline, planner=...)`` finishes within both limits.

    Args:
        runs: closed-loop simulations at most (the interval's half-width is about 1/sqrt(runs)).
        precision: stop early, at a multiple of 100 runs, once the 95% interval's half-width is at most
            this (e.g. 0.03); None runs all ``runs``.
        seed: seeds the simulations (the planner's too); the same seed gives the same prediction.
        workers: processes to simulate in; the prediction does not depend on it.
        progress: called with the number of simulations just finished.
        options: as for :func:`runtime.run` (``cancel_siblings``, ``output_token_cap``, ...).
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise UsageError(f"runs must be a positive integer, not {runs!r}")
    if precision is not None and not (isinstance(precision, int | float) and 0 < precision < 1):
        raise UsageError(f"precision must be a number in (0, 1), not {precision!r}")
    started = time.perf_counter()
    wf = workflow if isinstance(workflow, Workflow) else load_workflow(workflow)
    planner_name = prepare(wf, budget, deadline, planner=planner, seed=seed, **options).planner.name

    def precise_enough(done: Sequence[RunSummary]) -> bool:
        lo, hi = wilson_interval(sum(s.success for s in done), len(done))
        return precision is not None and (hi - lo) / 2 <= precision

    seeds = range(PREDICT_SEED_OFFSET + seed, PREDICT_SEED_OFFSET + seed + runs)
    summaries = run_seeds(
        wf, budget, deadline, planner, seeds, workers=workers, progress=progress,
        stop=precise_enough if precision is not None else None, **options,
    )  # fmt: skip
    report = summarize(summaries, budget=budget, deadline=deadline, planner=planner_name)
    lo, hi = report["ci95"]
    return Prediction(
        planner=planner_name,
        budget=float(budget),
        deadline=float(deadline),
        runs=report["runs"],
        p_success=report["p_success"],
        ci95=(lo, hi),
        expected_cost=report["mean_cost"],
        expected_elapsed=report["mean_elapsed"],
        wall_s=time.perf_counter() - started,
    )
