"""Every path's accuracy from sparse cascade observations (VineLM §4.2, §5.3 and Appendix A), and better.

Each estimator is a function ``(trie, observations) -> Estimate`` named in :data:`ESTIMATORS`:

    average          column means of the directly run entries (MNAR: deep columns see only hard questions)
    prefix_average   subtree fill-in, then column means (optimistic: fill-in adds only successes)
    prefix_impute    fill-in, then rank-3 hard-impute of the question x path matrix, then column means
    vinelm_lite      the cascade decomposition A(p) = A(parent) + (1 - A(parent)) q(p), q(p) the mean of the
                     column over the questions it ran on, exactly those where every proper prefix failed
    vinelm           the same with the deepest block of conditional rates (rows: depth D-1 prefixes, columns:
                     last model) replaced by its rank-1 SVD projection, unobserved cells first set to the
                     column's observed mean (App. A.4)
    vinelm_eb        the decomposition with each conditional rate shrunk toward its group's rate (same last model,
                     same status: answering fresh, repairing once, or repairing again; and the same set of models
                     failed before it, order ignored): a beta-binomial prior whose strength is fitted by the method
                     of moments per group and capped at 100 pseudo-questions
    latent_class     a K-class mixture fitted by EM to the invocations the cascades ran: per class, the chance
                     that model m's j-th invocation on a path succeeds; missingness depends only on observed
                     outcomes (MAR) so the likelihood ignores it. Assumes a model's j-th answer to a question
                     does not depend on which other models failed before it (true of a reflection loop where
                     each model sees only its own earlier answers)

A conditional rate with no observation falls back to the pooled rate of its (depth, last model) group, then of
its last model, then 0. The decomposition estimators are monotone along paths by construction. Their
:class:`Estimate` carries the conditional rates, their counts and 95% intervals (Wilson; for ``vinelm_eb`` on
the posterior's pseudo-counts), which :meth:`Estimate.cascade_rates` lists per path for a spec's cascade table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np

from runtime.types import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

    from planners.cascade_sampling import Observations, PathTrie

__all__ = ["ESTIMATORS", "CascadeRate", "Estimate", "Estimator", "decompose", "estimate", "path_features", "wilson"]

Array: TypeAlias = "NDArray[np.float64]"


@dataclass(frozen=True, slots=True)
class CascadeRate:
    """P(the path's last invocation succeeds | every earlier one failed), its 95% interval and sample count."""

    path: tuple[str, ...]
    rate: float
    low: float
    high: float
    count: int


@dataclass(frozen=True, slots=True)
class Estimate:
    """Per node: ``accuracy`` A(node); where the method has them, ``conditional`` q(node) with ``low``/``high``
    (95%) and ``count`` (the questions it was measured on)."""

    method: str
    accuracy: Array
    conditional: Array | None = None
    low: Array | None = None
    high: Array | None = None
    count: Array | None = None

    def cascade_rates(self, trie: PathTrie) -> list[CascadeRate]:
        """The conditional rates path by path (DFS preorder), for a spec's cascade table.

        Raises:
            UsageError: the method gives no conditional rates with intervals.
        """
        if self.conditional is None or self.low is None or self.high is None or self.count is None:
            raise UsageError(f"estimator {self.method!r} gives no conditional rates with intervals")
        return [
            CascadeRate(
                trie.path(n), float(self.conditional[n]), float(self.low[n]), float(self.high[n]), int(self.count[n])
            )
            for n in range(trie.size)
        ]

    def accuracy_interval(self, trie: PathTrie) -> tuple[Array, Array]:
        """Each path's accuracy with every conditional rate at its interval's end (conservative, not 95%).

        Raises:
            UsageError: the method gives no intervals.
        """
        if self.low is None or self.high is None:
            raise UsageError(f"estimator {self.method!r} gives no intervals")
        return decompose(trie, self.low), decompose(trie, self.high)


Estimator: TypeAlias = "Callable[[PathTrie, Observations], Estimate]"


def wilson(successes: Array, trials: Array, z: float = 1.96) -> tuple[Array, Array]:
    """Wilson score intervals, elementwise; (0, 1) where there is no trial."""
    n = np.maximum(trials, 1e-12)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = np.clip(centre - half, 0.0, p), np.clip(centre + half, p, 1.0)
    empty = trials <= 0
    return np.where(empty, 0.0, lo), np.where(empty, 1.0, hi)


def decompose(trie: PathTrie, rates: Array) -> Array:
    """A(p) = A(parent) + (1 - A(parent)) q(p), from depth 1 down (A(root) = 0)."""
    acc = np.clip(rates, 0.0, 1.0).astype(np.float64)
    for nodes in trie.by_depth[1:]:
        above = acc[trie.parent[nodes]]
        acc[nodes] = above + (1.0 - above) * acc[nodes]
    return acc


def _check(trie: PathTrie, obs: Observations) -> None:
    if obs.trie is not trie and obs.executed.shape[1] != trie.size:
        raise UsageError(f"observations of {obs.executed.shape[1]} paths for a trie of {trie.size}")
    if not obs.executed.any():
        raise UsageError("no observations: a profiling budget too small for a single invocation")


def _fallback(trie: PathTrie, s: Array, n: Array) -> Array:
    """Pooled conditional rate of each node's (depth, model) group, else of its model, else 0."""
    m = len(trie.models)
    key = (trie.depth - 1) * m + trie.model
    gs, gn = np.bincount(key, s, trie.max_depth * m), np.bincount(key, n, trie.max_depth * m)
    ms, mn = np.bincount(trie.model, s, m), np.bincount(trie.model, n, m)
    by_model = np.where(mn > 0, ms / np.maximum(mn, 1), 0.0)
    by_group = np.where(gn > 0, gs / np.maximum(gn, 1), by_model[np.arange(trie.max_depth * m) % m])
    return np.asarray(by_group[key], dtype=np.float64)


def _column_means(trie: PathTrie, observed: NDArray[np.bool_], value: NDArray[np.bool_]) -> Array:
    """Column means of the observed entries; an empty column takes its parent's (depth 1: the overall mean)."""
    count = observed.sum(axis=0)
    mean = (observed & value).sum(axis=0) / np.maximum(count, 1)
    overall = float((observed & value).sum() / max(int(observed.sum()), 1))
    out = np.where(count > 0, mean, np.nan)
    for d, nodes in enumerate(trie.by_depth):
        gap = nodes[np.isnan(out[nodes])]
        out[gap] = overall if d == 0 else out[trie.parent[gap]]
    return np.asarray(out, dtype=np.float64)


def average(trie: PathTrie, obs: Observations) -> Estimate:
    _check(trie, obs)
    return Estimate("average", _column_means(trie, obs.executed, obs.success))


def prefix_average(trie: PathTrie, obs: Observations) -> Estimate:
    _check(trie, obs)
    return Estimate("prefix_average", _column_means(trie, *obs.filled()))


def hard_impute(values: Array, mask: NDArray[np.bool_], rank: int = 3, iters: int = 60) -> Array:
    """Rank-``rank`` hard-impute (Mazumder, Hastie & Tibshirani 2010): fill the gaps with the current low-rank
    fit and refit, here with one warm-started subspace iteration per round instead of a full SVD."""
    col = np.where(mask.any(axis=0), (values * mask).sum(axis=0) / np.maximum(mask.sum(axis=0), 1), 0.5)
    z = np.where(mask, values, col[None, :])
    u = np.linalg.qr(z[:, : max(rank, 1)] + np.random.default_rng(0).normal(0, 1e-3, (z.shape[0], rank)))[0]
    for _ in range(iters):
        u = np.linalg.qr(z @ (z.T @ u))[0]
        fit = u @ (u.T @ z)
        z = np.where(mask, values, np.clip(fit, 0.0, 1.0))
    return np.asarray(z, dtype=np.float64)


def prefix_impute(trie: PathTrie, obs: Observations) -> Estimate:
    _check(trie, obs)
    observed, value = obs.filled()
    completed = hard_impute(value.astype(np.float64), observed)
    return Estimate("prefix_impute", completed.mean(axis=0))


def _conditional(trie: PathTrie, obs: Observations, method: str, rates: Array | None = None) -> Estimate:
    s, n = obs.conditional_counts()
    raw = np.where(n > 0, s / np.maximum(n, 1), _fallback(trie, s, n))
    q = raw if rates is None else rates
    lo, hi = wilson(s, n)
    return Estimate(method, decompose(trie, q), q, np.minimum(lo, q), np.maximum(hi, q), n)


def vinelm_lite(trie: PathTrie, obs: Observations) -> Estimate:
    _check(trie, obs)
    return _conditional(trie, obs, "vinelm_lite")


def vinelm(trie: PathTrie, obs: Observations) -> Estimate:
    _check(trie, obs)
    lite = _conditional(trie, obs, "vinelm")
    if trie.max_depth < 2 or lite.conditional is None or lite.count is None:
        return lite
    leaves, prefixes = trie.by_depth[-1], trie.by_depth[-2]
    rows, cols = np.searchsorted(prefixes, trie.parent[leaves]), trie.model[leaves]
    s, n = obs.conditional_counts()
    block = np.full((len(prefixes), len(trie.models)), np.nan)
    seen = n[leaves] > 0
    block[rows[seen], cols[seen]] = s[leaves][seen] / n[leaves][seen]
    col_mean = np.nanmean(np.where(np.isnan(block).all(axis=0), 0.0, block), axis=0)
    block = np.where(np.isnan(block), col_mean[None, :], block)
    u, sv, vt = np.linalg.svd(block, full_matrices=False)
    smooth = np.clip(sv[0] * np.outer(u[:, 0], vt[0]), 0.0, 1.0)
    q = lite.conditional.copy()
    q[leaves] = smooth[rows, cols]
    return _conditional(trie, obs, "vinelm", q)


def _prefix_sets(trie: PathTrie) -> NDArray[np.int64]:
    """Per node, the set of models on its proper prefix as a bit mask."""
    out = np.zeros(trie.size, dtype=np.int64)
    for nodes in trie.by_depth[1:]:
        par = trie.parent[nodes]
        out[nodes] = out[par] | (np.int64(1) << trie.model[par])
    return out


def vinelm_eb(
    trie: PathTrie, obs: Observations, *, max_strength: float = 100.0, group: Literal["set", "depth"] = "set"
) -> Estimate:
    _check(trie, obs)
    s, n = obs.conditional_counts()
    m = len(trie.models)
    # Nodes alike: same last model, same fresh/repair/re-repair status, and the same set of models failed
    # before it ("set": order ignored), or the same depth ("depth").
    context = _prefix_sets(trie) if group == "set" else trie.depth
    raw_key = (context * m + trie.model) * 3 + np.minimum(trie.repeat, 2)
    _, key = np.unique(raw_key, return_inverse=True)
    size = int(key.max()) + 1
    gs, gn = np.bincount(key, s, size), np.bincount(key, n, size)
    # A group with no data borrows the (model, repeat) rate pooled over depths, else the model's, else 0.
    wide = trie.model * 3 + np.minimum(trie.repeat, 2)
    ws, wn = np.bincount(wide, s, m * 3), np.bincount(wide, n, m * 3)
    fb = _fallback(trie, s, n)
    by_wide = np.where(wn[wide] > 0, ws[wide] / np.maximum(wn[wide], 1), fb)
    prior = np.where(gn[key] > 0, gs[key] / np.maximum(gn[key], 1), by_wide)
    strength = np.full(size, max_strength)
    for g in np.flatnonzero(gn > 0):
        members = (key == g) & (n > 0)
        ni, pi = n[members], s[members] / n[members]
        mu, total = gs[g] / gn[g], gn[g]
        if len(ni) < 2 or mu <= 0 or mu >= 1:
            continue
        spread = float((ni * (pi - mu) ** 2).sum()) / (mu * (1 - mu))
        denom = total - float((ni**2).sum()) / total
        rho = max(0.0, (spread - (len(ni) - 1)) / denom) if denom > 0 else 0.0
        strength[g] = min(max_strength, max(0.0, 1.0 / rho - 1.0)) if rho > 0 else max_strength
    k = strength[key]
    post_s, post_n = s + k * prior, n + k
    q = np.where(post_n > 0, post_s / np.maximum(post_n, 1e-12), prior)
    lo, hi = wilson(post_s, post_n)  # the posterior's pseudo-counts: narrow where the group is homogeneous
    return Estimate("vinelm_eb", decompose(trie, q), q, np.minimum(lo, q), np.maximum(hi, q), n)


def latent_class(trie: PathTrie, obs: Observations, *, classes: int = 3, prior: float = 1.0,
                 iters: int = 200, restarts: int = 3) -> Estimate:  # fmt: skip
    _check(trie, obs)
    m, d_max = len(trie.models), trie.max_depth
    item = trie.model * d_max + trie.repeat  # (model, how often it was invoked before on the path)
    n_q, n_items = obs.executed.shape[0], m * d_max
    seen = np.zeros((n_q, n_items))
    hit = np.zeros((n_q, n_items))
    qs, ns = np.nonzero(obs.executed)
    seen[qs, item[ns]] = 1.0
    hit[qs, item[ns]] = obs.success[qs, ns]  # the same invocation on another path gave the same answer
    # Prior mean of an item: its pooled rate, else the same model's previous invocation's, else the overall.
    tot_s, tot_n = hit.sum(axis=0), seen.sum(axis=0)
    mu = np.full(n_items, float(hit.sum() / max(seen.sum(), 1.0)))
    for i in range(n_items):
        if tot_n[i] > 0:
            mu[i] = tot_s[i] / tot_n[i]
        elif i % d_max:
            mu[i] = mu[i - 1]
    mu = np.clip(mu, 1e-3, 1 - 1e-3)
    miss = seen - hit
    best: tuple[float, Array, Array] | None = None
    rng = np.random.default_rng(0)
    for _ in range(restarts):
        resp = rng.dirichlet(np.ones(classes), n_q)
        for _ in range(iters):
            weight = resp.sum(axis=0)
            pi = (weight + 1.0) / (n_q + classes)
            theta = (resp.T @ hit + prior * mu) / (resp.T @ seen + prior)
            log_lik = hit @ np.log(theta).T + miss @ np.log1p(-theta).T + np.log(pi)
            top = log_lik.max(axis=1, keepdims=True)
            norm = top[:, 0] + np.log(np.exp(log_lik - top).sum(axis=1))
            resp = np.exp(log_lik - norm[:, None])
        total = float(norm.sum())
        if best is None or total > best[0]:
            best = (total, pi, theta)
    assert best is not None
    _, pi, theta = best
    fail = np.log1p(-theta)[:, item]  # classes x nodes: log P(this invocation fails)
    for nodes in trie.by_depth[1:]:
        fail[:, nodes] += fail[:, trie.parent[nodes]]
    acc = 1.0 - pi @ np.exp(fail)
    above = np.where(trie.parent >= 0, acc[np.maximum(trie.parent, 0)], 0.0)
    q = np.clip((acc - above) / np.maximum(1.0 - above, 1e-12), 0.0, 1.0)
    return Estimate("latent_class", np.asarray(acc, dtype=np.float64), q, None, None, obs.executed.sum(axis=0) * 1.0)


def path_features(trie: PathTrie, obs: Observations) -> tuple[Array, list[str]]:
    """Per path, the hand-made features of the paper's gradient-boosting baseline (after fill-in): depth,
    observation counts, observed means of the path, its parent, grandparent and depth-1 prefix, its siblings,
    the mean difficulty of the questions it was seen on, and the strength of the models along it."""
    observed, value = obs.filled()
    count = observed.sum(axis=0).astype(np.float64)
    ok = (observed & value).sum(axis=0).astype(np.float64)
    mean = np.where(count > 0, ok / np.maximum(count, 1), np.nan)
    row_mean = (observed & value).sum(axis=1) / np.maximum(observed.sum(axis=1), 1)
    hardness = (observed * row_mean[:, None]).sum(axis=0) / np.maximum(count, 1)
    par = np.maximum(trie.parent, 0)
    top = trie.parent >= 0
    parent_mean = np.where(top, mean[par], np.nan)
    grand = np.where(top & (trie.parent[par] >= 0), mean[np.maximum(trie.parent[par], 0)], np.nan)
    first = mean[trie.ancestors[:, 0]]
    # Siblings share a parent: pooled over them, without the node itself.
    group = np.where(top, trie.parent, -1) + 1
    sib_ok, sib_n = (
        np.bincount(group, ok, trie.size + 1)[group] - ok,
        np.bincount(group, count, trie.size + 1)[group] - count,
    )
    sib_mean = np.where(sib_n > 0, sib_ok / np.maximum(sib_n, 1), np.nan)
    power = np.nan_to_num(mean[trie.by_depth[0]], nan=0.5)  # each model's first-answer rate
    along = np.where(trie.ancestors >= 0, power[trie.model[np.maximum(trie.ancestors, 0)]], np.nan)
    distinct = np.array([len(set(trie.model[trie.ancestors[n, : trie.depth[n]]])) for n in range(trie.size)])
    cols = {
        "depth": trie.depth * 1.0, "count": count, "executed": obs.executed.sum(axis=0) * 1.0, "mean": mean,
        "parent_mean": parent_mean, "grandparent_mean": grand, "first_mean": first, "sibling_mean": sib_mean,
        "sibling_count": sib_n, "hardness": hardness, "power": power[trie.model],
        "power_mean": np.nanmean(along, axis=1), "power_max": np.nanmax(along, axis=1),
        "power_min": np.nanmin(along, axis=1), "repeat": trie.repeat * 1.0, "distinct": distinct * 1.0,
    }  # fmt: skip
    return np.column_stack(list(cols.values())).astype(np.float64), list(cols)


ESTIMATORS: dict[str, Estimator] = {
    "average": average,
    "prefix_average": prefix_average,
    "prefix_impute": prefix_impute,
    "vinelm_lite": vinelm_lite,
    "vinelm": vinelm,
    "vinelm_eb": vinelm_eb,
    "latent_class": latent_class,
}


def estimate(method: str, trie: PathTrie, obs: Observations) -> Estimate:
    """Every path's accuracy by the estimator ``method`` (a key of :data:`ESTIMATORS`).

    Raises:
        UsageError: an unknown method, observations of another trie, or no observation at all.
    """
    if method not in ESTIMATORS:
        raise UsageError(f"unknown estimator {method!r} (known: {', '.join(ESTIMATORS)})")
    return ESTIMATORS[method](trie, obs)
