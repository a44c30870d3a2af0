"""Where a planner loses against the exact optimum on a family cell: every decision charged V*(s) - Q*(s, a).

    python -m benchmarks.mcp_explain SEED [--levels loose/tight,tight/loose] [--runs 300] [--planner mcp] [--top 8]
        [--out FILE.csv] [--skill-shift 0] [--price-ratios 2,50]

The planner plays ``--runs`` runs of each cell of family workflow SEED (``benchmarks/mcp_quality.py``) through
the executor (virtual time; the family's fixed lengths are the exact planner's model, which
``tests/test_exact.py`` checks against the executor). Every decision is charged V*(s) - Q*(s, a), the optimum
of the state less the optimum after the launches the executor accepts
(``planners.exact.ExactPlanner.action_value``). Over a run these losses add up, in expectation, to the
planner's gap to the optimum (the performance difference identity), so the table says which states and
actions the gap comes from: a decision taken with some seeds and not others is Monte Carlo noise, one taken
every time is the portfolio's. Nothing here feeds back into a planner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import runtime
from benchmarks._report import console, parser, rows_table, write_csv
from benchmarks.mcp_quality import Cell, add_generator_options, family, generator_of
from planners import make_planner
from planners.exact import ExactPlanner
from runtime import PlannerContext

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["explain"]

# A decision as the table groups it: (completed subtasks, batches in flight with their start times, money left,
# time, launches).
Key = tuple[frozenset[int], tuple[tuple[int, int, int, float], ...], int, float, tuple[tuple[int, int, int], ...]]


def _launches(launches: Mapping[int, runtime.Launch]) -> str:
    return " ".join(f"s{i}:m{x.model}x{x.k}" for i, x in sorted(launches.items())) or "wait"


class _Charged(runtime.Planner):
    """Passes ``inner``'s decisions to the executor, charging each in ``book``: key -> [V*, Q*, optimal launches,
    times taken]."""

    def __init__(self, inner: runtime.Planner, exact: ExactPlanner, book: dict[Key, list[Any]]) -> None:
        self.inner, self.exact, self.book, self.name = inner, exact, book, inner.name

    def decide(self, snapshot: runtime.Snapshot) -> runtime.Decision:
        decision = self.inner.decide(snapshot)
        if snapshot.ready:
            t, end = self.exact.table, snapshot.now + snapshot.time_left
            # What the executor accepts: it refuses a launch that cannot end by the deadline.
            action = {i: x for i, x in decision.launches.items() if snapshot.now + t.min_latency[i, x.model] <= end}
            flying = tuple((b.subtask, b.model, b.k, b.started_at) for b in snapshot.in_flight if not b.done)
            launched = tuple(sorted((i, x.model, x.k) for i, x in action.items()))
            key = (snapshot.completed, flying, snapshot.budget_left_pusd, snapshot.now, launched)
            if key not in self.book:
                v, q = self.exact.state_value(snapshot), self.exact.action_value(snapshot, action)
                self.book[key] = [v, q, _launches(self.exact.decide(snapshot).launches), 0]
            self.book[key][3] += 1
        return decision


def explain(cell: Cell, runs: int, planner: str = "mcp") -> tuple[float, float, list[dict[str, Any]]]:
    """(optimum, the planner's success rate, one row per (state, action) taken), rows by loss, largest first.

    Run r runs with seed r and a planner of seed r. A row's ``loss_pts`` is its share of the gap:
    (V* - Q*) x times taken / runs, in points.
    """
    wf = runtime.parse_workflow(cell.spec)
    table = runtime.ProfileTable.from_workflow(wf)
    budget = runtime.types.to_pusd(cell.budget)
    exact = ExactPlanner(table, cell.deadline)
    book: dict[Key, list[Any]] = {}
    wins = 0
    for r in range(runs):
        inner = make_planner(planner, PlannerContext(table, budget, cell.deadline, r))
        wins += runtime.run(wf, cell.budget, cell.deadline, planner=_Charged(inner, exact, book), seed=r).success
    rows = []
    for (done, flying, avail, now, launched), (v, q, best, times) in sorted(
        book.items(), key=lambda kv: -(kv[1][0] - kv[1][1]) * kv[1][3]
    ):
        rows.append({
            "done": " ".join(f"s{i}" for i in sorted(done)) or "-",
            "in_flight": " ".join(f"s{i}:m{j}x{k}@{start:g}" for i, j, k, start in flying) or "-",
            "usd_left": round(avail / runtime.PUSD_PER_USD, 5),
            "t": round(now, 2),
            "action": " ".join(f"s{i}:m{j}x{k}" for i, j, k in launched) or "wait",
            "optimal": best,
            "v_star": round(v, 4),
            "q_star": round(q, 4),
            "visits": times,
            "loss_pts": round(100 * (v - q) * times / runs, 2),
        })  # fmt: skip
    return exact.optimum(budget), wins / runs, rows


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("seed", type=int, help="the family workflow's seed")
    ap.add_argument("--levels", default="", help="budget/deadline levels, comma-separated (default: all 9)")
    ap.add_argument("--runs", type=int, default=300, help="runs per cell")
    ap.add_argument("--planner", default="mcp", help="the planner explained")
    ap.add_argument("--top", type=int, default=8, help="rows shown per cell, largest losses first")
    ap.add_argument("--out", default=None, help="write every row of every cell to this CSV")
    add_generator_options(ap)
    args = ap.parse_args()
    wanted = {x for x in args.levels.split(",") if x}
    every: list[dict[str, Any]] = []
    for cell in family(1, args.seed, gen=generator_of(ap, args)):
        level = f"{cell.budget_level}/{cell.deadline_level}"
        if wanted and level not in wanted:
            continue
        optimum, rate, rows = explain(cell, args.runs, args.planner)
        charged = sum(r["loss_pts"] for r in rows)
        title = (
            f"seed {cell.seed} {level} (${cell.budget:g}, {cell.deadline:g} s): optimum {optimum:.3f}, "
            f"{args.planner} {rate:.3f} over {args.runs} runs, losses charged {charged:.1f} pts"
        )
        console.print(rows_table(rows[: args.top], title))
        every += [{"seed": cell.seed, "level": level, **r} for r in rows]
    if args.out:
        console.print(f"wrote {write_csv(every, args.out)}")


if __name__ == "__main__":
    main()
