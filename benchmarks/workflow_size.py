"""How one run's wall time grows with the size of its workflow: a seeded random DAG of N subtasks (each
depends on up to two of the 50 before it; two simulated models), run once in virtual time per planner.

    python -m benchmarks.workflow_size [--sizes retry:small:1=1000,4000,10000 mcp=250,500,1000]

Prints a table and writes benchmarks/results/workflow_size.csv: seconds to parse the spec and to run, the
decisions taken and the seconds the planner spent deciding. Numbers depend on the machine: quote it.
"""

from __future__ import annotations

import random
import time
from typing import Any

from benchmarks._report import RESULTS, console, machine, parser, rows_table, write_csv
from runtime import parse_workflow, run

_MODELS = {
    "small": {"provider": "sim", "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.6,
              "tokens_per_s": 100, "ttft_s": 0.3, "max_output_tokens": 1000},
    "large": {"provider": "sim", "input_price_per_mtok": 2.5, "output_price_per_mtok": 10.0,
              "tokens_per_s": 60, "ttft_s": 0.5, "max_output_tokens": 1000},
}  # fmt: skip
_PROFILES = {
    "small": {"p": 0.7, "output_tokens": {"mean": 200, "std": 50}},
    "large": {"p": 0.9, "output_tokens": {"mean": 300, "std": 50}},
}


def lognormal_dag(n: int, seed: int = 0) -> dict[str, Any]:
    """A spec of ``n`` subtasks, each depending on up to two of the 50 subtasks before it, with lognormal
    profiles (``instances.random_dag`` builds 512-sample pools: 11 s per 2,000 subtasks, which would swamp
    what is measured here)."""
    rng = random.Random(seed)
    subtasks = []
    for i in range(n):
        deps = [f"s{j}" for j in rng.sample(range(max(0, i - 50), i), min(i, 2))]
        subtasks.append({"id": f"s{i}", "deps": deps, "input_tokens": 200, "profiles": _PROFILES})
    return {"name": f"dag{n}", "models": _MODELS, "subtasks": subtasks}


def measure(n: int, planner: str, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    wf = parse_workflow(lognormal_dag(n, seed))
    parsed = time.perf_counter()
    result = run(wf, budget=10.0 * n, deadline=1e6, planner=planner, seed=seed)
    ran = time.perf_counter()
    return {
        "planner": planner,
        "subtasks": n,
        "parse_s": round(parsed - start, 2),
        "run_s": round(ran - parsed, 2),
        "decisions": len(result.planner_ms),
        "planner_s": round(sum(result.planner_ms) / 1000.0, 2),
        "ms_per_subtask": round((ran - parsed) * 1000.0 / n, 2),
        "success": result.success,
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", nargs="+", default=["retry:small:1=1000,4000,10000", "mcp=250,500,1000"],
                    help="PLANNER=N,N,... (one run per size)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "workflow_size.csv"))
    args = ap.parse_args()
    run(parse_workflow(lognormal_dag(3)), 1.0, 100.0, planner="mcp")  # compile the kernels outside the timings
    rows = []
    for item in args.sizes:
        planner, _, sizes = item.rpartition("=")
        for n in map(int, sizes.split(",")):
            rows.append(measure(n, planner, args.seed))
            console.print(rows[-1])
    console.print(rows_table(rows, "one run's wall time against workflow size (virtual time)"))
    console.print(machine())
    console.print(f"wrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
