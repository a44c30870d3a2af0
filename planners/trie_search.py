"""VineLM's online controller (paper 004, §3.4 and §4.3): the best suffix of a re-rooted execution trie.

After every invocation the controller stands at the realized node v (every invocation on v failed, money
and time already spent) and searches only v's subtree, with the paper's incremental estimates for a
descendant u (sums over the suffix v -> u):

    accuracy  (A[u] - A[v]) / (1 - A[v])        P(success on the suffix | everything on v failed)
    cost      (C[u] - C[v]) / (1 - A[v])        expected spend of the suffix
    latency   (L[u] - L[v]) + sum queue_delay[m] over the suffix's models   (zeros: load-unaware)

Objectives: ``MAX_ACCURACY`` (0) maximizes accuracy subject to cost <= cost_left and latency <= latency_left;
``MIN_COST`` (1) minimizes cost subject to accuracy >= alpha and the same two caps (the paper's floor
objective plus the hard caps; pass ``math.inf`` for a cap that does not apply). If no feasible suffix
reaches alpha, MIN_COST answers the most accurate feasible one and says so (``Suffix.met`` is False).
Stopping at v is always a candidate (accuracy 0, cost 0). Ties go to the lower cost, then the lower node id.

Pruning (monotonicity, §3.4): a node whose suffix already breaks a cap is skipped with its whole subtree,
the slice ``[u, end[u])``; for MAX_ACCURACY a subtree whose best accuracy (``A_max``, a static annotation)
cannot beat the incumbent is skipped too; for MIN_COST the subtree of a node that meets alpha, or that costs
no less than the incumbent, is skipped. Comparisons use exactly the same float formulas as the brute-force
:func:`best_suffix_reference`, so the two agree bit for bit, ties included.
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

__all__ = [
    "MAX_ACCURACY",
    "MIN_COST",
    "Suffix",
    "best_path",
    "best_suffix",
    "best_suffix_kernel",
    "best_suffix_reference",
    "murakkab_path",
]

MAX_ACCURACY = 0
MIN_COST = 1
_NO_WORST = np.zeros(0)  # no reservation check


@njit(cache=True, nogil=True)
def best_suffix_kernel(
    depth: NDArray[np.int32],
    model: NDArray[np.int32],
    end: NDArray[np.int32],
    parent: NDArray[np.int32],
    acc: NDArray[np.float64],
    cum_cost: NDArray[np.float64],
    cum_lat: NDArray[np.float64],
    acc_max: NDArray[np.float64],
    v: int,
    cost_left: float,
    latency_left: float,
    objective: int,
    alpha: float,
    queue_delay: NDArray[np.float64],
    horizon: int,
    bound: bool = True,
    worst: NDArray[np.float64] = _NO_WORST,
    spent: NDArray[np.float64] = _NO_WORST,
    reserve_steps: int = 1 << 30,
) -> tuple[int, int, int]:
    """``(target node, next model or -1 to stop, status)``; status 1: MIN_COST could not reach alpha.

    ``bound=False`` drops the ``A_max`` bound of MAX_ACCURACY and keeps the paper's cap pruning only (same answer).
    ``worst`` (per model) and ``spent`` (per node: the undiscounted expected spend of its prefix, every invocation
    run) make the search reservation-aware, as ontime's hard budget requires: a suffix is feasible only if each of
    its invocations' worst case fits what is left after the expected spend of the ones before it on the path
    (only the first ``reserve_steps`` invocations below v are checked: 1 checks just the next one).
    """
    alive = 1.0 - acc[v]
    if alive <= 0.0:
        return v, -1, 0
    base = depth[v]
    stop = end[v]
    qsum = np.zeros(horizon + 2)  # queue delay summed down the current DFS path, by depth below v
    reserve = worst.shape[0] > 0
    status = 0
    best = v
    if objective == 1 and alpha > 0.0:
        best = -1
        best_cost = math.inf
        u = v + 1
        while u < stop:
            d = depth[u] - base
            qs = qsum[d - 1] + queue_delay[model[u]]
            qsum[d] = qs
            cost = (cum_cost[u] - cum_cost[v]) / alive
            if reserve and d <= reserve_steps and spent[parent[u]] - spent[v] + worst[model[u]] > cost_left:
                u = end[u]  # this invocation's reservation cannot fit: nor can anything below it
                continue
            if cost > cost_left or (cum_lat[u] - cum_lat[v]) + qs > latency_left or cost >= best_cost:
                u = end[u]
                continue
            if (acc[u] - acc[v]) / alive >= alpha:
                best = u
                best_cost = cost
                u = end[u]  # every descendant costs at least as much and has a larger id
                continue
            u += 1
        if best < 0:
            status = 1
            best = v
    if objective == 0 or status == 1:
        best_acc = 0.0
        best_cost = 0.0
        u = v + 1
        while u < stop:
            d = depth[u] - base
            qs = qsum[d - 1] + queue_delay[model[u]]
            qsum[d] = qs
            cost = (cum_cost[u] - cum_cost[v]) / alive
            if reserve and d <= reserve_steps and spent[parent[u]] - spent[v] + worst[model[u]] > cost_left:
                u = end[u]
                continue
            if cost > cost_left or (cum_lat[u] - cum_lat[v]) + qs > latency_left:
                u = end[u]
                continue
            a = (acc[u] - acc[v]) / alive
            if a > best_acc or (a == best_acc and cost < best_cost):
                best = u
                best_acc = a
                best_cost = cost
            ub = (acc_max[u] - acc[v]) / alive
            if bound and (ub < best_acc or (ub == best_acc and cost >= best_cost)):
                u = end[u]
            else:
                u += 1
    if best == v:
        return v, -1, status
    w = best
    while depth[w] > base + 1:
        w = parent[w]
    return best, model[w], status


@dataclass(frozen=True)
class Suffix:
    """The controller's answer at a realized node: where to aim and what to invoke next."""

    target: int  # the terminating node aimed at (the realized node itself to stop)
    next_model: int  # the model to invoke now; -1: stop
    accuracy: float  # the suffix's conditional accuracy, expected cost and latency (queue delays included)
    cost: float
    latency: float
    met: bool  # MIN_COST: alpha was reached (else this is the most accurate feasible suffix); always True for 0


def _check(
    trie: ExecutionTrie, v: int, cost_left: float, latency_left: float, objective: int, alpha: float, queue_delay: Any
) -> NDArray[np.float64]:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v < trie.n_nodes:
        raise UsageError(f"best_suffix: node {v!r} is not in the trie (0..{trie.n_nodes - 1})")
    for name, x in (("cost_left", cost_left), ("latency_left", latency_left)):
        if not isinstance(x, int | float | np.number) or math.isnan(x) or x < 0:
            raise UsageError(f"best_suffix: {name} must be a number >= 0 (inf for no cap), not {x!r}")
    if objective not in (MAX_ACCURACY, MIN_COST):
        raise UsageError(f"best_suffix: objective must be {MAX_ACCURACY} or {MIN_COST}, not {objective!r}")
    if not isinstance(alpha, int | float | np.number) or not 0.0 <= alpha <= 1.0:
        raise UsageError(f"best_suffix: alpha must be in [0, 1], not {alpha!r}")
    if queue_delay is None:
        return np.zeros(trie.n_models)
    qd = np.ascontiguousarray(queue_delay, dtype=np.float64)
    if qd.shape != (trie.n_models,) or not np.isfinite(qd).all() or (qd < 0).any():
        raise UsageError(f"best_suffix: queue_delay must be {trie.n_models} finite delays >= 0")
    return qd


def _suffix(trie: ExecutionTrie, v: int, target: int, nxt: int, status: int, qd: NDArray[np.float64]) -> Suffix:
    alive = 1.0 - float(trie.A[v])
    qs = 0.0
    for m in trie.path(target)[int(trie.depth[v]) :]:
        qs += float(qd[m])
    if alive <= 0.0:
        return Suffix(v, -1, 0.0, 0.0, 0.0, True)
    return Suffix(
        target=target,
        next_model=nxt,
        accuracy=(float(trie.A[target]) - float(trie.A[v])) / alive,
        cost=(float(trie.C[target]) - float(trie.C[v])) / alive,
        latency=(float(trie.L[target]) - float(trie.L[v])) + qs,
        met=status == 0,
    )


def best_suffix(
    trie: ExecutionTrie,
    v: int,
    cost_left: float = math.inf,
    latency_left: float = math.inf,
    *,
    objective: int = MAX_ACCURACY,
    alpha: float = 0.0,
    queue_delay: Any = None,
) -> Suffix:
    """Re-root at the realized node v and return the best suffix (see the module docstring).

    Args:
        trie: the loop's annotated trie.
        v: the realized node (``trie.node(models invoked so far)``).
        cost_left: the money left, in the trie's cost unit (math.inf: no cap).
        latency_left: the seconds left before the deadline or SLO (math.inf: no cap).
        objective: :data:`MAX_ACCURACY` or :data:`MIN_COST`.
        alpha: MIN_COST's accuracy floor on the conditional accuracy of the suffix.
        queue_delay: expected queueing delay per model in seconds, added per invocation (None: zeros).

    Raises:
        UsageError: v not in the trie, a NaN or negative cap, a bad objective, alpha or queue_delay.
    """
    qd = _check(trie, v, cost_left, latency_left, objective, alpha, queue_delay)
    target, nxt, status = best_suffix_kernel(
        trie.depth, trie.model, trie.end, trie.parent, trie.A, trie.C, trie.L, trie.A_max,
        int(v), float(cost_left), float(latency_left), int(objective), float(alpha), qd, trie.horizon,
    )  # fmt: skip
    return _suffix(trie, int(v), int(target), int(nxt), int(status), qd)


def _select(
    trie: ExecutionTrie,
    v: int,
    nodes: list[int],
    cost_left: float,
    latency_left: float,
    objective: int,
    alpha: float,
    qd: NDArray[np.float64],
) -> Suffix:
    """The best of the candidate nodes ``nodes`` (all in v's subtree), by plain enumeration."""
    found = [_suffix(trie, v, u, -1, 0, qd) for u in nodes]
    feasible = [(s, u) for s, u in zip(found, nodes, strict=True) if s.cost <= cost_left and s.latency <= latency_left]
    feasible.append((_suffix(trie, v, v, -1, 0, qd), v))  # stopping
    met = True
    if objective == MIN_COST:
        floor = [(s.cost, u) for s, u in feasible if s.accuracy >= alpha]
        if floor:
            target = min(floor)[1]
        else:
            met = False
    if objective == MAX_ACCURACY or not met:
        target = min((-s.accuracy, s.cost, u) for s, u in feasible)[2]
    path = trie.path(target)[int(trie.depth[v]) :]
    return _suffix(trie, v, target, path[0] if path else -1, 0 if met else 1, qd)


def best_suffix_reference(
    trie: ExecutionTrie,
    v: int,
    cost_left: float = math.inf,
    latency_left: float = math.inf,
    *,
    objective: int = MAX_ACCURACY,
    alpha: float = 0.0,
    queue_delay: Any = None,
) -> Suffix:
    """:func:`best_suffix` by brute force over every descendant of v, in Python (for tests)."""
    qd = _check(trie, v, cost_left, latency_left, objective, alpha, queue_delay)
    if 1.0 - float(trie.A[v]) <= 0.0:
        return Suffix(v, -1, 0.0, 0.0, 0.0, True)
    nodes = list(range(v + 1, int(trie.end[v])))
    return _select(trie, v, nodes, cost_left, latency_left, objective, alpha, qd)


def best_path(
    trie: ExecutionTrie,
    cost_cap: float = math.inf,
    latency_cap: float = math.inf,
    *,
    objective: int = MAX_ACCURACY,
    alpha: float = 0.0,
    queue_delay: Any = None,
) -> tuple[int, ...]:
    """VineLM fixed at admission (open loop): the models of the best path from the root."""
    s = best_suffix(trie, 0, cost_cap, latency_cap, objective=objective, alpha=alpha, queue_delay=queue_delay)
    return trie.path(s.target)


def murakkab_path(
    trie: ExecutionTrie,
    cost_cap: float = math.inf,
    latency_cap: float = math.inf,
    *,
    objective: int = MAX_ACCURACY,
    alpha: float = 0.0,
    queue_delay: Any = None,
    single_stage: bool = False,
) -> tuple[int, ...]:
    """The workflow-level baseline (Murakkab, the paper's §5): one model for the first invocation, one for
    every repair, and a depth cap, chosen at admission by the same objective and ties as :func:`best_path`.

    ``single_stage=True`` (a loop of one stage, as MathQA): the same model for every invocation.
    """
    qd = _check(trie, 0, cost_cap, latency_cap, objective, alpha, queue_delay)
    nodes: set[int] = set()
    for first in range(trie.n_models):
        for repair in [first] if single_stage else range(trie.n_models):
            v = 0
            for k in range(trie.horizon):
                v = int(trie.child[v, first if k == 0 else repair])
                if v < 0:
                    break
                nodes.add(v)
    s = _select(trie, 0, sorted(nodes), cost_cap, latency_cap, objective, alpha, qd)
    return trie.path(s.target)
