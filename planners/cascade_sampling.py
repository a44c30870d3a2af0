"""The path space of a cascade (a reflection loop over models) and sparse cascade profiling (VineLM §4.2).

A *path* is a sequence of 1..D model invocations, any model at any position; all prefixes form the execution
trie. :class:`PathTrie` numbers its nodes in DFS preorder with the root (the empty prefix) left out: node 0 is
the first depth-1 path, and the subtree of node ``n`` is the contiguous slice ``n:end[n]``.

A :class:`PathOutcomes` is what a fully profiled trie would say about a set of questions: ``invoke[q, n]``,
whether the last invocation of path ``n`` answers question ``q`` right (it matters only when every earlier
invocation on the path failed), and ``cost[q, n]``, what that invocation costs. A path succeeds if any of its
invocations does, so the question x path outcome table ``Y`` is prefix-closed.

:func:`cascade_sample` spends a profiling budget the way VineLM's profiler does: pick a question and a path at
random, run it from the root until an invocation succeeds or the path ends; a (question, node) pair already run
is read from its checkpoint for free, and a success marks the node's whole subtree successful for that question
(subtree fill-in, applied by :meth:`Observations.filled`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from runtime.types import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = ["MAX_NODES", "PathOutcomes", "Observations", "PathTrie", "ProfilingCost", "cascade_sample"]

MAX_NODES = 2_000_000  # a trie larger than this is a mistake (9 models at depth 7 is 5.4 million paths)


class PathTrie:
    """Every path of 1..``depth`` invocations over ``models``, in DFS preorder (root excluded).

    Arrays, one entry per node: ``parent`` (-1 at depth 1), ``depth`` (1..D), ``model`` (index into
    ``models``), ``repeat`` (how often the node's model was invoked earlier on its path: 0 is a fresh answer,
    1 its own first repair, ...), ``end`` (the subtree is ``n:end[n]``), and ``ancestors`` (shape N x D: the
    path's nodes from depth 1, padded with -1).

    Raises:
        UsageError: no models, a repeated model, depth below 1, or more than :data:`MAX_NODES` nodes.
    """

    def __init__(self, models: Sequence[str], depth: int) -> None:
        if not models:
            raise UsageError("a path trie needs at least one model")
        if len(set(models)) != len(models):
            raise UsageError(f"models must be distinct, got {list(models)}")
        if depth < 1:
            raise UsageError(f"a path trie needs depth >= 1, got {depth}")
        m = len(models)
        size = sum(m**d for d in range(1, depth + 1))
        if size > MAX_NODES:
            raise UsageError(f"{m} models at depth {depth} make {size:,} paths (more than {MAX_NODES:,})")
        self.models, self.max_depth, self.size = tuple(models), depth, size
        self.parent = np.full(size, -1, dtype=np.int64)
        self.depth = np.zeros(size, dtype=np.int64)
        self.model = np.zeros(size, dtype=np.int64)
        self.repeat = np.zeros(size, dtype=np.int64)
        self.end = np.zeros(size, dtype=np.int64)
        self.ancestors = np.full((size, depth), -1, dtype=np.int64)
        counter = 0
        # Iterative DFS: (parent node, its depth); children pushed in reverse so model 0 comes first.
        stack: list[tuple[int, int, int]] = [(-1, 0, k) for k in reversed(range(m))]
        pending: list[int] = []  # nodes whose subtree end is not yet known, innermost last
        while stack:
            par, d, k = stack.pop()
            while pending and self.depth[pending[-1]] > d:  # left the subtree of pending[-1]
                self.end[pending.pop()] = counter
            n = counter
            counter += 1
            self.parent[n], self.depth[n], self.model[n] = par, d + 1, k
            if par >= 0:
                self.ancestors[n, :d] = self.ancestors[par, :d]
                self.repeat[n] = int(np.count_nonzero(self.model[self.ancestors[par, :d]] == k))
            self.ancestors[n, d] = n
            pending.append(n)
            if d + 1 < depth:
                stack.extend((n, d + 1, j) for j in reversed(range(m)))
        for n in pending:
            self.end[n] = counter
        self.leaves = np.flatnonzero(self.depth == depth)
        self.by_depth = tuple(np.flatnonzero(self.depth == d) for d in range(1, depth + 1))

    def path(self, node: int) -> tuple[str, ...]:
        """The model names along ``node``'s path."""
        return tuple(self.models[self.model[a]] for a in self.ancestors[node, : self.depth[node]])

    def closure(self, hits: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """``hits`` (questions x nodes) OR-ed down every path: true where the node or an ancestor is true."""
        out = hits.copy()
        for nodes in self.by_depth[1:]:
            out[:, nodes] |= out[:, self.parent[nodes]]
        return out


@dataclass(frozen=True, slots=True)
class ProfilingCost:
    """Table 2's regimes: every reachable (question, node) run once (``checkpointed``), and every leaf path
    run from the root for every question with no reuse (``full``); both stop a path at its first success."""

    checkpointed: float
    full: float


@dataclass(frozen=True, slots=True)
class PathOutcomes:
    """The fully profiled truth: ``invoke[q, n]`` (the node's own invocation succeeds) and ``cost[q, n]``."""

    trie: PathTrie
    invoke: NDArray[np.bool_]
    cost: NDArray[np.float64]

    def __post_init__(self) -> None:
        shape = (self.invoke.shape[0], self.trie.size)
        if self.invoke.ndim != 2 or self.invoke.shape != shape or self.cost.shape != shape or not shape[0]:
            raise UsageError(f"a cascade table needs questions x {self.trie.size} arrays, got {self.invoke.shape}")
        if not np.all(np.isfinite(self.cost)) or np.any(self.cost < 0):
            raise UsageError("invocation costs must be finite and >= 0")

    @property
    def outcomes(self) -> NDArray[np.bool_]:
        """Y[q, n]: path ``n`` answers question ``q`` (some invocation on it succeeds)."""
        return self.trie.closure(self.invoke)

    @property
    def accuracy(self) -> NDArray[np.float64]:
        """A(n): the true accuracy of every path, the column means of Y."""
        return np.asarray(self.outcomes.mean(axis=0), dtype=np.float64)

    def reachable(self) -> NDArray[np.bool_]:
        """A node runs on a question only if every proper prefix failed there."""
        y = self.outcomes
        out = np.ones_like(y)
        deeper = self.trie.depth > 1
        out[:, deeper] = ~y[:, self.trie.parent[deeper]]
        return out

    def profiling_cost(self) -> ProfilingCost:
        spent = np.where(self.reachable(), self.cost, 0.0)
        fanout = float(len(self.trie.models)) ** (self.trie.max_depth - self.trie.depth)  # leaves under a node
        return ProfilingCost(float(spent.sum()), float((spent * fanout).sum()))


@dataclass(frozen=True, slots=True)
class Observations:
    """What cascade sampling saw: ``executed[q, n]`` (the node was run on the question) and ``success[q, n]``
    (its invocation succeeded; meaningful only where executed, and then every proper prefix had failed)."""

    trie: PathTrie
    executed: NDArray[np.bool_]
    success: NDArray[np.bool_]
    spent: float = 0.0
    draws: int = 0

    def filled(self) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """(observed, value) after subtree fill-in: a success marks every descendant successful."""
        hits = self.trie.closure(self.executed & self.success)
        return self.executed | hits, hits

    def conditional_counts(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(successes, trials) per node of P(node's invocation succeeds | every proper prefix failed)."""
        return (
            (self.executed & self.success).sum(axis=0).astype(np.float64),
            self.executed.sum(axis=0).astype(np.float64),
        )


def cascade_sample(
    table: PathOutcomes,
    budget: float,
    rng: np.random.Generator,
    *,
    target: Literal["leaf", "node"] = "leaf",
    max_draws: int | None = None,
) -> Observations:
    """Profile ``table`` sparsely: draw (question, path) pairs and run each path from the root, never spending
    more than ``budget``.

    ``target="leaf"`` draws a uniform leaf (the paper's cascade order: a random model at each depth);
    ``"node"`` draws a uniform node. A draw stops at the first success; a (question, node) already run is read
    from its checkpoint at no cost. Sampling ends when the next invocation would exceed the budget, when every
    reachable pair has run, or after ``max_draws`` draws (default: 50 x questions x leaves).

    Raises:
        UsageError: a negative or non-finite budget, or an unknown target.
    """
    if not np.isfinite(budget) or budget < 0:
        raise UsageError(f"a profiling budget must be finite and >= 0, got {budget}")
    trie = table.trie
    if target == "leaf":
        targets = trie.leaves
    elif target == "node":
        targets = np.arange(trie.size)
    else:
        raise UsageError(f"unknown sampling target {target!r} (leaf or node)")
    n_q = table.invoke.shape[0]
    limit = max_draws if max_draws is not None else 50 * n_q * len(trie.leaves)
    todo = int(table.reachable().sum())
    executed = np.zeros(table.invoke.shape, dtype=bool)
    invoke, cost, anc, depth = table.invoke, table.cost, trie.ancestors, trie.depth
    spent, draws, done = 0.0, 0, 0
    while draws < limit and done < todo:
        draws += 1
        q, t = int(rng.integers(n_q)), int(targets[rng.integers(len(targets))])
        row_run, row_ok, row_cost = executed[q], invoke[q], cost[q]
        for n in anc[t, : depth[t]]:
            if not row_run[n]:
                if spent + row_cost[n] > budget:
                    return Observations(trie, executed, invoke & executed, spent, draws)
                row_run[n] = True
                spent += float(row_cost[n])
                done += 1
            if row_ok[n]:
                break
    return Observations(trie, executed, invoke & executed, spent, draws)
