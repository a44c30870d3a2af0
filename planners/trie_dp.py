"""The exact closed-loop policy of a refinement loop under ontime's hard limits, by backward induction.

VineLM (:mod:`planners.trie_search`) plans on expected cost and latency and hopes the realized run fits.
This module instead maximizes P(the loop succeeds before the money and the time run out) with ontime's
semantics: the executor reserves an invocation's worst-case cost before launching it and refuses a launch
whose worst case does not fit the money left; a success that completes after the deadline does not count.

State (v, b, t): the realized trie node v (every invocation on v failed), b budget bins and t time bins
left. Actions: stop, or invoke model m with child u = child[v, m], allowed when ``worst_bins[u] <= b``.
The invocation costs ``cost[u, k]`` and takes ``latency[u, k]`` with probability ``probs[u, k]`` (a small
joint distribution: a few quantile points), independently of whether it succeeds (probability ``q[u]``):

    V[v, b, t] = max(0, max_m sum_k p_k [t_k <= t] (q_u + (1 - q_u) V[u, b - b_k, t - t_k]))

where ``b_k``, ``t_k`` are the point's bins. Nodes at the horizon have V = 0 and are not stored.

Rounding, so the policy never promises what the hard limits forbid: a budget bin is
``unit = max(1, budget // (budget_bins - 1))`` of the integer cost unit (pico-dollars); costs and worst
cases round UP to bins (``ceil(cost / unit)``), the money left rounds DOWN (``budget_left // unit``).
Time: ``time_unit = deadline / (time_bins - 1)``; latencies round UP, the time left rounds DOWN. So a bin
count in the DP is never more than the true money or time left, and an action the DP allows always fits.
The price of this is some optimality (coarse grids waste up to one bin per invocation).

Complexity: O(n_nodes * K * budget_bins * time_bins) time; memory ``inner_nodes * budget_bins *
time_bins * 17`` bytes (value and expected cost in float64, action in int8) for the nodes above the horizon.
At 64 x 64 bins that is 70 KB per inner node: 4 models x depth 6 (1,365 inner nodes) takes 95 MB,
9 x 4 (820) 57 MB; 9 x 6 (66,430) would take 4.6 GB and is refused under the default bound
(:data:`DP_MAX_BYTES`); use smaller grids for it.

``min_cost_ties=True``: among actions whose P(success) is within 1e-12 of the best, take the one with the
lower expected spend (stopping spends nothing, so it wins every tie it is part of). Otherwise ties go to
stopping, then to the lowest model index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from runtime.types import UsageError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from planners.trie import ExecutionTrie

__all__ = ["DP_MAX_BYTES", "ClosedLoopPolicy", "solve_closed_loop"]

DP_MAX_BYTES = 1 << 30  # the tables of one trie; a grid that needs more is refused
BYTES_PER_STATE = 17
TIE = 1e-12


@njit(cache=True, nogil=True)
def _solve(
    child: NDArray[np.int32],
    inner: NDArray[np.int32],
    q: NDArray[np.float64],
    cost_bins: NDArray[np.int64],
    time_bins: NDArray[np.int64],
    probs: NDArray[np.float64],
    cost: NDArray[np.float64],
    worst_bins: NDArray[np.int64],
    nb: int,
    nt: int,
    min_cost_ties: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int8]]:
    n, n_models = child.shape
    n_points = probs.shape[1]
    n_inner = 0
    for v in range(n):
        if inner[v] >= 0:
            n_inner += 1
    value = np.zeros((n_inner, nb, nt))
    spend = np.zeros((n_inner, nb, nt))
    action = np.full((n_inner, nb, nt), -1, np.int8)
    margin = TIE if min_cost_ties else 0.0
    for v in range(n - 1, -1, -1):  # reverse preorder: every child before its parent
        iv = inner[v]
        if iv < 0:
            continue
        for m in range(n_models):
            u = child[v, m]
            if u < 0:
                continue
            iu = inner[u]
            qu = q[u]
            for b in range(worst_bins[u], nb):
                for t in range(nt):
                    val = 0.0
                    e = 0.0
                    for k in range(n_points):
                        p = probs[u, k]
                        if p == 0.0:
                            continue
                        e += p * cost[u, k]
                        tt = t - time_bins[u, k]
                        if tt < 0:
                            continue  # ends after the deadline: the run has failed
                        if iu >= 0:
                            bb = b - cost_bins[u, k]
                            val += p * (qu + (1.0 - qu) * value[iu, bb, tt])
                            e += p * (1.0 - qu) * spend[iu, bb, tt]
                        else:
                            val += p * qu
                    cur = value[iv, b, t]
                    tied = min_cost_ties and val >= cur - TIE and e < spend[iv, b, t]
                    if val > cur + margin or tied:
                        value[iv, b, t] = val
                        spend[iv, b, t] = e
                        action[iv, b, t] = m
    return value, spend, action


def _ceil_units(x: NDArray[np.float64], unit: float) -> NDArray[np.int64]:
    """The smallest k with k * unit >= x, elementwise (float-safe)."""
    k = np.ceil(x / unit)
    k = np.where((k - 1) * unit >= x, k - 1, k)
    k = np.where(k * unit < x, k + 1, k)
    return np.maximum(k, 0).astype(np.int64)


@dataclass(frozen=True, eq=False)
class ClosedLoopPolicy:
    """The solved tables and their grid; a decision is a lookup (see the module docstring)."""

    trie: ExecutionTrie
    value: NDArray[np.float64]  # [inner node, budget bin, time bin] P(success), the loop's state v failed
    expected_cost: NDArray[np.float64]  # the policy's expected spend from there, in the cost unit
    action: NDArray[np.int8]  # the model to invoke, -1 to stop
    inner: NDArray[np.int32]  # node -> row of the tables, -1 at the horizon (V = 0, stop)
    budget_unit: int
    time_unit: float
    budget: int
    deadline: float

    def bins(self, budget_left: int, time_left: float) -> tuple[int, int]:
        """The grid cell of a realized state: both rounded down, so never more than what is left."""
        _, nb, nt = self.value.shape
        b = min(nb - 1, max(0, int(budget_left)) // self.budget_unit)
        t = math.floor(time_left / self.time_unit) if time_left > 0 else 0
        # the largest t with t * unit <= time_left: the division may round either way by an ulp
        while t + 1 < nt and (t + 1) * self.time_unit <= time_left:
            t += 1
        while t > 0 and t * self.time_unit > time_left:
            t -= 1
        return b, max(0, min(nt - 1, t))

    def decide(self, v: int, budget_left: int, time_left: float) -> int:
        """The model to invoke at node v with this much money and time left; -1: stop."""
        row = int(self.inner[v])
        if row < 0:
            return -1
        b, t = self.bins(budget_left, time_left)
        return int(self.action[row, b, t])

    def success(self, v: int, budget_left: int, time_left: float) -> float:
        """P(success from here) under the policy, given that every invocation on v failed."""
        row = int(self.inner[v])
        if row < 0:
            return 0.0
        b, t = self.bins(budget_left, time_left)
        return float(self.value[row, b, t])

    @property
    def optimum(self) -> float:
        """P(success) of a loop that has not started, with the whole budget and deadline."""
        return self.success(0, self.budget, self.deadline)

    @property
    def nbytes(self) -> int:
        return int(self.value.nbytes + self.expected_cost.nbytes + self.action.nbytes)


def _per_node(name: str, arr: Any, trie: ExecutionTrie, per_node: bool, k: int | None) -> NDArray[np.float64]:
    a = np.asarray(arr, dtype=np.float64)
    rows = trie.n_nodes if per_node else trie.n_models
    if a.ndim != (1 if k is None else 2) or a.shape[0] != rows or (k is not None and a.shape[1] != k):
        want = f"({rows},)" if k is None else f"({rows}, K)"
        raise UsageError(f"closed-loop DP: {name} must have shape {want}, not {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise UsageError(f"closed-loop DP: {name} must be finite and >= 0")
    return a if per_node else a[np.maximum(trie.model, 0)]


def solve_closed_loop(
    trie: ExecutionTrie,
    cost_points: Any,
    latency_points: Any,
    probs: Any,
    budget: int,
    deadline: float,
    *,
    worst_cost: Any = None,
    per_node: bool = False,
    budget_bins: int = 64,
    time_bins: int = 64,
    min_cost_ties: bool = False,
    max_bytes: int = DP_MAX_BYTES,
) -> ClosedLoopPolicy:
    """Solve the loop's closed-loop policy on a budget x time grid (see the module docstring).

    Args:
        trie: the loop's trie; only its structure and ``q`` are used.
        cost_points: realized costs, integers in the budget's unit, shape (n_models, K) (per model) or
            (n_nodes, K) with ``per_node=True`` (row u: the invocation that makes node u).
        latency_points: realized latencies in seconds, same shape.
        probs: the points' probabilities, same shape, each row summing to 1.
        budget: the money for the loop, an integer (pico-dollars).
        deadline: the seconds for the loop.
        worst_cost: the reservation per model (or per node), >= every cost point; default the largest point.
        per_node: the point arrays are per node rather than per model.
        budget_bins: budget grid size (cells 0 .. budget_bins - 1; fewer if the budget is smaller).
        time_bins: time grid size.
        min_cost_ties: break P(success) ties by expected spend.
        max_bytes: refuse a grid whose tables would take more.

    Raises:
        UsageError: bad shapes or values, a grid under 2 cells, or tables above ``max_bytes``.
    """
    if trie.n_models > 127:
        raise UsageError("closed-loop DP: at most 127 models (actions are int8)")
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise UsageError(f"closed-loop DP: budget must be a positive integer, not {budget!r}")
    if not isinstance(deadline, int | float) or not math.isfinite(deadline) or deadline <= 0:
        raise UsageError(f"closed-loop DP: deadline must be positive and finite, not {deadline!r}")
    for name, x in (("budget_bins", budget_bins), ("time_bins", time_bins)):
        if isinstance(x, bool) or not isinstance(x, int) or x < 2:
            raise UsageError(f"closed-loop DP: {name} must be an integer >= 2, not {x!r}")
    k = int(np.shape(probs)[-1]) if np.ndim(probs) == 2 else 0
    pk = _per_node("probs", probs, trie, per_node, k)
    cost = _per_node("cost_points", cost_points, trie, per_node, k)
    lat = _per_node("latency_points", latency_points, trie, per_node, k)
    if (cost != np.round(cost)).any():
        raise UsageError("closed-loop DP: cost points must be integers (pico-dollars)")
    if not np.allclose(np.asarray(probs, dtype=np.float64)[int(per_node) :].sum(axis=1), 1.0, rtol=0, atol=1e-9):
        raise UsageError("closed-loop DP: each row of probs must sum to 1")
    worst = cost.max(axis=1) if worst_cost is None else _per_node("worst_cost", worst_cost, trie, per_node, None)
    if (worst < cost.max(axis=1)).any():
        raise UsageError("closed-loop DP: a worst-case cost is below a cost point (the reservation must cover it)")
    unit = max(1, int(budget) // (budget_bins - 1))
    nb = min(budget_bins, int(budget) // unit + 1)
    inner = np.where(trie.depth < trie.horizon, 0, -1).astype(np.int32)
    inner[inner >= 0] = np.arange(int((inner >= 0).sum()), dtype=np.int32)
    need = int((inner >= 0).sum()) * nb * time_bins * BYTES_PER_STATE
    if need > max_bytes:
        raise UsageError(
            f"closed-loop DP: {need / 2**20:,.0f} MiB of tables ({int((inner >= 0).sum()):,} inner nodes x {nb} x"
            f" {time_bins} cells) is above the bound of {max_bytes / 2**20:,.0f} MiB; use a smaller grid"
        )
    time_unit = float(deadline) / (time_bins - 1)
    if time_unit * (time_bins - 1) > deadline:  # so that the whole deadline is the top cell, never more
        time_unit = float(np.nextafter(time_unit, 0.0))
    cost_bins = -(-cost.astype(np.int64) // unit)
    worst_bins = -(-np.ceil(worst).astype(np.int64) // unit)
    value, spend, action = _solve(
        trie.child, inner, trie.q, cost_bins, _ceil_units(lat, time_unit), np.ascontiguousarray(pk),
        np.ascontiguousarray(cost), worst_bins, nb, time_bins, bool(min_cost_ties),
    )  # fmt: skip
    return ClosedLoopPolicy(
        trie=trie,
        value=value,
        expected_cost=spend,
        action=action,
        inner=inner,
        budget_unit=unit,
        time_unit=time_unit,
        budget=int(budget),
        deadline=float(deadline),
    )
