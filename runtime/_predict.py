"""How likely a run is to finish within its budget and deadline, before any money is spent.

The MCP paper's closed-loop estimate (Appendix B.6): play ``runs`` complete executions of the online
planner, replanning after every event exactly as a real run would, on the workflow's profiles, and count
the ones that finish within both limits. The estimate is as good as the profiles: on the simulated backend
it is the success rate ``ontime eval`` measures, up to Monte Carlo error, which the 95% interval states.

A planner with a kernel form (MCP, Retry, Uniform: :meth:`runtime.types.Planner.play`) is played whole in a
numba kernel that follows the executor's execution model, in threads (the kernels release the GIL); any
other planner is played through the executor itself, in processes. Given ``ray``, the same chunks run as
tasks on a Ray cluster instead, with the same answer. Predicted runs use seeds of their own
(``PREDICT_SEED_OFFSET`` on), so a prediction never replays the runs an evaluation with small seeds
measures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack, cast

import numpy as np

from runtime._api import RunSetup, check_plan_options
from runtime._compile import compile_notice
from runtime._eval import check_many, run_seeds, wilson_interval
from runtime._executor import usable_cpus
from runtime._ray import check_ray, ray_map, ray_session
from runtime.types import PUSD_PER_USD, Planner, Snapshot, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from runtime._api import PlanOptions, RunOptions, WorkflowLike

__all__ = ["PREDICT_SEED_OFFSET", "Prediction", "predict"]

PREDICT_SEED_OFFSET = 1_000_000_000
CHECKPOINT = 100  # runs between the precision checks, so an early stop does not depend on timing
_CHUNK = 20  # runs per kernel call: small enough for progress and for threads to share the work


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
    method: str  # "kernel" (the planner played in a simulation kernel) or "executor"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what ``ontime predict --json`` prints)."""
        return dataclasses.asdict(self) | {"ci95": list(self.ci95)}


def predict(
    workflow: WorkflowLike,
    budget: float,
    deadline: float,
    *,
    runs: int = 1000,
    precision: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    ray: str | None = None,
    **options: Unpack[PlanOptions],
) -> Prediction:
    """Predict the chance that ``run(workflow, budget, deadline, planner=...)`` finishes within both limits.

    Args:
        runs: closed-loop simulations at most (the interval's half-width is about 1/sqrt(runs)).
        precision: stop early, at a multiple of 100 runs, once the 95% interval's half-width is at most
            this (e.g. 0.03); None runs all ``runs``.
        seed: seeds the simulations (the planner's too); the same seed gives the same prediction.
        workers: threads (kernel) or processes (executor) to simulate in; default one thread per usable CPU,
            or one process. The prediction does not depend on it.
        ray: simulate the same chunks as tasks on a Ray cluster instead (the extra ``ontime[ray]``): its
            address, ``auto``, or ``local`` to start an instance with ``workers`` CPUs here and stop it
            after. The prediction is the one threads or processes give.
        progress: called with the number of simulations just finished.
        options: those of :func:`runtime.open_run` that shape a run (``planner``, ``cancel_siblings``,
            ``rounds``, ``charge_planner_time``, ``output_token_cap``).

    Raises:
        UsageError: bad input, before any simulation.
    """
    check_many(runs, workers, progress, seed, PREDICT_SEED_OFFSET)
    if precision is not None and not (isinstance(precision, int | float) and 0 < precision < 1):
        raise UsageError(f"precision must be a number in (0, 1), not {precision!r}")
    check_plan_options(options, "predict", instance=True)  # an instance is played if it has a kernel form
    if ray is not None:
        check_ray(ray)
    with compile_notice():  # a first use on this machine compiles the planner's closed-loop kernels
        return _predict(workflow, budget, deadline, runs, precision, seed, workers, progress, ray, options)


def _predict(
    workflow: WorkflowLike,
    budget: float,
    deadline: float,
    runs: int,
    precision: float | None,
    seed: int,
    workers: int | None,
    progress: Callable[[int], None] | None,
    ray: str | None,
    options: PlanOptions,
) -> Prediction:
    started = time.perf_counter()
    setup = RunSetup(workflow, budget, deadline, cast("RunOptions", {**options, "seed": seed, "clock": "virtual"}))
    pl = setup.planner()
    start = dataclasses.replace(
        Snapshot.at_start(setup.table, setup.budget_pusd, setup.deadline_s),
        output_tokens_left=options.get("output_token_cap"),
        cancel_siblings=options.get("cancel_siblings", True),
        rounds=options.get("rounds", False),
    )

    def precise_enough(successes: int, n: int) -> bool:
        lo, hi = wilson_interval(successes, n)
        return precision is not None and (hi - lo) / 2 <= precision

    # Planner time charged to the clock changes a run, and only the executor measures it.
    played = None if options.get("charge_planner_time") else _play_in_chunks(
        pl, start, seed, runs, workers, progress, precise_enough, ray
    )  # fmt: skip
    if played is not None:
        ok, spent, elapsed = played
        method = "kernel"
    else:
        check_plan_options(options, "predict through the executor (this planner has no kernel form)")
        summaries = run_seeds(
            setup.workflow, budget, deadline, range(PREDICT_SEED_OFFSET + seed, PREDICT_SEED_OFFSET + seed + runs),
            workers=workers if ray else workers or 1, progress=progress, stop_every=CHECKPOINT, ray=ray,
            stop=(lambda done: precise_enough(sum(s.success for s in done), len(done))) if precision else None,
            **options,
        )  # fmt: skip
        ok = np.array([s.success for s in summaries], np.bool_)
        spent = np.array([s.cost_pusd for s in summaries], np.int64)
        elapsed = np.array([s.elapsed for s in summaries], np.float64)
        method = "executor"
    return Prediction(
        planner=pl.name,
        budget=float(budget),
        deadline=float(deadline),
        runs=int(ok.size),
        p_success=float(ok.mean()),
        ci95=wilson_interval(int(ok.sum()), int(ok.size)),
        expected_cost=float(spent.mean()) / PUSD_PER_USD,
        expected_elapsed=float(elapsed.mean()),
        wall_s=time.perf_counter() - started,
        method=method,
    )


def _play_in_chunks(
    pl: Planner,
    start: Snapshot,
    seed: int,
    runs: int,
    workers: int | None,
    progress: Callable[[int], None] | None,
    enough: Callable[[int, int], bool],
    ray: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Runs 0..runs-1 played by the planner's kernel, in chunks over threads (or Ray tasks), taken in order
    up to the first checkpoint that is ``enough`` (so the answer does not depend on where they ran); None
    if the planner has no kernel form."""
    stream = PREDICT_SEED_OFFSET + seed
    # One run alone first: it compiles or loads the kernels, once. Then the rest of the first chunk and the
    # others over the threads (a whole first chunk alone kept one core idle for a tenth of a 200-run predict);
    # chunks end at multiples of _CHUNK, so the checkpoints stay where they were.
    first = pl.play(start, stream, 0, 1)
    if first is None:
        return None
    parts = [first]
    done, wins = first[0].size, int(first[0].sum())
    if progress:
        progress(done)
    ends = [*range(_CHUNK, runs, _CHUNK), runs]
    calls = [(start, stream, lo, hi - lo) for lo, hi in zip([1, *ends], ends, strict=False) if hi > lo]
    with contextlib.ExitStack() as stack:
        if ray:
            stack.enter_context(ray_session(ray, workers))
            results = stack.enter_context(contextlib.closing(ray_map(pl.play, calls)))
        else:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers or usable_cpus()))
            futures = [pool.submit(pl.play, *args) for args in calls]
            stack.callback(lambda: [fut.cancel() for fut in futures])
            results = (fut.result() for fut in futures)
        for part in results:
            assert part is not None
            parts.append(part)
            done, wins = done + part[0].size, wins + int(part[0].sum())
            if progress:
                progress(part[0].size)
            if done % CHECKPOINT == 0 and enough(wins, done):
                break
    ok, spent, elapsed = (np.concatenate(x) for x in zip(*parts, strict=True))
    return ok, spent, elapsed
