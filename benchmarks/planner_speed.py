"""How long one MCP decision takes, and whether planning threads really run in parallel.

    python -m benchmarks.planner_speed [--repeats 12] [--out benchmarks/results/planner_speed.csv]

Decisions are timed on snapshots taken at every decision of real runs (retry:mid:2 on release20, so every
stage of a run is represented), grouped by how many subtasks are ready, and on the snapshots of the default
MCP's own runs (the states it really decides in). Tables:

1. the speed target: N = 64, K = {1, 4, 16, 64}, four models, the 20-subtask workflow (release20 plus a
   fourth model, ``xl``, derived from ``large``: fewer failures, twice the price, slower);
2. decision time versus N, |K|, number of models and workflow size (chain: 3 subtasks, diamond: 4, both
   also at their default N; release20: 20);
3. two runs planning at once in two threads versus one alone (the kernels release the GIL);
4. the first call in a fresh process: compiling with an empty numba cache, and loading from the cache;
5. predict on release20 ($1, 900 s): closed-loop runs of the default MCP per second, 1 and 2 threads.

Quote medians from one run: the machine is shared and noisy.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import runtime
from benchmarks._report import EXAMPLES, RESULTS, ROOT, console, machine, parser, rows_table, write_csv
from planners.baselines import RetryPlanner
from planners.mcp import MCPPlanner, auto_sims

TARGET_MS = 5.0  # issue 20: the median decision at the target configuration, on one core


def with_xl_model(name: str) -> runtime.Workflow:
    """An example workflow with a fourth model ``xl``: large's failure rate x 0.6, twice its price, 30% slower."""
    data = json.loads((EXAMPLES / name).read_text())
    large = data["models"]["large"]
    data["models"]["xl"] = {
        **large,
        "input_price_per_mtok": 2 * large["input_price_per_mtok"],
        "output_price_per_mtok": 2 * large["output_price_per_mtok"],
        "tokens_per_s": 0.7 * large["tokens_per_s"],
    }
    for sub in data["subtasks"]:
        prof = sub["profiles"]["large"]
        sub["profiles"]["xl"] = {**prof, "p": round(1 - 0.6 * (1 - prof["p"]), 4)}
    return runtime.parse_workflow(data, source=f"{name}+xl")


class _Recorder(runtime.Planner):
    """Passes decisions through to ``inner`` and keeps every snapshot that had something ready."""

    def __init__(self, inner: runtime.Planner, out: list[runtime.Snapshot]) -> None:
        self.inner, self.out, self.name = inner, out, inner.name

    def decide(self, snapshot: runtime.Snapshot) -> runtime.Decision:
        if snapshot.ready:
            self.out.append(snapshot)
        return self.inner.decide(snapshot)


def snapshots(
    wf: runtime.Workflow, budget: float, deadline: float, runs: int = 4, own: bool = False
) -> list[runtime.Snapshot]:
    """Every snapshot a planner saw in a few real runs that had something ready: runs of ``retry:mid:2``, or
    with ``own`` of the default MCP (the states it really decides in: wider batches in flight than Retry's,
    other budgets left, which cost more to simulate from)."""
    table = runtime.ProfileTable.from_workflow(wf)
    mid = table.model_index(table.model_names[min(1, table.n_models - 1)])
    out: list[runtime.Snapshot] = []
    for seed in range(runs):
        inner = MCPPlanner(table, seed=seed) if own else RetryPlanner(table, mid, 2)
        runtime.run(wf, budget, deadline, planner=_Recorder(inner, out), seed=seed)
    return out


def pick(snaps: list[runtime.Snapshot], count: int) -> list[runtime.Snapshot]:
    """``count`` snapshots spread evenly over the list (so over run stages), deterministic."""
    if len(snaps) <= count:
        return snaps
    return [snaps[round(x * (len(snaps) - 1) / (count - 1))] for x in range(count)]


def time_decisions(planner: MCPPlanner, snaps: list[runtime.Snapshot]) -> list[float]:
    times = []
    for s in snaps:
        t0 = time.perf_counter()
        planner.decide(s)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def row(
    label: str, wf: runtime.Workflow, planner: MCPPlanner, snaps: list[runtime.Snapshot], ms: list[float]
) -> dict[str, Any]:
    """The decision times ``ms`` of ``planner`` on ``snaps``; ``ready``: the mean number of ready subtasks."""
    return {
        "case": label,
        "subtasks": len(wf.subtasks),
        "models": len(wf.models),
        "policies": len(planner.portfolio),
        "n_sims": planner.n_sims,
        "widths": "/".join(map(str, planner.widths)),
        "ready": round(statistics.fmean(len(s.ready) for s in snaps), 2),
        "decisions": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 1),
    }


def first_call_seconds(cache_dir: str) -> float:
    """Seconds for the first MCP decision in a fresh process with this numba cache directory."""
    code = (
        "import time, runtime; from planners.mcp import MCPPlanner; "
        "wf = runtime.load_workflow('examples/diamond.json'); t = runtime.ProfileTable.from_workflow(wf); "
        "s = runtime.Snapshot.at_start(t, 10**10, 60.0); t0 = time.perf_counter(); "
        "MCPPlanner(t, n_sims=4).decide(s); print(time.perf_counter() - t0)"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument(
        "--repeats",
        type=int,
        default=12,
        help="snapshots timed per ready count (3x as many over all stages and in the grid)",
    )
    ap.add_argument("--out", default=str(RESULTS / "planner_speed.csv"))
    args = ap.parse_args()
    big = with_xl_model("release20.json")
    big_table = runtime.ProfileTable.from_workflow(big)
    big_snaps = snapshots(big, 2.0, 1200.0)
    MCPPlanner(big_table, n_sims=4).decide(big_snaps[0])  # compile or load the kernels once, untimed

    # 1. The target configuration, by number of ready subtasks and over all stages.
    target = []
    full = (1, 4, 16, 64)
    by_ready: dict[str, list[runtime.Snapshot]] = {"1": [], "2": [], "3+": []}
    for s in big_snaps:
        by_ready["3+" if len(s.ready) >= 3 else str(len(s.ready))].append(s)
    everything = pick(big_snaps, 3 * args.repeats)
    for label, group in [*((k, pick(g, args.repeats)) for k, g in by_ready.items()), ("all stages", everything)]:
        if not group:
            continue
        planner = MCPPlanner(big_table, n_sims=64, widths=full, seed=1)
        target.append(row(f"ready {label}", big, planner, group, time_decisions(planner, group)))
    paper = MCPPlanner(big_table, n_sims=64, widths=full, seed=1, mixed=False)
    target.append(row("all stages, mixed=0", big, paper, everything, time_decisions(paper, everything)))
    own = pick(snapshots(big, 2.0, 1200.0, own=True), 3 * args.repeats)
    planner = MCPPlanner(big_table, n_sims=64, widths=full, seed=1)
    target.append(row("MCP's own states", big, planner, own, time_decisions(planner, own)))
    console.print(
        rows_table(target, f"speed target: N=64, K=1/4/16/64, 4 models, 20 subtasks (target {TARGET_MS:g} ms)")
    )

    # 2. Versus N, |K|, models and workflow size.
    grid = []
    three = runtime.load_workflow(EXAMPLES / "release20.json")
    cases = [
        ("release20+xl", big, big_snaps),
        ("release20", three, snapshots(three, 2.0, 1200.0)),
        ("diamond", runtime.load_workflow(EXAMPLES / "diamond.json"), []),
        ("chain", runtime.load_workflow(EXAMPLES / "chain.json"), []),
    ]
    for label, wf, snaps in cases:
        table = runtime.ProfileTable.from_workflow(wf)
        snaps = pick(snaps or snapshots(wf, 0.05, 120.0, runs=12), 3 * args.repeats)
        small = label in ("diamond", "chain")  # N = 64 and the default N there (auto_sims)
        for n_sims in (64, auto_sims(table)) if small else (16, 64, 256):
            for widths in (full,) if small else ((1, 4), full):
                planner = MCPPlanner(table, n_sims=n_sims, widths=widths, seed=1)
                grid.append(row(label, wf, planner, snaps, time_decisions(planner, snaps)))
    console.print(rows_table(grid, "decision time vs N, |K|, models and workflow size"))

    # 3. Two runs planning at once, each in its own thread, against one alone (fresh planners, same seeds;
    # the median ratio over three rounds, as the machine is shared).
    ratios, solo, pair = [], [], []
    for _ in range(3):
        t0 = time.perf_counter()
        time_decisions(MCPPlanner(big_table, n_sims=64, widths=full, seed=1), everything)
        one = time.perf_counter() - t0
        planners = [MCPPlanner(big_table, n_sims=64, widths=full, seed=s) for s in (1, 2)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda p: time_decisions(p, everything), planners))
        both = time.perf_counter() - t0
        ratios.append(both / one)
        solo.append(1000 * one / len(everything))
        pair.append(1000 * both / len(everything))
    ratio = statistics.median(ratios)
    console.print(
        f"two threads: {statistics.median(pair):.1f} ms of wall time per pair of decisions vs "
        f"{statistics.median(solo):.1f} ms for one decision alone (ratio {ratio:.2f}; 1.0 = perfect parallelism, "
        "2.0 = none)"
    )
    threaded = row("2 threads", big, planners[0], everything, results[0] + results[1])

    # 4. First call in a fresh process.
    with tempfile.TemporaryDirectory() as cache:
        cold = first_call_seconds(cache)
        warm = first_call_seconds(cache)
    console.print(
        f"first decision in a fresh process: {cold:.1f} s compiling (empty cache), {warm:.2f} s from the cache"
    )
    # 5. Whole closed-loop runs, as predict plays them.
    runtime.predict(three, 1.0, 900.0, runs=20, workers=1)
    loops = []
    for workers in (1, 2):
        t0 = time.perf_counter()
        pred = runtime.predict(three, 1.0, 900.0, runs=200, workers=workers)
        wall = time.perf_counter() - t0
        loops.append(
            {"threads": workers, "runs": pred.runs, "wall_s": round(wall, 1), "runs_per_s": round(pred.runs / wall, 2)}
        )
    console.print(rows_table(loops, "predict on release20 ($1, 900 s), default MCP"))
    console.print(machine())
    rows = [{**r, "threads": 1, "table": "target"} for r in target]
    rows += [{**r, "threads": 1, "table": "grid"} for r in grid]
    note = f"threads ratio {ratio:.2f}; compile {cold:.1f} s, cache {warm:.2f} s"
    rows.append({**threaded, "threads": 2, "table": note})
    rows += [
        {"case": "predict release20", "threads": r["threads"], "table": f"{r['runs_per_s']} closed-loop runs/s"}
        for r in loops
    ]
    console.print(f"wrote {write_csv(rows, args.out)}")


if __name__ == "__main__":
    main()
