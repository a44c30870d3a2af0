"""``ontime bench vine``: repair-loop planners on real recorded behaviour, across budgets (VineLM paper, Fig. 7).

For each workload and per-question budget, every planner runs the same seeds through the real executor on the
simulated backend (a seed draws one test question; its replay is what every model really did): ``murakkab`` (one
model first, one for repairs, a depth cap, fixed at admission), ``vinelm`` (the paper's VineLM: re-roots after every
invocation, plans on expected values, checks only that the next call can be reserved), ``vine`` (ontime's: the same
with every planned call's reservation checked), ``vine-sparse`` (vine planning with a cascade table estimated from
2% sparse cascade profiling of the same split, the paper's VineLM (sparse)), ``exact`` (the closed-loop optimum over
(trie node, money left, time left) for one sample per invocation: ``vine-dp``) and ``mcp`` (Monte Carlo portfolio
planning with escalation policies, free to launch several samples at once). Planners plan with the profiling split's
replay, never the test split's.

Accuracy has a Wilson interval; the comparisons the issue asks for (the closed loop at least VineLM, VineLM at least
Murakkab) have paired intervals of the difference over the same seeds.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import runtime
from benchmarks._report import RESULTS, console, parser, rows_table, write_csv
from benchmarks.nl2sql_workload import VARIANTS, nl2sql_variant
from benchmarks.vine_workloads import SAMPLE, Workload, reflection
from planners.mcp import MCPPlanner
from planners.vine import MurakkabPlanner, VineDPPlanner, VinePlanner
from runtime.types import MAX_BUDGET_USD, ProfileTable, UsageError, to_pusd
from tools.reflection_data import Rate

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runtime.types import Planner

__all__ = ["BUDGETS", "PLANNERS", "main", "run_cells"]

PLANNERS = ("murakkab", "vinelm", "vine", "vine-sparse", "exact", "mcp")
SPARSE_COVERAGE = 0.02  # of the cost of profiling every path once per question (checkpointed), as the paper
BUDGETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)  # dollars per question, reflection
NL2SQL_BUDGETS = (0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.05)  # below 0.00073 no call can be reserved
DATA_FILES = {"reflection": "reflection/renze_attempts.csv"} | {v: "nl2sql/spider_dev_de.jsonl" for v in VARIANTS}
DEADLINE = 600.0  # seconds: loose, cost is what binds
PAIRS = (("vinelm", "murakkab"), ("vine", "vinelm"), ("vine", "murakkab"), ("vine", "vine-sparse"),
         ("exact", "vine"), ("mcp", "vine"))  # fmt: skip


@cache
def _workload(name: str, data: str | None) -> tuple[Workload, ProfileTable, ProfileTable | None]:
    """The workload, its fully profiled plan and its sparse one (2% coverage, VineLM's estimator; reflection)."""
    if name in VARIANTS:
        w = nl2sql_variant(name, Path(data) if data else None)
    else:
        w = reflection(Path(data) / DATA_FILES[name] if data else SAMPLE, coverage=SPARSE_COVERAGE)
    sparse = None if w.sparse is None else ProfileTable.from_workflow(w.sparse)
    return w, ProfileTable.from_workflow(w.planned), sparse


def _planner(name: str, planned: ProfileTable, budget: float, seed: int) -> Planner:
    if name == "vine-sparse":
        return VinePlanner(planned)
    if name == "murakkab":
        return MurakkabPlanner(planned, to_pusd(budget), DEADLINE)
    if name in ("vine", "vinelm"):
        return VinePlanner(planned, reserve=name == "vine")
    if name == "exact":
        return VineDPPlanner(planned, to_pusd(budget), DEADLINE)
    return MCPPlanner(planned, seed=seed)


def _cell(args: tuple[str, str | None, str, float, int, int]) -> tuple[str, float, list[bool], list[int]]:
    workload, data, planner, budget, first, count = args
    w, full, sparse = _workload(workload, data)
    planned = sparse if planner == "vine-sparse" and sparse is not None else full
    shared = None if planner == "mcp" else _planner(planner, planned, budget, 0)  # stateless: one per cell
    ok, spent = [], []
    for seed in range(first, first + count):
        r = runtime.run(
            w.truth, budget, DEADLINE, planner=shared or _planner(planner, planned, budget, seed), seed=seed
        )
        ok.append(r.success)
        spent.append(r.cost_pusd)
    return planner, budget, ok, spent


def run_cells(workload: str, data: str | None, budgets: Sequence[float], planners: Sequence[str], runs: int,
              workers: int) -> dict[tuple[str, float], tuple[list[bool], list[int]]]:  # fmt: skip
    """Per (planner, budget): success and pico-dollars of seeds 0 .. runs - 1."""
    chunk = max(1, math.ceil(runs / max(1, workers) / 2))
    tasks = [(workload, data, p, b, s, min(chunk, runs - s)) for b in budgets for p in planners
             for s in range(0, runs, chunk)]  # fmt: skip
    out: dict[tuple[str, float], tuple[list[bool], list[int]]] = {}
    with ProcessPoolExecutor(workers) as pool:
        for planner, budget, ok, spent in pool.map(_cell, tasks):  # in task order: seeds stay in order
            got = out.setdefault((planner, budget), ([], []))
            got[0].extend(ok)
            got[1].extend(spent)
    return out


def _data_dir(given: str | None, workload: str) -> str | None:
    """The data folder: the one given (which must hold the workload's file), else $ONTIME_DATA_DIR if it does,
    else None (the sample)."""
    need = Path(DATA_FILES[workload])
    if given is not None:
        if not (Path(given) / need).exists():
            raise UsageError(f"--data-dir {given}: no {need} there (a folder laid out like shared/data)")
        return given
    env = os.environ.get("ONTIME_DATA_DIR")
    return env if env and (Path(env) / need).exists() else None


def _paired(a: list[bool], b: list[bool]) -> tuple[float, float, float]:
    d = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(max(0.0, sum((x - mean) ** 2 for x in d) / max(1, n - 1)))
    return mean, mean - 1.96 * sd / math.sqrt(n), mean + 1.96 * sd / math.sqrt(n)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = parser(__doc__)
    ap.add_argument("--workload", default="reflection", choices=list(DATA_FILES))
    ap.add_argument("--data-dir", help="folder laid out like shared/data (default: $ONTIME_DATA_DIR if it has the "
                    "workload's data, else the sample in examples/)")  # fmt: skip
    ap.add_argument("--runs", type=int, default=600)
    ap.add_argument("--budgets", help="dollars per question, comma-separated (default: the workload's grid)")
    ap.add_argument("--planners", help=f"comma-separated, of {', '.join(PLANNERS)} (vine-sparse: reflection only)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    ap.add_argument("--out", type=Path, default=RESULTS / "vine")
    args = ap.parse_args(argv)
    grid = BUDGETS if args.workload == "reflection" else NL2SQL_BUDGETS
    try:
        budgets = [float(x) for x in args.budgets.split(",") if x] if args.budgets else list(grid)
    except ValueError:
        raise UsageError(f"--budgets: not numbers: {args.budgets!r}") from None
    if not budgets or not all(0 < b <= MAX_BUDGET_USD for b in budgets):
        raise UsageError(f"--budgets: dollars in (0, {MAX_BUDGET_USD:g}], not {args.budgets!r}")
    default = [p for p in PLANNERS if p != "vine-sparse" or args.workload == "reflection"]
    planners = [x for x in args.planners.split(",") if x] if args.planners else default
    unknown = [p for p in planners if p not in PLANNERS]
    if unknown or not planners:
        raise UsageError(f"--planners: unknown {', '.join(unknown) or 'none given'} (known: {', '.join(PLANNERS)})")
    if args.runs < 1:
        raise UsageError("--runs must be at least 1")
    started = time.perf_counter()
    data = _data_dir(args.data_dir, args.workload)
    cells = run_cells(args.workload, data, budgets, planners, args.runs, args.workers)
    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    for b in budgets:
        for p in planners:
            ok, spent = cells[(p, b)]
            lo, hi = Rate(sum(ok), len(ok)).interval()
            rows.append({"workload": args.workload, "planner": p, "budget": b, "accuracy": round(sum(ok) / len(ok), 4),
                         "ci95": [round(lo, 4), round(hi, 4)], "mean_cost": sum(spent) / len(spent) / 1e12,
                         "runs": len(ok)})  # fmt: skip
        for better, base in PAIRS:
            if (better, b) in cells and (base, b) in cells:
                mean, lo, hi = _paired(cells[(better, b)][0], cells[(base, b)][0])
                pairs.append({"budget": b, "comparison": f"{better} - {base}", "difference": round(mean, 4),
                              "ci95_lo": round(lo, 4), "ci95_hi": round(hi, 4), "holds": hi >= 0})  # fmt: skip
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps(rows))
        return rows
    args.out.mkdir(parents=True, exist_ok=True)
    flat = [{**r, "ci95": f"{r['ci95'][0]}..{r['ci95'][1]}"} for r in rows]
    write_csv(flat, args.out / f"{args.workload}.csv")
    write_csv(pairs, args.out / f"{args.workload}_paired.csv")
    console.print(rows_table(flat, f"{args.workload}: accuracy per budget ({args.runs} runs per cell)"))
    console.print(rows_table(pairs, "paired differences (same seeds); 'holds' = the interval reaches 0 or above"))
    _plot(rows, args.out / f"{args.workload}.png", args.workload)
    console.print(f"{elapsed:.0f} s; data: {data or 'the sample in examples/'}")
    return rows


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for p in sorted({r["planner"] for r in rows}, key=PLANNERS.index):
        mine = [r for r in rows if r["planner"] == p]
        ax.plot([r["mean_cost"] for r in mine], [r["accuracy"] for r in mine], marker="o", label=p)
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per question (USD)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: accuracy-cost frontier")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
