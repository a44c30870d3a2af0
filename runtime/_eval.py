"""Many independent runs of one workflow in virtual time, summarized: what ``ontime eval`` prints.

Run ``s`` uses seed ``seed + s``. Every run goes through the real executor and is audited by a
:class:`LedgerAudit` of its own events, so overspend and lateness are measured, not assumed.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Unpack, cast

import anyio
import numpy as np

from runtime._api import RunSetup, check_plan_options, open_run, refuse_inside_event_loop
from runtime._compile import compile_notice
from runtime._executor import usable_cpus
from runtime._ray import check_ray, ray_map, ray_session
from runtime._sinks import LedgerAudit
from runtime.types import PUSD_PER_USD, Planner, ProfileTable, Snapshot, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runtime._api import PlanOptions, RunOptions, WorkflowLike
    from runtime.types import Reason, Workflow

__all__ = [
    "MAX_RUNS",
    "EvalReport",
    "PlannerTimes",
    "RunSummary",
    "check_many",
    "evaluate",
    "run_seeds",
    "summarize",
    "wilson_interval",
]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The part of one run's result an evaluation aggregates."""

    seed: int
    success: bool
    reason: Reason | None
    cost_pusd: int
    elapsed: float
    overspent: bool
    late: bool
    planner_ms: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class PlannerTimes:
    """How long the planner's decisions took, in milliseconds of wall time."""

    decisions: int
    p50: float
    p95: float
    max: float


@dataclass(frozen=True, slots=True)
class EvalReport:
    """N audited runs summarized: the chance of finishing (with its Wilson 95% interval), what runs cost and
    took (US dollars, seconds), how many overspent or ran late (both 0 by construction; audited from each
    run's own events), why the others failed, and the planner's decision times."""

    planner: str
    budget: float
    deadline: float
    runs: int
    successes: int
    p_success: float
    ci95: tuple[float, float]
    mean_cost: float
    max_cost: float
    mean_elapsed: float
    overspend_runs: int
    late_runs: int
    failure_reasons: dict[str, int]
    planner_ms: PlannerTimes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what ``ontime eval --json`` prints)."""
        return asdict(self) | {"ci95": list(self.ci95)}


MAX_RUNS = 10_000_000  # runs per evaluation or prediction at most: a 95% interval of ±0.03 points


def check_many(
    runs: int, workers: int | None, progress: Callable[[int], None] | None, seed: int, offset: int = 0
) -> None:
    """Raise :class:`UsageError`, before any run starts, unless the numbers of runs and workers, the progress
    callback and the seeds (``offset + seed`` on, one per run) are usable."""
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= MAX_RUNS:
        raise UsageError(f"runs must be an integer in 1..{MAX_RUNS:,}, not {runs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**62 - offset - runs:
        raise UsageError(f"seed must be an integer in 0..{2**62 - offset - runs:,} for {runs} runs, not {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be a positive integer, not {workers!r}")
    if progress is not None and not callable(progress):
        raise UsageError(f"progress must be a function of the number of runs just done, not {progress!r}")


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    return lo, 1.0 if successes == n else min(1.0, centre + half)


async def _run_seeds(
    wf: Workflow, budget: float, deadline: float, seeds: Sequence[int], options: PlanOptions
) -> list[RunSummary]:
    table = ProfileTable.from_workflow(wf)
    out = []
    for seed in seeds:
        audit = LedgerAudit()
        each = cast("RunOptions", {**options, "seed": seed, "table": table, "on_event": audit,
                                   "run_id": f"eval-{seed}", "clock": "virtual"})  # fmt: skip
        async with open_run(wf, budget, deadline, **each) as run:
            r = await run.execute()
        a = audit.result()
        overspent = a.peak_committed_pusd > a.budget_pusd or r.cost_pusd > a.budget_pusd or a.reserved_pusd != 0
        late = (a.last_launch_s is not None and a.last_launch_s >= deadline) or a.last_activity_s > deadline
        late |= r.success and r.elapsed > deadline
        out.append(RunSummary(seed, r.success, r.reason, r.cost_pusd, r.elapsed, overspent, late, r.planner_ms))
    return out


def evaluate(
    workflow: WorkflowLike,
    budget: float,
    deadline: float,
    *,
    runs: int = 1000,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    ray: str | None = None,
    **options: Unpack[PlanOptions],
) -> EvalReport:
    """Run ``runs`` seeds (``seed`` .. ``seed + runs - 1``) in virtual time and summarize them.

    ``workers`` processes share the runs (default: one per usable CPU); results do not depend on it.
    ``ray`` spreads the same chunks of runs over a Ray cluster instead (the extra ``ontime[ray]``): its
    address, ``auto``, or ``local`` to start an instance with ``workers`` CPUs here and stop it after; the
    numbers are those of processes.
    ``progress`` is called with the number of runs just finished. ``options`` are those of
    :func:`runtime.open_run` that make sense for many runs in other processes (:class:`runtime.PlanOptions`;
    the planner as a spec string, since each run builds its own).

    Raises:
        UsageError: bad input, before any run starts.
    """
    check_plan_options(options, "evaluate")
    check_many(runs, workers, progress, seed)
    if ray is not None:
        check_ray(ray)
    setup = RunSetup(workflow, budget, deadline, cast("RunOptions", {**options, "seed": seed, "clock": "virtual"}))
    with compile_notice():
        pl = setup.planner()  # also rejects a bad planner spec, once, before any worker starts
        if ray is None and runs > 1 and (workers or usable_cpus()) > 1:
            _compile_here(pl, setup)
        seeds = list(range(seed, seed + runs))
        summaries = run_seeds(
            setup.workflow, budget, deadline, seeds, workers=workers, progress=progress, ray=ray, **options
        )
    return summarize(summaries, budget=budget, deadline=deadline, planner=pl.name)


def _compile_here(pl: Planner, setup: RunSetup) -> None:
    """MCP's first decision here, so that its kernels compile once, in this process and under its notice, and
    the worker processes load them from numba's cache rather than each compile them at once."""
    from planners.mcp import MCPPlanner  # the default planner; the others' kernels compile in seconds

    if isinstance(pl, MCPPlanner):
        pl.decide(Snapshot.at_start(setup.table, setup.budget_pusd, setup.deadline_s))


def run_seeds(
    workflow: Workflow,
    budget: float,
    deadline: float,
    seeds: Sequence[int],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[Sequence[RunSummary]], bool] | None = None,
    stop_every: int = 100,
    ray: str | None = None,
    **options: Unpack[PlanOptions],
) -> list[RunSummary]:
    """One audited virtual-time run per seed, in ``workers`` processes or, given ``ray`` (an address:
    see :mod:`runtime._ray`), as tasks on that Ray cluster (``workers`` default: its CPUs); summaries in
    seed order, from the same chunks either way.

    ``stop`` is asked after every ``stop_every`` runs, in seed order, whether that is enough; if so the
    rest are cancelled. The answer sees the same runs whatever ``workers`` is, so results do not depend on it.
    """
    refuse_inside_event_loop("runtime.evaluate() (or predict through the executor)", "a worker thread")
    with ray_session(ray, workers) if ray else contextlib.nullcontext(None) as cpus:
        workers = workers or cpus or usable_cpus()
        runs = len(seeds)
        size = max(1, min(50, math.ceil(runs / max(20, 8 * workers))))
        chunks = [list(seeds[lo : lo + size]) for lo in range(0, runs, size)]
        done: list[RunSummary] = []

        def take(part: list[RunSummary]) -> bool:
            """Add a chunk's runs; True once ``stop`` says the runs so far suffice (cut to a checkpoint)."""
            before = len(done)
            done.extend(part)
            if progress:
                progress(len(part))
            if stop is None:
                return False
            for mark in range((before // stop_every + 1) * stop_every, len(done) + 1, stop_every):
                if stop(done[:mark]):
                    del done[mark:]
                    return True
            return False

        if ray:  # the same chunks as tasks, taken in seed order
            calls = [(_run_seeds, workflow, budget, deadline, c, options) for c in chunks]
            with contextlib.closing(ray_map(anyio.run, calls)) as parts:
                for part in parts:
                    if take(part):
                        break
            return done
        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                if take(anyio.run(_run_seeds, workflow, budget, deadline, chunk, options)):
                    break
            return done
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx)
        try:
            futures = [pool.submit(anyio.run, _run_seeds, workflow, budget, deadline, c, options) for c in chunks]
            for fut in futures:  # in seed order, so ``stop`` sees the same prefix whatever the timing
                if take(fut.result()):
                    break
        except BaseException:  # interrupted (Ctrl-C): stop the chunks running, drop those still queued
            _terminate_workers(pool)
            raise
        pool.shutdown(cancel_futures=True)  # enough (``stop``) or all done
        return done


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Drop the queued chunks and end the workers now: else the interpreter's exit waits for every running
    chunk. Python 3.14 has ``pool.terminate_workers()``; before it, the processes are only in ``_processes``
    (which ``shutdown`` clears, so they are taken first)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        with contextlib.suppress(OSError, ValueError):
            proc.terminate()
    for proc in workers:  # gone before we return (a loaded machine may take a moment), killed if not
        with contextlib.suppress(OSError, ValueError, AssertionError):
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)


def summarize(summaries: Sequence[RunSummary], *, budget: float, deadline: float, planner: str) -> EvalReport:
    """Aggregate run summaries into the eval report."""
    n = len(summaries)
    wins = sum(s.success for s in summaries)
    costs = np.array([s.cost_pusd for s in summaries], dtype=np.float64) / PUSD_PER_USD
    elapsed = np.array([s.elapsed for s in summaries])
    ms = np.array([m for s in summaries for m in s.planner_ms])
    p50, p95 = np.percentile(ms, [50, 95]) if ms.size else (0.0, 0.0)
    reasons = Counter(str(s.reason) for s in summaries if not s.success)
    return EvalReport(
        planner=planner,
        budget=budget,
        deadline=deadline,
        runs=n,
        successes=wins,
        p_success=wins / n if n else 0.0,
        ci95=wilson_interval(wins, n),
        mean_cost=float(costs.mean()) if n else 0.0,
        max_cost=float(costs.max()) if n else 0.0,
        mean_elapsed=float(elapsed.mean()) if n else 0.0,
        overspend_runs=sum(s.overspent for s in summaries),
        late_runs=sum(s.late for s in summaries),
        failure_reasons=dict(sorted(reasons.items())),
        planner_ms=PlannerTimes(int(ms.size), float(p50), float(p95), float(ms.max()) if ms.size else 0.0),
    )
