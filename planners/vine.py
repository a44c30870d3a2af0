"""Planners for repair loops over VineLM's execution trie: ``vine``, ``murakkab`` and ``vine-dp``.

Each loop subtask (a subtask with a horizon) gets its trie, built from the run's profiles: a node is the prefix of
models whose invocations all failed, and its success rate is the exact conditional one of the subtask's history
model (the posterior over its hidden classes, or its cascade table's entry, or its independent rate), truncation at
max_tokens included. Every launch is one sample (a loop is a sequence of invocations).

- ``vine`` (the paper's VineLM, §4.3): after every invocation, re-root at the realized prefix and take the next
  model of the best suffix for the money and time left, on expected values: maximize accuracy subject to the
  expected cost fitting the budget left and the latency (not discounted) the time left; or, with
  ``vine:cost:alpha=A``, minimize expected cost subject to accuracy >= A. ontime's budget is hard: the executor
  reserves an invocation's worst case before launching it. So vine counts a suffix feasible only if each of its
  invocations' worst case fits the money left after the expected spend of those before it on the path (every one
  before it having failed); ``vine:paper`` checks the next invocation only, as the paper's VineLM can (it knows no
  reservations), and so plans suffixes whose later calls will not fit.
  ``vine:load=SECONDS,...`` adds a queueing delay per model to every invocation (the paper's load-aware variant).
- ``murakkab`` (the paper's workflow-level baseline): one model for the first invocation, one for every repair
  and a depth cap, chosen at admission by the same objective, then followed whatever happens.
- ``vine-dp``: the exact closed-loop policy, maximizing P(success within the hard budget and the deadline) by
  backward induction over (trie node, money left, time left) (:mod:`planners.trie_dp`); a decision is a lookup.

All three plan one loop: a workflow with several subtasks is refused (``PlannerSpecError``); so is a subtask
without a horizon (its trie would be infinite).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from planners.trie import ExecutionTrie
from planners.trie_dp import solve_closed_loop
from planners.trie_search import MAX_ACCURACY, MIN_COST, best_suffix_kernel, murakkab_path
from runtime.types import Decision, Launch, Planner, PlannerSpecError, Reason, Snapshot

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runtime.types import PlannerContext, ProfileTable

__all__ = ["MurakkabPlanner", "VineDPPlanner", "VinePlanner", "dp_from_spec", "loop_trie", "murakkab_from_spec",
           "vine_from_spec"]  # fmt: skip

MAX_TRIE_NODES = 2_000_000
MAX_BELIEF_CELLS = 50_000_000  # nodes x hidden classes: the posteriors the trie is built from (400 MB)
QUANTILES = 5  # cost and latency points per model for the DP (equal-mass quantiles of output length)


def loop_trie(
    table: ProfileTable, i: int = 0, queue_delay: Sequence[float] | None = None, affordable: np.ndarray | None = None
) -> ExecutionTrie:
    """Subtask i's execution trie from the profiles: exact conditional success per prefix, expected cost
    (pico-dollars) and latency (seconds, plus ``queue_delay[model]``) per invocation; only the models
    ``affordable`` marks (default: every model that can run the subtask)."""
    horizon = int(table.horizon[i])
    if horizon < 1:
        raise PlannerSpecError(f"subtask {table.subtask_ids[i]!r} is not a loop (no horizon): it has no finite trie")
    usable = table.kind[i] >= 0
    if affordable is not None:
        usable &= affordable
    size = sum(int(usable.sum()) ** d for d in range(horizon + 1))
    lo, hi = int(table.cls_ptr[i]), int(table.cls_ptr[i + 1])
    if size > MAX_TRIE_NODES or size * (hi - lo) > MAX_BELIEF_CELLS:
        why = f"{size:,} nodes" + (f" x {hi - lo:,} hidden classes" if hi > lo else "")
        raise PlannerSpecError(f"the loop's trie would be too large to build ({why}); lower its horizon")
    allowed = np.repeat(usable[None, :], horizon, axis=0)
    keep = np.where(table.p_draw[i] > 0, table.p[i] / np.maximum(table.p_draw[i], 1e-300), 1.0)  # truncation
    delay = np.zeros(table.n_models) if queue_delay is None else np.asarray(queue_delay, np.float64)
    belief: dict[tuple[int, ...], np.ndarray] = {(): table.cls_w[lo:hi].copy()}

    def rates(prefix: tuple[int, ...], j: int) -> tuple[float, float, float]:
        if hi > lo:  # the posterior over the classes after the prefix's failures
            w = belief[prefix]
            repair = j in prefix if table.own_repairs[i] else len(prefix) > 0
            p_c = table.cls_p[lo:hi, j, int(repair)]
            total = w.sum()
            q = float((w * p_c).sum() / total) if total > 0 else 0.0
            if len(prefix) + 1 < horizon:  # a leaf's belief is never needed
                belief[(*prefix, j)] = w * (1.0 - p_c)
        else:
            q = table.success_rate(i, j, prefix)
        return q * float(keep[j]), float(table.mean_cost[i, j]), float(table.mean_latency[i, j] + delay[j])

    return ExecutionTrie.from_function(table.n_models, allowed, rates)


def _prefix(snapshot: Snapshot, i: int) -> tuple[int, ...]:
    """The models of subtask i's failed invocations, in order (batches that met only endpoint errors were none)."""
    return tuple(f.model for f in snapshot.failed if f.subtask == i and f.answered)


def _realized(trie: ExecutionTrie, prefix: tuple[int, ...]) -> int:
    """The trie node of a realized prefix. A failed invocation on a model the planner may no longer use (its
    endpoint went out of reach, and the run planned on without it) is not in the trie: it is passed over, so its
    failure informs nothing."""
    v = 0
    for m in prefix:
        if 0 <= m < trie.n_models and trie.child[v, m] >= 0:
            v = int(trie.child[v, m])
    return v


def _one_loop(table: ProfileTable, who: str) -> None:
    if table.n_subtasks != 1:
        raise PlannerSpecError(f"{who}: plans a workflow of one loop subtask, not {table.n_subtasks} subtasks")


class VinePlanner(Planner):
    """VineLM's re-rooting controller (see the module docstring); ``reserve=False`` is the paper's, which checks
    only that the next invocation's worst case fits (the executor would refuse it), not the ones after it."""

    in_thread = False  # a search of microseconds

    def __init__(
        self,
        table: ProfileTable,
        *,
        alpha: float | None = None,
        queue_delay: Sequence[float] | None = None,
        reserve: bool = True,
    ) -> None:
        _one_loop(table, "vine")
        self.trie = t = loop_trie(table, 0, queue_delay)
        self.objective = MAX_ACCURACY if alpha is None else MIN_COST
        self.alpha = 0.0 if alpha is None else alpha
        self.queue_delay = np.zeros(table.n_models) if queue_delay is None else np.asarray(queue_delay, np.float64)
        self.reserve_steps = 1 << 30 if reserve else 1
        self._worst = table.worst_cost[0].astype(np.float64)
        self._spent = np.zeros(t.n_nodes)  # every invocation of the prefix run: its expected spend, undiscounted
        for u in range(1, t.n_nodes):  # preorder: a parent comes before its children
            self._spent[u] = self._spent[t.parent[u]] + t.c[u]
        self.name = ("vine" if alpha is None else f"vine:cost:alpha={alpha:g}") + ("" if reserve else ":paper")
        self._nodes: dict[tuple[int, ...], int] = {}  # realized prefix -> trie node, as met
        self._launch = [Launch(j, 1) for j in range(table.n_models)]

    def decide(self, snapshot: Snapshot) -> Decision:
        if not snapshot.ready:
            return Decision({})
        _, _, j = self._search(snapshot)
        if j < 0:
            return Decision({}, reason=Reason.BUDGET)
        return Decision({0: self._launch[j]})

    def suffix(self, snapshot: Snapshot) -> tuple[int, ...]:
        """The models of the best suffix from the realized prefix, for the money and time left (empty: stop)."""
        v, target, _ = self._search(snapshot)
        return self.trie.path(target)[int(self.trie.depth[v]) :]

    def _search(self, snapshot: Snapshot) -> tuple[int, int, int]:
        """(realized node, best target below it, next model or -1)."""
        t = self.trie
        prefix = _prefix(snapshot, 0)
        v = self._nodes.get(prefix)
        if v is None:
            v = self._nodes[prefix] = _realized(t, prefix)
        worst = self._worst if snapshot.worst_pusd is None else snapshot.worst_pusd[0].astype(np.float64)
        target, j, _ = best_suffix_kernel(
            t.depth, t.model, t.end, t.parent, t.A, t.C, t.L, t.A_max, v, float(snapshot.budget_left_pusd),
            float(snapshot.time_left), self.objective, self.alpha, self.queue_delay, t.horizon, True, worst,
            self._spent, self.reserve_steps,
        )  # fmt: skip
        return v, int(target), int(j)


class MurakkabPlanner(Planner):
    """One model for the first invocation, one for the repairs, a depth cap: fixed at admission."""

    in_thread = False

    def __init__(self, table: ProfileTable, budget_pusd: int, deadline_s: float, *, alpha: float | None = None,
                 single_stage: bool = False) -> None:  # fmt: skip
        _one_loop(table, "murakkab")
        # A configuration is only one whose invocations the executor can reserve: no model whose worst case
        # exceeds the whole budget (the paper's expected-cost filter alone would pick plans that are refused).
        trie = loop_trie(table, 0, affordable=table.worst_cost[0] <= budget_pusd)
        objective = MAX_ACCURACY if alpha is None else MIN_COST
        self.path = murakkab_path(trie, budget_pusd, deadline_s, objective=objective, alpha=alpha or 0.0,
                                  single_stage=single_stage)  # fmt: skip
        self.name = "murakkab" + ("" if alpha is None else f":cost:alpha={alpha:g}") + (":single" * single_stage)

    def decide(self, snapshot: Snapshot) -> Decision:
        if not snapshot.ready:
            return Decision({})
        done = len(_prefix(snapshot, 0))
        if done >= len(self.path):
            return Decision({}, reason=Reason.BUDGET)  # its plan is spent: it stops
        return Decision({0: Launch(self.path[done], 1)})


class VineDPPlanner(Planner):
    """The exact closed-loop policy of the loop under the hard budget and deadline (see the module docstring)."""

    in_thread = False

    def __init__(self, table: ProfileTable, budget_pusd: int, deadline_s: float, *, bins: int = 64) -> None:
        _one_loop(table, "vine-dp")
        trie = loop_trie(table, 0)
        cost, latency, probs = length_points(table, 0)
        self.policy = solve_closed_loop(trie, cost, latency, probs, max(1, budget_pusd), deadline_s,
                                        worst_cost=table.worst_cost[0].astype(np.float64), budget_bins=bins,
                                        time_bins=bins)  # fmt: skip
        self.trie = trie
        self.name = f"vine-dp:bins={bins}"

    def decide(self, snapshot: Snapshot) -> Decision:
        if not snapshot.ready:
            return Decision({})
        v = _realized(self.trie, _prefix(snapshot, 0))
        j = self.policy.decide(v, snapshot.budget_left_pusd, snapshot.time_left)
        if j < 0:
            return Decision({}, reason=Reason.BUDGET)
        return Decision({0: Launch(j, 1)})


def length_points(table: ProfileTable, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per model, :data:`QUANTILES` equal-mass points of one invocation's cost (pico-dollars) and latency."""
    m = table.n_models
    cost, lat = np.zeros((m, QUANTILES)), np.zeros((m, QUANTILES))
    probs = np.full((m, QUANTILES), 1.0 / QUANTILES)
    u = (np.arange(QUANTILES) + 0.5) / QUANTILES
    for j in range(m):
        if table.kind[i, j] < 0:
            continue
        cap = int(table.max_tokens[j])
        if table.pool_len[i, j] > 0:
            lo = int(table.pool_start[i, j])
            n_rows = int(table.pool_len[i, j])
            rows = lo + np.minimum((u * n_rows).astype(int), n_rows - 1)
            tokens = np.minimum(table.pool_tokens[rows], cap)
            latency = np.where(np.isnan(table.pool_latency[rows]), table.ttft_s[j] + tokens / table.tokens_per_s[j],
                               table.pool_latency[rows])  # fmt: skip
        else:
            if table.ln_sigma[i, j] > 0:
                from statistics import NormalDist

                z = np.array([NormalDist().inv_cdf(x) for x in u])
                tokens = np.exp(table.ln_mu[i, j] + table.ln_sigma[i, j] * z)
            elif table.fixed_tokens[i, j] > 0:
                tokens = np.full(QUANTILES, float(table.fixed_tokens[i, j]))
            else:
                tokens = np.full(QUANTILES, math.exp(table.ln_mu[i, j]))
            tokens = np.minimum(np.maximum(1, np.round(tokens)), cap)
            latency = table.ttft_s[j] + tokens / table.tokens_per_s[j]
        cost[j] = table.input_tokens[i] * table.in_price[j] + tokens * table.out_price[j]
        lat[j] = latency
    return cost, lat, probs


def _options(args: Sequence[str], who: str, allowed: set[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if arg in ("cost", "paper"):
            out[arg] = "1"
            continue
        if not sep or key not in allowed:
            raise PlannerSpecError(f"{who}: unknown option {arg!r} (options: {', '.join(sorted(allowed))})")
        out[key] = value
    return out


def _alpha(opts: dict[str, str], who: str) -> float | None:
    if "cost" not in opts:
        if "alpha" in opts:
            raise PlannerSpecError(f"{who}: alpha goes with the cost objective ({who}:cost:alpha=0.9)")
        return None
    try:
        alpha = float(opts.get("alpha", "nan"))
    except ValueError:
        alpha = math.nan
    if not 0.0 <= alpha <= 1.0:
        raise PlannerSpecError(f"{who}: the cost objective needs alpha in [0, 1] ({who}:cost:alpha=0.9)")
    return alpha


def vine_from_spec(args: Sequence[str], ctx: PlannerContext) -> VinePlanner:
    """``vine[:cost:alpha=A][:load=S1,S2,...][:paper]`` (``paper``: the paper's check of the next invocation only)."""
    opts = _options(args, "vine", {"cost", "alpha", "load", "paper"})
    delay = None
    if "load" in opts:
        try:
            delay = [float(x) for x in opts["load"].split(",")]
        except ValueError:
            delay = []
        if len(delay) != ctx.table.n_models or not all(math.isfinite(x) and x >= 0 for x in delay):
            raise PlannerSpecError(f"vine: load needs {ctx.table.n_models} delays in seconds, >= 0, one per model")
    return VinePlanner(ctx.table, alpha=_alpha(opts, "vine"), queue_delay=delay, reserve="paper" not in opts)


def murakkab_from_spec(args: Sequence[str], ctx: PlannerContext) -> MurakkabPlanner:
    """``murakkab[:cost:alpha=A][:single=1]`` (``single``: one model for every invocation)."""
    opts = _options(args, "murakkab", {"cost", "alpha", "single"})
    if opts.get("single", "0") not in ("0", "1"):
        raise PlannerSpecError("murakkab: single must be 0 or 1")
    return MurakkabPlanner(ctx.table, ctx.budget_pusd, ctx.deadline_s, alpha=_alpha(opts, "murakkab"),
                           single_stage=opts.get("single") == "1")  # fmt: skip


def dp_from_spec(args: Sequence[str], ctx: PlannerContext) -> VineDPPlanner:
    """``vine-dp[:bins=64]``: the budget and time grid's size."""
    opts = _options(args, "vine-dp", {"bins"})
    try:
        bins = int(opts.get("bins", "64"))
    except ValueError:
        bins = 0
    if not 2 <= bins <= 4096:
        raise PlannerSpecError("vine-dp: bins must be an integer in 2..4096")
    return VineDPPlanner(ctx.table, ctx.budget_pusd, ctx.deadline_s, bins=bins)
