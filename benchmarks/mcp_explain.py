"""Where a planner loses against the exact optimum on a family cell: every decision charged V*(s) - Q*(s, a).

    python -m benchmarks.mcp_explain SEED [--levels loose/tight,tight/loose] [--runs 300] [--planner mcp]
        [--top 8] [--out FILE.csv]

The planner plays ``--runs`` runs of each cell of family workflow SEED (``benchmarks/mcp_quality.py``) on the
exact planner's own model: fixed lengths, so all samples of a batch end together and succeed with
1 - (1 - p)^k; worst-case reservations given back when a batch ends; launches that cannot end by the deadline
refused, as the executor refuses them. At every decision it is charged V*(s) - Q*(s, a), the optimum of the
state less the optimum after its action (``planners.exact.ExactPlanner.action_value``). Over a run these
losses add up, in expectation, to the planner's gap to the optimum (the performance difference identity), so
the table says which states and actions the gap comes from: a decision taken with some seeds and not
others is Monte Carlo noise, one taken every time is the portfolio's. Nothing here feeds back into a planner.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import runtime
from benchmarks._report import console, parser, rows_table, write_csv
from benchmarks.mcp_quality import Cell, family
from planners import make_planner
from planners.exact import Batch, ExactPlanner
from runtime import PlannerContext
from runtime.types import FailedBatch, InFlight, Launch, Snapshot

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["explain"]

# A decision as the table groups it: (completed mask, batches in flight, money left, time, launches).
Key = tuple[int, tuple[Batch, ...], int, float, tuple[tuple[int, int, int], ...]]


def _launches(launches: Mapping[int, Launch]) -> str:
    return " ".join(f"s{i}:m{x.model}x{x.k}" for i, x in sorted(launches.items())) or "wait"


def explain(cell: Cell, runs: int, planner: str = "mcp", seed: int = 0) -> tuple[float, float, list[dict[str, Any]]]:
    """(optimum, the planner's success rate, one row per (state, action) taken), rows by loss, largest first.

    Run r builds its planner with seed r and draws its outcomes from ``seed``'s stream. A row's ``loss_pts``
    is its share of the gap: (V* - Q*) x visits / runs, in points.
    """
    table = runtime.ProfileTable.from_workflow(runtime.parse_workflow(cell.spec))
    budget = runtime.types.to_pusd(cell.budget)
    ex = ExactPlanner(table, cell.deadline)
    n = table.n_subtasks
    deps = [sum(1 << int(d) for d in table.deps(i)) for i in range(n)]
    cost = [[table.cost_of(i, j, int(table.fixed_tokens[i, j])) for j in range(table.n_models)] for i in range(n)]
    draw = random.Random(seed)
    loss: dict[Key, float] = {}
    visits: Counter[Key] = Counter()
    values: dict[Key, tuple[float, float]] = {}
    wins = 0
    for r in range(runs):
        plan = make_planner(planner, PlannerContext(table, budget, cell.deadline, r))
        done, avail, now, batch_id = 0, budget, 0.0, 0
        flying: list[tuple[int, int, int, float, int, float]] = []  # subtask, model, k, end, id, start
        failed: list[FailedBatch] = []
        launched = [0] * n
        while done != (1 << n) - 1:
            busy = {b[0] for b in flying}
            ready = tuple(i for i in range(n) if not done >> i & 1 and i not in busy and deps[i] & ~done == 0)
            state: tuple[Batch, ...] = tuple(b[:4] for b in flying)
            if ready:
                snap = Snapshot(
                    table=table, now=now, time_left=cell.deadline - now, budget_pusd=budget, budget_left_pusd=avail,
                    output_tokens_left=None, completed=frozenset(i for i in range(n) if done >> i & 1),
                    ready=ready, in_flight=tuple(InFlight(b[4], b[0], b[1], b[2], b[5], b[2], False) for b in flying),
                    failed=tuple(failed), samples_launched=tuple(launched),
                )  # fmt: skip
                action = {  # the executor refuses what cannot end by the deadline
                    i: x
                    for i, x in plan.decide(snap).launches.items()
                    if now + float(table.min_latency[i, x.model]) <= cell.deadline
                }
                key = (done, state, avail, now, tuple(sorted((i, x.model, x.k) for i, x in action.items())))
                if key not in values:
                    values[key] = (ex.value(done, state, avail, now), ex.action_value(done, state, avail, now, action))
                loss[key] = loss.get(key, 0.0) + values[key][0] - values[key][1]
                visits[key] += 1
                for i, x in action.items():
                    avail -= x.k * int(table.worst_cost[i, x.model])
                    end = now + float(table.min_latency[i, x.model])
                    flying.append((i, x.model, x.k, end, batch_id, now))
                    batch_id += 1
                    launched[i] += x.k
            if not flying:
                break
            nxt = min(range(len(flying)), key=lambda a: (flying[a][3], a))
            i, j, k, end, _, start = flying.pop(nxt)
            now = end
            avail += k * (int(table.worst_cost[i, j]) - cost[i][j])
            if draw.random() < 1.0 - (1.0 - float(table.p[i, j])) ** k:
                done |= 1 << i
            else:
                failed.append(FailedBatch(i, j, k, start, end))
        wins += done == (1 << n) - 1
    rows = []
    for key, total in sorted(loss.items(), key=lambda kv: -kv[1]):
        done, state, avail, now, _ = key
        v, q = values[key]
        rows.append({
            "done": " ".join(f"s{i}" for i in range(n) if done >> i & 1) or "-",
            "in_flight": " ".join(f"s{b[0]}:m{b[1]}x{b[2]}" for b in state) or "-",
            "usd_left": round(avail / runtime.PUSD_PER_USD, 5),
            "t": round(now, 2),
            "action": " ".join(f"s{i}:m{m}x{k}" for i, m, k in key[4]) or "wait",
            "optimal": _launches(ex.best_action(done, state, avail, now)),
            "v_star": round(v, 4),
            "q_star": round(q, 4),
            "visits": visits[key],
            "loss_pts": round(100 * total / runs, 2),
        })  # fmt: skip
    return ex.optimum(budget), wins / runs, rows


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("seed", type=int, help="the family workflow's seed")
    ap.add_argument("--levels", default="", help="budget/deadline levels, comma-separated (default: all 9)")
    ap.add_argument("--runs", type=int, default=300, help="runs per cell")
    ap.add_argument("--planner", default="mcp", help="the planner explained")
    ap.add_argument("--top", type=int, default=8, help="rows shown per cell, largest losses first")
    ap.add_argument("--out", default=None, help="write every row of every cell to this CSV")
    args = ap.parse_args()
    wanted = {x for x in args.levels.split(",") if x}
    every: list[dict[str, Any]] = []
    for cell in family(1, args.seed):
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
