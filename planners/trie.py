"""VineLM's execution trie (arXiv paper 004, §3.2-3.3) for one refinement loop, in flat arrays.

One loop subtask is one trie. Node 0 is the root (the empty prefix, nothing invoked yet); a node at depth d
is a prefix of d model choices, the d-th being ``model[v]``. Nodes are numbered in DFS preorder, so the
subtree of v is the contiguous slice ``[v, end[v])`` and a search skips a subtree with ``u = end[u]``.
The children of a node are *not* consecutive (each child's subtree sits between it and the next child):
``child[v, m]`` finds them (-1 where model m is not allowed at that position), the first child is
``v + 1`` when ``end[v] > v + 1``, and the next sibling of a child u is ``end[u]`` (if it is below ``end[v]``);
children appear in increasing model order.

Annotations (arrays over nodes; index 0 is the root, whose inputs are 0):

    q[v]  P(the invocation that made v succeeds | every earlier invocation on the prefix failed)  (input)
    c[v]  that invocation's expected cost (any unit; ontime's is pico-dollars)                    (input)
    l[v]  that invocation's expected latency in seconds                                           (input)
    A[v] = A[parent] + (1 - A[parent]) q[v]     P(the loop has succeeded by the end of v)
    C[v] = C[parent] + (1 - A[parent]) c[v]     expected spend with early stopping
    L[v] = L[parent] + l[v]                     latency if every stage runs (not discounted; paper §3.3)

All three are monotone along every root-to-leaf chain (q in [0, 1], c >= 0, l >= 0), which the searches in
:mod:`planners.trie_search` prune with. Every node is a terminating node: a path of k models means "try up to
k times, stop at the first success".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from runtime.types import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

__all__ = ["MAX_NODES", "ExecutionTrie", "trie_structure"]

MAX_NODES = 20_000_000  # ~1.5 GB of arrays at 9 models; a larger trie is refused, not built


@njit(cache=True, nogil=True)
def _build(allowed: NDArray[np.bool_], n: int) -> tuple[NDArray[Any], ...]:
    """The structure arrays in DFS preorder (children in increasing model order)."""
    horizon, n_models = allowed.shape
    parent = np.full(n, -1, np.int32)
    depth = np.zeros(n, np.int32)
    model = np.full(n, -1, np.int32)
    end = np.zeros(n, np.int32)
    child = np.full((n, n_models), -1, np.int32)
    path = np.zeros(horizon + 1, np.int64)  # the node at each depth of the current DFS path
    nxt = np.zeros(horizon + 1, np.int64)  # the next model to try below it
    d = 0
    idx = 1
    while d >= 0:
        if d < horizon:
            m = nxt[d]
            while m < n_models and not allowed[d, m]:
                m += 1
            if m < n_models:
                nxt[d] = m + 1
                u = idx
                idx += 1
                p = path[d]
                parent[u] = p
                depth[u] = d + 1
                model[u] = m
                child[p, m] = u
                d += 1
                path[d] = u
                nxt[d] = 0
                continue
        end[path[d]] = idx
        d -= 1
    return parent, depth, model, end, child


@njit(cache=True, nogil=True)
def _accumulate(
    parent: NDArray[np.int32], q: NDArray[np.float64], c: NDArray[np.float64], lat: NDArray[np.float64]
) -> tuple[NDArray[np.float64], ...]:
    n = parent.shape[0]
    acc = np.zeros(n)
    cost = np.zeros(n)
    tim = np.zeros(n)
    for v in range(1, n):  # preorder: a parent comes before its children
        p = parent[v]
        alive = 1.0 - acc[p]
        acc[v] = acc[p] + alive * q[v]
        cost[v] = cost[p] + alive * c[v]
        tim[v] = tim[p] + lat[v]
    return acc, cost, tim


@njit(cache=True, nogil=True)
def _subtree_max(acc: NDArray[np.float64], end: NDArray[np.int32], parent: NDArray[np.int32]) -> NDArray[np.float64]:
    """The largest A in each subtree (reverse preorder: children before parents)."""
    out = acc.copy()
    for v in range(acc.shape[0] - 1, 0, -1):
        p = parent[v]
        if out[v] > out[p]:
            out[p] = out[v]
    return out


def _check_allowed(n_models: int, allowed: Any) -> NDArray[np.bool_]:
    if isinstance(n_models, bool) or not isinstance(n_models, int | np.integer) or n_models < 1:
        raise UsageError(f"trie: n_models must be a positive integer, not {n_models!r}")
    mask = np.asarray(allowed)
    if mask.ndim != 2 or mask.shape[1] != n_models or mask.shape[0] < 1:
        raise UsageError(f"trie: allowed must be a (horizon >= 1, {n_models}) mask, not shape {mask.shape}")
    if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
        raise UsageError("trie: allowed must hold booleans")
    return np.ascontiguousarray(mask, dtype=np.bool_)


def _count(mask: NDArray[np.bool_]) -> int:
    n, width = 1, 1
    for row in mask:
        width *= int(row.sum())
        n += width
        if n > MAX_NODES:
            raise UsageError(f"trie: more than {MAX_NODES:,} nodes ({mask.shape[1]} models, depth {mask.shape[0]})")
    return n


def trie_structure(n_models: int, allowed: Any) -> tuple[NDArray[np.int32], ...]:
    """``(parent, depth, model, end, child)`` of the trie ``allowed`` spans, without annotations.

    ``allowed[d, m]`` says whether model m may make invocation d + 1 (d = 0 is the first). Use it to lay out
    per-node inputs for :meth:`ExecutionTrie.from_prefix_rates`.

    Raises:
        UsageError: a bad mask, or a trie of more than :data:`MAX_NODES` nodes.
    """
    mask = _check_allowed(n_models, allowed)
    out: tuple[NDArray[np.int32], ...] = _build(mask, _count(mask))
    return out


def _per_node(name: str, arr: Any, st: tuple[NDArray[np.int32], ...], n_models: int, horizon: int) -> NDArray[Any]:
    """A per-node input from an array over nodes, or a rate table over (depth - 1, previous model + 1, model)."""
    parent, depth, model = st[0], st[1], st[2]
    a = np.asarray(arr, dtype=np.float64)
    n = parent.shape[0]
    if a.shape == (n,):
        out = a.copy()
    elif a.shape == (horizon, n_models + 1, n_models):
        prev = np.where(parent >= 0, model[np.maximum(parent, 0)], -1)
        out = a[np.maximum(depth - 1, 0), prev + 1, np.maximum(model, 0)]
    else:
        raise UsageError(
            f"trie: {name} must have shape ({n},) (per node) or ({horizon}, {n_models + 1}, {n_models})"
            f" (per depth, previous model + 1, model), not {a.shape}"
        )
    out[0] = 0.0
    if not np.isfinite(out).all():
        raise UsageError(f"trie: {name} must be finite")
    return out


@dataclass(frozen=True, eq=False)
class ExecutionTrie:
    """A loop's execution trie with its annotations (see the module docstring for every array)."""

    n_models: int
    horizon: int
    allowed: NDArray[np.bool_]
    parent: NDArray[np.int32]
    depth: NDArray[np.int32]
    model: NDArray[np.int32]
    end: NDArray[np.int32]
    child: NDArray[np.int32]
    q: NDArray[np.float64]
    c: NDArray[np.float64]
    l: NDArray[np.float64]  # noqa: E741 - the paper's name
    A: NDArray[np.float64]
    C: NDArray[np.float64]
    L: NDArray[np.float64]
    A_max: NDArray[np.float64]  # the largest A in each subtree, for the accuracy bound of the search

    @property
    def n_nodes(self) -> int:
        return int(self.parent.shape[0])

    @classmethod
    def from_prefix_rates(cls, n_models: int, allowed: Any, q: Any, cost: Any, latency: Any) -> ExecutionTrie:
        """Build a trie from arrays (the fast builder).

        Each of ``q``, ``cost`` and ``latency`` is either an array over the nodes of
        ``trie_structure(n_models, allowed)`` (entry v is for the invocation that made v; the root's is
        ignored), or a table of shape ``(horizon, n_models + 1, n_models)`` indexed by (invocation - 1,
        previous model + 1 (0 for the first invocation), model).

        Raises:
            UsageError: a bad shape, q outside [0, 1], a negative or non-finite cost or latency.
        """
        mask = _check_allowed(n_models, allowed)
        st = _build(mask, _count(mask))
        horizon = int(mask.shape[0])
        qq = _per_node("q", q, st, n_models, horizon)
        cc = _per_node("cost", cost, st, n_models, horizon)
        ll = _per_node("latency", latency, st, n_models, horizon)
        if ((qq < 0) | (qq > 1)).any():
            raise UsageError("trie: q must be in [0, 1]")
        if (cc < 0).any() or (ll < 0).any():
            raise UsageError("trie: costs and latencies must be >= 0")
        acc, cum_c, cum_l = _accumulate(st[0], qq, cc, ll)
        return cls(
            n_models=int(n_models),
            horizon=horizon,
            allowed=mask,
            parent=st[0],
            depth=st[1],
            model=st[2],
            end=st[3],
            child=st[4],
            q=qq,
            c=cc,
            l=ll,
            A=acc,
            C=cum_c,
            L=cum_l,
            A_max=_subtree_max(acc, st[3], st[0]),
        )

    @classmethod
    def from_function(
        cls, n_models: int, allowed: Any, rates: Callable[[tuple[int, ...], int], tuple[float, float, float]]
    ) -> ExecutionTrie:
        """Build a trie from ``rates(prefix, model) -> (q, expected cost, expected latency)`` (Python speed).

        ``prefix`` is the tuple of models invoked before; ``model`` the one invoked now.
        """
        parent, _, model, _, _ = trie_structure(n_models, allowed)
        n = parent.shape[0]
        q, c, lat = np.zeros(n), np.zeros(n), np.zeros(n)
        prefixes: list[tuple[int, ...]] = [()] * n
        for v in range(1, n):
            before = prefixes[int(parent[v])]
            q[v], c[v], lat[v] = rates(before, int(model[v]))
            prefixes[v] = (*before, int(model[v]))
        return cls.from_prefix_rates(n_models, allowed, q, c, lat)

    @property
    def first_child(self) -> NDArray[np.int64]:
        """``v + 1`` where v has children, else -1 (the next sibling of a child u is ``end[u]``)."""
        after = np.arange(1, self.n_nodes + 1)
        return np.where(self.end > after, after, -1)

    # -- navigation ----------------------------------------------------------------------------------------

    def node(self, prefix: tuple[int, ...] | list[int]) -> int:
        """The node of a prefix of models.

        Raises:
            UsageError: the prefix is not in the trie.
        """
        v = 0
        for m in prefix:
            if not 0 <= m < self.n_models or self.child[v, m] < 0:
                raise UsageError(f"trie: prefix {tuple(prefix)} is not in the trie")
            v = int(self.child[v, m])
        return v

    def path(self, v: int) -> tuple[int, ...]:
        """The models on the root-to-v path."""
        out: list[int] = []
        while v > 0:
            out.append(int(self.model[v]))
            v = int(self.parent[v])
        return tuple(reversed(out))

    def nbytes(self) -> int:
        return sum(
            int(getattr(self, f).nbytes)
            for f in ("parent", "depth", "model", "end", "child", "q", "c", "l", "A", "C", "L", "A_max")
        )
