"""How good MCP's decisions are: against the exact optimum, and against the best base policy.

    python -m benchmarks.mcp_quality [--runs 4000] [--release-runs 400] [--out-dir benchmarks/results]

1. ``mcp_vs_exact.csv``: on ``examples/mixed_diamond.json`` (fixed output tokens, so the dynamic program of
   ``planners/exact.py`` gives the optimum of the log-scale action space), over a grid of budgets and
   deadlines: the optimum, MCP (default), MCP with the paper's portfolio only (``mixed=0``), and the best
   Retry and best Uniform baselines, each with a 95% interval, and MCP's gap to the optimum in points.
2. ``mcp_safe_improvement.csv``: on the shipped examples, MCP against the best base policy of its
   portfolio family (best Retry over models and widths), per cell (the paper's Theorems 3 and 6).

Success rates are closed-loop runs played in the simulation kernels (what ``runtime.predict`` does; its
agreement with runs through the executor is checked by ``tests/test_predict.py`` and
``benchmarks/predict_calibration.py``). Prints tables and writes CSVs.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import runtime
from benchmarks._report import EXAMPLES, RESULTS, console, machine, parser, rows_table, write_csv
from planners import make_planner
from planners.exact import ExactPlanner
from runtime import PlannerContext

EXACT_GRID = ((0.02, 0.03, 0.05, 0.08), (30.0, 45.0, 60.0))
SAFE_CELLS = (
    ("chain.json", 0.01, 30.0),
    ("chain.json", 0.02, 40.0),
    ("chain.json", 0.05, 60.0),
    ("diamond.json", 0.01, 60.0),
    ("diamond.json", 0.02, 40.0),
    ("diamond.json", 0.03, 30.0),
    ("mixed_diamond.json", 0.03, 45.0),
    ("mixed_diamond.json", 0.05, 30.0),
    ("release20.json", 0.5, 600.0),
    ("release20.json", 1.0, 900.0),
    ("release20.json", 2.0, 1200.0),
)


def exact_value(wf: runtime.Workflow, budget: float, deadline: float) -> float:
    table = runtime.ProfileTable.from_workflow(wf)
    pusd = runtime.types.to_pusd(budget)
    planner = make_planner("exact", PlannerContext(table, pusd, deadline, 0))
    assert isinstance(planner, ExactPlanner)
    return planner.optimum(pusd)


def rate(wf: runtime.Workflow, budget: float, deadline: float, planner: str, runs: int) -> runtime.Prediction:
    return runtime.predict(wf, budget, deadline, planner=planner, runs=runs)


def fmt(p: runtime.Prediction) -> str:
    return f"{p.p_success:.3f} [{p.ci95[0]:.3f}, {p.ci95[1]:.3f}]"


def versus_exact(runs: int) -> list[dict[str, Any]]:
    wf = runtime.load_workflow(EXAMPLES / "mixed_diamond.json")
    rows = []
    for budget, deadline in itertools.product(*EXACT_GRID):
        t0 = time.perf_counter()
        v = exact_value(wf, budget, deadline)
        mcp = rate(wf, budget, deadline, "mcp", runs)
        paper = rate(wf, budget, deadline, "mcp:mixed=0", runs)
        retry = rate(wf, budget, deadline, "best-retry", runs)
        uniform = rate(wf, budget, deadline, "best-uniform", runs)
        rows.append(
            {
                "budget": budget,
                "deadline": deadline,
                "exact": round(v, 4),
                "mcp": fmt(mcp),
                "gap_pts": round(100 * (v - mcp.p_success), 1),
                "mcp_paper_portfolio": fmt(paper),
                "paper_gap_pts": round(100 * (v - paper.p_success), 1),
                "best_retry": fmt(retry),
                "best_uniform": fmt(uniform),
                "runs": runs,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        console.print(rows[-1])
    return rows


def safe_improvement(runs: int, release_runs: int) -> list[dict[str, Any]]:
    rows = []
    for spec, budget, deadline in SAFE_CELLS:
        t0 = time.perf_counter()
        wf = runtime.load_workflow(EXAMPLES / spec)
        n = release_runs if spec == "release20.json" else runs
        mcp = rate(wf, budget, deadline, "mcp", n)
        base = rate(wf, budget, deadline, "best-retry", n)
        uniform = rate(wf, budget, deadline, "best-uniform", n)
        rows.append(
            {
                "spec": spec,
                "budget": budget,
                "deadline": deadline,
                "mcp": fmt(mcp),
                "best_retry": f"{fmt(base)} {base.planner}",
                "best_uniform": f"{fmt(uniform)} {uniform.planner}",
                "gain_pts": round(100 * (mcp.p_success - max(base.p_success, uniform.p_success)), 1),
                "runs": n,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        console.print(rows[-1])
    return rows


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--runs", type=int, default=4000, help="closed-loop runs per planner and cell")
    ap.add_argument("--release-runs", type=int, default=400, help="runs per cell on release20 (slower)")
    ap.add_argument("--out-dir", default=str(RESULTS))
    args = ap.parse_args()
    exact = versus_exact(args.runs)
    console.print(rows_table(exact, title="MCP against the exact optimum (mixed_diamond)"))
    safe = safe_improvement(args.runs, args.release_runs)
    console.print(rows_table(safe, title="MCP against the best base policies"))
    console.print(machine())
    out = Path(args.out_dir)
    console.print(
        f"wrote {write_csv(exact, out / 'mcp_vs_exact.csv')}, {write_csv(safe, out / 'mcp_safe_improvement.csv')}"
    )


if __name__ == "__main__":
    main()
