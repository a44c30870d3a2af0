"""How long VineLM's online replanning takes on our execution trie, beside the paper's Table 3, and how long
the exact closed-loop DP takes to build and to consult.

    python -m benchmarks.vine_replan [--calls 2000] [--seed 0] [--no-big] [--out benchmarks/results/vine_replan/]

Tries: the paper's three configurations (NL2SQL-2 = 2 models x depth 4, NL2SQL-8 = 8 x 3, MathQA-4 = 4 x 6)
and larger ones (9 x 4, 9 x 6). Annotations are random but seeded: q from a latent-difficulty recipe (a
request's difficulty z ~ N(0, 1); model m solves attempt j with sigmoid(skill_m - z + 0.3 (j - 1)); q[v] is
the conditional success given the prefix failed, averaged over z), costs from model prices (repairs carry
longer prompts), latencies per model.

"vine.decide" is ontime's planner end to end: the same trie as a spec's cascade table, ``VinePlanner.decide`` on a
snapshot at a random realized prefix (what a run pays per decision; tries up to 100k nodes).

Replanning = one ``best_suffix`` call (the Python entry point: validation, kernel, answer) at a realized node:
a depth drawn uniformly below the horizon, a random prefix at that depth, the request's money and time left
after a noisy realized spend; objective MAX_ACCURACY under both caps (the paper's latency-SLO policy) and
MIN_COST with alpha = 0.9. "root" is the admission-time search of the whole trie; "root no-cap" the same
without caps; "full scan" the kernel alone at the root with no caps and the paper's pruning only (no A_max
bound): every node visited, the true worst case. "kernel" is the kernel alone at the realized nodes. Times
are single-threaded, after JIT warm-up; quote medians (the machine is shared).

DP: :func:`planners.trie_dp.solve_closed_loop` at 64 x 64 budget x time bins with 3-point cost and latency
distributions per node whose means are the trie's c and l (worst case 3 x the mean cost); 9 x 6 needs
4.6 GB at that grid, is refused, and is solved at 16 x 16 instead. Then both controllers play --runs
simulated runs under the hard limits (budget: half the largest expected leaf cost; deadline: 0.6 x the
largest path latency), with common random numbers: P(success) of the DP policy (and its own grid value, a
lower bound) beside VineLM's re-rooted MAX_ACCURACY controller, which plans on expected cost and so
sometimes asks for a launch whose worst case the executor refuses ("VineLM refused": share of runs).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import RESULTS, console, machine, parser, rows_table, write_csv
from planners.trie import ExecutionTrie, trie_structure
from planners.trie_dp import solve_closed_loop
from planners.trie_search import MAX_ACCURACY, MIN_COST, best_suffix, best_suffix_kernel
from planners.vine import VinePlanner
from runtime.types import (
    CascadeTable,
    FailedBatch,
    FixedTokens,
    Loop,
    ModelSpec,
    ParametricProfile,
    ProfileTable,
    Snapshot,
    Subtask,
    UsageError,
    Workflow,
)

# (name, models, depth, the paper's mean replanning time in microseconds, Table 3)
CONFIGS = [
    ("NL2SQL-2", 2, 4, 33.0),
    ("NL2SQL-8", 8, 3, 1312.0),
    ("MathQA-4", 4, 6, 6921.2),
    ("9x4", 9, 4, math.nan),
    ("9x6", 9, 6, math.nan),
]
PRICES_USD = np.array([0.0004, 0.012, 0.003, 0.0006, 0.002, 0.0009, 0.0015, 0.001, 0.005])  # per invocation
LATENCY_S = np.array([2.0, 9.0, 6.0, 2.5, 5.0, 3.0, 4.0, 3.5, 7.0])
SKILL = np.array([-0.6, 1.2, 0.8, -0.3, 0.5, 0.0, 0.3, 0.2, 0.9])
PUSD = 10**12
PLANNER_MAX_NODES = 100_000  # the end-to-end planner timing builds the loop's spec: not for the 598k-node trie


def latent_trie(n_models: int, horizon: int, seed: int) -> ExecutionTrie:
    """The seeded benchmark trie (see the module docstring)."""
    rng = np.random.default_rng(seed)
    allowed = np.ones((horizon, n_models), bool)
    parent, depth, model, _, _ = trie_structure(n_models, allowed)
    z, w = np.polynomial.hermite_e.hermegauss(16)
    w = w / w.sum()
    skill = SKILL[:n_models] + rng.normal(0, 0.1, n_models)
    n = parent.shape[0]
    alive = np.ones((n, z.shape[0]))
    q = np.zeros(n)
    for d in range(1, horizon + 1):
        idx = np.flatnonzero(depth == d)
        p = 1 / (1 + np.exp(-(skill[model[idx], None] - z[None, :] + 0.3 * (d - 1))))
        before = alive[parent[idx]]
        q[idx] = (before * p) @ w / (before @ w)
        alive[idx] = before * (1 - p)
    scale = 1 + 0.2 * np.maximum(depth - 1, 0)
    cost = PRICES_USD[np.maximum(model, 0)] * PUSD * scale
    lat = LATENCY_S[np.maximum(model, 0)] * (1 + 0.1 * np.maximum(depth - 1, 0))
    return ExecutionTrie.from_prefix_rates(n_models, allowed, q, cost, lat)


def _pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]


def replan_times(t: ExecutionTrie, calls: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    budget = 0.5 * float(t.C[t.depth == t.horizon].max())
    slo = 0.6 * float(t.L.max())
    by_depth = [np.flatnonzero(t.depth == d) for d in range(t.horizon)]
    cases = []
    for _ in range(calls):
        v = int(rng.choice(by_depth[int(rng.integers(0, t.horizon))]))
        noise = rng.uniform(0.5, 1.5)
        spent_c = float(t.c[list(_ancestry(t, v))].sum()) * noise
        spent_t = float(t.L[v]) * rng.uniform(0.7, 1.6)
        cases.append((v, max(0.0, budget - spent_c), max(0.0, slo - spent_t)))
    qd = np.zeros(t.n_models)
    out: dict[str, float] = {}
    for name, objective, alpha in (("max_acc", MAX_ACCURACY, 0.0), ("min_cost", MIN_COST, 0.9)):
        best_suffix(t, 0, budget, slo, objective=objective, alpha=alpha)  # warm-up (JIT load)
        us = []
        for v, cl, tl in cases:
            t0 = time.perf_counter_ns()
            best_suffix(t, v, cl, tl, objective=objective, alpha=alpha, queue_delay=qd)
            us.append((time.perf_counter_ns() - t0) / 1e3)
        out[f"{name}_median_us"] = statistics.median(us)
        out[f"{name}_p95_us"] = _pct(us, 0.95)
    args = (t.depth, t.model, t.end, t.parent, t.A, t.C, t.L, t.A_max)
    kernel, root = [], []
    for v, cl, tl in cases[: max(1, calls // 4)]:
        t0 = time.perf_counter_ns()
        best_suffix_kernel(*args, v, cl, tl, MAX_ACCURACY, 0.0, qd, t.horizon)
        kernel.append((time.perf_counter_ns() - t0) / 1e3)
    for _ in range(max(5, min(200, calls // 10))):
        t0 = time.perf_counter_ns()
        best_suffix(t, 0, budget, slo)
        root.append((time.perf_counter_ns() - t0) / 1e3)
    nocap = []
    for _ in range(max(5, min(200, calls // 10))):
        t0 = time.perf_counter_ns()
        best_suffix(t, 0)
        nocap.append((time.perf_counter_ns() - t0) / 1e3)
    out["root_nocap_median_us"] = statistics.median(nocap)
    plain = []
    for _ in range(max(5, min(200, calls // 10))):
        t0 = time.perf_counter_ns()
        best_suffix_kernel(*args, 0, math.inf, math.inf, MAX_ACCURACY, 0.0, qd, t.horizon, False)
        plain.append((time.perf_counter_ns() - t0) / 1e3)
    out["root_nocap_nobound_kernel_us"] = statistics.median(plain)
    out["kernel_median_us"] = statistics.median(kernel)
    out["root_median_us"] = statistics.median(root)
    return out


def _ancestry(t: ExecutionTrie, v: int) -> list[int]:
    out = []
    while v > 0:
        out.append(v)
        v = int(t.parent[v])
    return out


COST_MULT, LAT_MULT, POINT_P = np.array([0.6, 1.0, 1.8]), np.array([0.7, 1.0, 2.0]), np.array([0.3, 0.5, 0.2])


def outcomes(t: ExecutionTrie) -> tuple[Any, Any, Any, Any]:
    """Per-node 3-point cost and latency distributions whose means are the trie's c and l; worst case 3x."""
    cost = np.rint(t.c[:, None] * COST_MULT / (COST_MULT @ POINT_P)).astype(np.int64)
    lat = t.l[:, None] * LAT_MULT / (LAT_MULT @ POINT_P)
    probs = np.tile(POINT_P, (t.n_nodes, 1))
    worst = np.ceil(3 * t.c / (COST_MULT @ POINT_P))
    return cost, lat, probs, np.maximum(worst, cost.max(axis=1))


def simulate(t: ExecutionTrie, decide: Any, budget: int, slo: float, runs: int, seed: int) -> tuple[float, float]:
    """P(success) of a controller under the hard limits, and the share of runs that ended on a refused launch:
    a launch whose worst case does not fit the money left is refused (the run stops), a success after the
    deadline does not count."""
    cost, lat, _, worst = outcomes(t)
    rng = np.random.default_rng(seed)
    wins = refused = 0
    for _ in range(runs):
        v, money, left = 0, budget, slo
        while True:
            m = decide(v, money, left)
            u = -1 if m < 0 else int(t.child[v, m])
            if u < 0:
                break
            if worst[u] > money:
                refused += 1
                break
            k = rng.choice(3, p=POINT_P)
            money -= int(cost[u, k])
            left -= float(lat[u, k])
            if left < 0:
                break
            if rng.random() < t.q[u]:
                wins += 1
                break
            v = u
    return wins / runs, refused / runs


def dp_times(t: ExecutionTrie, seed: int, runs: int) -> dict[str, Any]:
    cost, lat, probs, worst = outcomes(t)
    budget = int(0.5 * float(t.C[t.depth == t.horizon].max()))
    slo = 0.6 * float(t.L.max())
    for grid in (64, 32, 16):
        try:
            t0 = time.perf_counter()
            pol = solve_closed_loop(
                t, cost, lat, probs, budget, slo, worst_cost=worst, per_node=True, budget_bins=grid, time_bins=grid
            )
            build = time.perf_counter() - t0
        except UsageError:
            continue
        rng = np.random.default_rng(seed)
        inner = np.flatnonzero(pol.inner >= 0)
        us = []
        for _ in range(2000):
            v = int(rng.choice(inner))
            b, s = int(rng.integers(0, budget + 1)), float(rng.random() * slo)
            t0n = time.perf_counter_ns()
            pol.decide(v, b, s)
            us.append((time.perf_counter_ns() - t0n) / 1e3)

        def vine(v: int, money: int, left: float) -> int:
            return best_suffix(t, v, money, left).next_model

        dp_sim = simulate(t, pol.decide, budget, slo, runs, seed)
        vine_sim = simulate(t, vine, budget, slo, runs, seed)
        assert dp_sim[1] == 0.0  # the DP only launches what its reservation fits
        return {
            "dp_grid": f"{grid}x{grid}",
            "dp_build_s": round(build, 3),
            "dp_MiB": round(pol.nbytes / 2**20, 1),
            "dp_lookup_us": round(statistics.median(us), 2),
            "dp_P_grid": round(pol.optimum, 4),
            "dp_P_sim": round(dp_sim[0], 4),
            "vine_P_sim": round(vine_sim[0], 4),
            "vine_refused": round(vine_sim[1], 4),
        }
    return {"dp_grid": "refused", "dp_build_s": math.nan, "dp_MiB": math.nan, "dp_lookup_us": math.nan}


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    nodes = [r["nodes"] for r in rows]
    ax[0].loglog(nodes, [r["max_acc_median_us"] for r in rows], "o-", label="ontime, median (random realized node)")
    ax[0].loglog(nodes, [r["max_acc_p95_us"] for r in rows], "x--", label="ontime, p95")
    ax[0].loglog(nodes, [r["root_median_us"] for r in rows], "s:", label="ontime, root (whole trie)")
    paper = [r for r in rows if not math.isnan(r["paper_us"])]
    ax[0].loglog(
        [r["nodes"] for r in paper], [r["paper_us"] for r in paper], "r*", ms=12, label="VineLM Table 3 (mean)"
    )
    for r in rows:
        ax[0].annotate(r["config"], (r["nodes"], r["max_acc_median_us"]), fontsize=8)
    ax[0].set(xlabel="trie nodes", ylabel="replanning time per decision (us)", title="best_suffix")
    ax[0].legend(fontsize=7)
    dp = [r for r in rows if not math.isnan(r["dp_build_s"])]
    ax[1].loglog([r["nodes"] for r in dp], [r["dp_build_s"] for r in dp], "o-")
    for r in dp:
        ax[1].annotate(f"{r['config']} {r['dp_grid']}", (r["nodes"], r["dp_build_s"]), fontsize=8)
    ax[1].set(xlabel="trie nodes", ylabel="DP build time (s)", title="closed-loop DP (budget x time bins)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def planner_times(t: ExecutionTrie, calls: int, seed: int) -> dict[str, float]:
    """What ontime's ``vine`` planner spends per decision, end to end: the trie's rates written as a cascade table
    in a one-loop workflow, the planner built from it, ``decide`` timed on snapshots at random realized prefixes
    (the failed batches so far) with money and time left."""
    names = [f"m{j}" for j in range(t.n_models)]
    models = {n: ModelSpec(n, "sim", 1.0, 4.0, 60.0, 0.5, 512) for n in names}
    rates = {tuple(names[m] for m in t.path(v)): float(t.q[v]) for v in range(1, t.n_nodes)}
    profiles = {n: ParametricProfile(0.5, FixedTokens(100)) for n in names}
    loop = Subtask("loop", (), 500, profiles, loop=Loop(t.horizon), history=CascadeTable(rates))
    table = ProfileTable.from_workflow(Workflow("bench", models, (loop,)))
    planner = VinePlanner(table)
    rng = np.random.default_rng(seed)
    start = Snapshot.at_start(table, 10**15, 1e6)
    snaps = []
    for _ in range(calls):
        prefix = rng.integers(0, t.n_models, int(rng.integers(0, t.horizon)))
        failed = tuple(FailedBatch(0, int(m), 1, 0.0, 1.0) for m in prefix)
        snaps.append(dataclasses.replace(start, failed=failed, budget_left_pusd=int(rng.uniform(0.2, 1) * 10**11)))
    planner.decide(snaps[0])  # warm-up
    us = []
    for snap in snaps:
        t0 = time.perf_counter_ns()
        planner.decide(snap)
        us.append((time.perf_counter_ns() - t0) / 1e3)
    return {"vine_decide_median_us": statistics.median(us), "vine_decide_p95_us": _pct(us, 0.95)}


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--calls", type=int, default=2000, help="replanning calls per configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=4000, help="simulated runs per controller for P(success)")
    p.add_argument("--no-big", action="store_true", help="skip 9 x 6 (598k nodes)")
    p.add_argument("--out", type=Path, default=RESULTS / "vine_replan")
    args = p.parse_args(argv)
    rows = []
    for name, m, d, paper in CONFIGS:
        if args.no_big and m * d > 40:
            continue
        t0 = time.perf_counter()
        t = latent_trie(m, d, args.seed)
        build = time.perf_counter() - t0
        rep = replan_times(t, args.calls, args.seed)
        if t.n_nodes <= PLANNER_MAX_NODES:
            rep |= planner_times(t, args.calls, args.seed)
        rows.append(
            {
                "config": name,
                "models": m,
                "depth": d,
                "nodes": t.n_nodes,
                "trie_build_ms": round(build * 1e3, 1),
                "trie_MiB": round(t.nbytes() / 2**20, 1),
                "paper_us": paper,
                **{k: round(x, 2) for k, x in rep.items()},
                "speedup_vs_paper": round(paper / rep["max_acc_median_us"], 1) if not math.isnan(paper) else math.nan,
                "planner_speedup_vs_paper": round(paper / rep["vine_decide_median_us"], 1)
                if not math.isnan(paper) and "vine_decide_median_us" in rep
                else math.nan,
                **dp_times(t, args.seed, args.runs),
            }
        )
        console.print(f"{name}: done", markup=False)
    shown = {
        "config": "config", "nodes": "nodes", "paper_us": "paper us", "max_acc_median_us": "median us",
        "max_acc_p95_us": "p95 us", "speedup_vs_paper": "paper/ours", "min_cost_median_us": "min-cost us",
        "kernel_median_us": "kernel us", "root_median_us": "root us", "root_nocap_median_us": "root no-cap us",
        "root_nocap_nobound_kernel_us": "full scan us", "vine_decide_median_us": "vine.decide us",
        "planner_speedup_vs_paper": "paper/decide",
        "dp_grid": "DP grid", "dp_build_s": "DP build s", "dp_MiB": "DP MiB", "dp_lookup_us": "DP lookup us",
        "dp_P_grid": "DP P (grid)", "dp_P_sim": "DP P (sim)", "vine_P_sim": "VineLM P (sim)",
        "vine_refused": "VineLM refused",
    }  # fmt: skip
    table = [{label: r.get(key, math.nan) for key, label in shown.items()} for r in rows]
    console.print(rows_table(table, "VineLM replanning (MAX_ACCURACY unless said) and the closed-loop DP"))
    console.print(machine())
    args.out.mkdir(parents=True, exist_ok=True)
    console.print(f"wrote {write_csv(rows, args.out / 'vine_replan.csv')}")
    _plot(rows, args.out / "vine_replan.png")
    console.print(f"wrote {args.out / 'vine_replan.png'}")


if __name__ == "__main__":
    main()
