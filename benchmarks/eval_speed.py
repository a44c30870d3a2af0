"""How fast ``ontime eval`` runs: wall time for N runs of a workflow through the real executor in
virtual time, per planner and number of worker processes.

    python -m benchmarks.eval_speed [--spec examples/release20.json] [--runs 1000] [--budget 1] [--deadline 600]

Prints a table and writes benchmarks/results/eval_speed.csv. Numbers depend on the machine: quote the
machine with them.
"""

from __future__ import annotations

import time

from benchmarks._report import EXAMPLES, RESULTS, console, machine, parser, rows_table, write_csv
from runtime import evaluate, load_workflow


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--spec", default=str(EXAMPLES / "release20.json"))
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--deadline", type=float, default=600.0)
    ap.add_argument("--planners", default="retry:mini:1,retry:mid:4,uniform:mini")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", default=str(RESULTS / "eval_speed.csv"))
    args = ap.parse_args()

    wf = load_workflow(args.spec)
    rows = []
    for planner in args.planners.split(","):
        for workers in map(int, args.workers.split(",")):
            start = time.perf_counter()
            report = evaluate(wf, args.budget, args.deadline, planner=planner, runs=args.runs, workers=workers)
            wall = time.perf_counter() - start
            rows.append(
                {
                    "workflow": wf.name,
                    "planner": report.planner,
                    "workers": workers,
                    "runs": args.runs,
                    "wall_s": round(wall, 2),
                    "runs_per_s": round(args.runs / wall, 1),
                    "p_success": report.p_success,
                    "decisions": report.planner_ms.decisions,
                    "overspend_runs": report.overspend_runs,
                    "late_runs": report.late_runs,
                }
            )
    title = f"ontime eval: {args.runs} runs of {wf.name} (${args.budget:g}, {args.deadline:g}s)"
    console.print(rows_table(rows, title))
    console.print(machine())
    console.print(f"wrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
