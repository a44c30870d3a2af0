"""Is predict calibrated? Predicted versus realized completion probability over a grid of limits.

    python -m benchmarks.predict_calibration [--runs 2000] [--workers 2] [--spec chain.json ...]
        [--planner mcp] [--out benchmarks/results/predict_calibration.csv]

For each shipped example and each (budget, deadline) cell of its grid, ``runtime.predict`` (closed-loop
simulations on its own seeds) is compared with ``ontime eval`` (runs through the executor, seeds from 0),
both with ``--runs`` runs. The gap should be within Monte Carlo error: with 2000 runs each side its
standard deviation is at most 1.6 points. Prints a table, writes a CSV.
"""

from __future__ import annotations

import itertools
import math
import time

import runtime
from benchmarks._report import EXAMPLES, RESULTS, console, machine, parser, rows_table, write_csv

GRIDS = {  # budgets in dollars x deadlines in seconds, chosen so the cells span low to high chances
    "chain.json": ((0.005, 0.01, 0.02, 0.05), (30.0, 60.0)),
    "diamond.json": ((0.01, 0.02, 0.03), (30.0, 60.0)),
    "mixed_diamond.json": ((0.03, 0.05), (30.0, 45.0)),
    "release20.json": ((1.0,), (900.0,)),
}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--spec", nargs="*", default=sorted(GRIDS), choices=sorted(GRIDS))
    ap.add_argument("--runs", type=int, default=2000, help="runs on each side (predict and eval)")
    ap.add_argument("--planner", default=None, help="planner spec (default: mcp)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "predict_calibration.csv"))
    args = ap.parse_args()
    rows = []
    for spec in args.spec:
        wf = runtime.load_workflow(EXAMPLES / spec)
        budgets, deadlines = GRIDS[spec]
        for budget, deadline in itertools.product(budgets, deadlines):
            t0 = time.perf_counter()
            pred = runtime.predict(wf, budget, deadline, planner=args.planner, runs=args.runs, workers=args.workers)
            t1 = time.perf_counter()
            real = runtime.evaluate(wf, budget, deadline, planner=args.planner, runs=args.runs, workers=args.workers)
            p, r = pred.p_success, real.p_success
            sd = math.sqrt(p * (1 - p) / pred.runs + r * (1 - r) / real.runs)
            rows.append(
                {
                    "spec": spec,
                    "budget": budget,
                    "deadline": deadline,
                    "planner": pred.planner,
                    "runs": args.runs,
                    "predicted": round(p, 4),
                    "realized": round(r, 4),
                    "gap_pts": round(100 * (p - r), 2),
                    "gap_sd_pts": round(100 * sd, 2),
                    "pred_cost": round(pred.expected_cost, 5),
                    "real_cost": round(real.mean_cost, 5),
                    "pred_elapsed": round(pred.expected_elapsed, 1),
                    "real_elapsed": round(real.mean_elapsed, 1),
                    "predict_s": round(t1 - t0, 1),
                    "method": pred.method,
                }
            )
            console.print(rows[-1])
    console.print(rows_table(rows, title="predict vs eval"))
    console.print(machine())
    console.print(f"wrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
