"""How long one MCP decision takes, and whether planning threads really run in parallel.

    python -m benchmarks.planner_speed [--spec examples/release20.json] [--repeats 15]

Decisions are timed on snapshots taken from real runs of the workflow (retry:mid:2, so every stage of a
run is represented), for several N and width portfolios; then two threads decide at once to show the
numba kernels release the GIL. Prints tables, writes benchmarks/results/planner_speed.csv. Quote medians
from one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import runtime
from benchmarks._report import console, machine, rows_table, write_csv
from planners.baselines import RetryPlanner
from planners.mcp import MCPPlanner

ROOT = Path(__file__).resolve().parent.parent


def snapshots(wf: runtime.Workflow, table: runtime.ProfileTable, count: int) -> list[runtime.Snapshot]:
    """Snapshots at every decision of a few real runs, the ones with the most ready subtasks first."""
    out: list[runtime.Snapshot] = []

    class Spy(RetryPlanner):
        def decide(self, snapshot: runtime.Snapshot) -> runtime.Decision:
            out.append(snapshot)
            return super().decide(snapshot)

    for seed in range(4):
        runtime.run(wf, 2.0, 1200, planner=Spy(table, table.model_index("mid"), 2), seed=seed, log=False)
    out.sort(key=lambda s: -len(s.ready))
    return out[:count]


def time_decisions(planner: MCPPlanner, snaps: list[runtime.Snapshot]) -> list[float]:
    times = []
    for s in snaps:
        t0 = time.perf_counter()
        planner.decide(s)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(ROOT / "examples" / "release20.json"))
    ap.add_argument("--repeats", type=int, default=15, help="snapshots timed per configuration")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "planner_speed.csv"))
    args = ap.parse_args()
    wf = runtime.load_workflow(args.spec)
    table = runtime.ProfileTable.from_workflow(wf)
    snaps = snapshots(wf, table, args.repeats)

    t0 = time.perf_counter()
    MCPPlanner(table, n_sims=4).decide(snaps[0])
    first_call_s = time.perf_counter() - t0  # compile, or load from numba's cache

    rows = []
    for n_sims in (16, 64, 256):
        for widths in ((1, 4), (1, 4, 16, 64)):
            ms = time_decisions(MCPPlanner(table, n_sims=n_sims, widths=widths, seed=1), snaps)
            rows.append(
                {
                    "n_sims": n_sims,
                    "widths": "/".join(map(str, widths)),
                    "models": table.n_models,
                    "ready_mean": round(statistics.fmean(len(s.ready) for s in snaps), 2),
                    "p50_ms": round(statistics.median(ms), 1),
                    "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 1),
                    "threads": 1,
                }
            )
    # Two runs planning at once, each in its own thread.
    planners = [MCPPlanner(table, n_sims=64, seed=s) for s in (1, 2)]
    one = statistics.fmean(time_decisions(planners[0], snaps))
    results: list[list[float]] = [[], []]
    threads = [
        threading.Thread(target=lambda x=x: results[x].extend(time_decisions(planners[x], snaps))) for x in (0, 1)
    ]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    both_wall = (time.perf_counter() - t0) * 1000 / len(snaps)
    rows.append(
        {
            "n_sims": 64,
            "widths": "1/4/16/64",
            "models": table.n_models,
            "ready_mean": rows[0]["ready_mean"],
            "p50_ms": round(statistics.median(results[0] + results[1]), 1),
            "p95_ms": round(sorted(results[0] + results[1])[int(0.95 * (2 * len(snaps) - 1))], 1),
            "threads": 2,
        }
    )
    console.print(rows_table(rows, f"MCP decision time on {wf.name} ({len(snaps)} snapshots, most ready first)"))
    console.print(
        f"two threads: {both_wall:.1f} ms of wall time per pair of decisions vs {one:.1f} ms for one decision "
        f"alone (ratio {both_wall / one:.2f}; 1.0 = perfect parallelism, 2.0 = none)"
    )
    console.print(f"first call (compile or cache load): {first_call_s:.2f} s")
    console.print(machine())
    console.print(f"wrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
