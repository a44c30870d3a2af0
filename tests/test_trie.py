"""The execution trie (issue 18): preorder slices, the paper's recursions, the online search against brute
force, and the closed-loop DP against a brute-force expectimax."""

from __future__ import annotations

import itertools
import math
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from planners.trie import ExecutionTrie, trie_structure
from planners.trie_dp import solve_closed_loop
from planners.trie_search import (
    MAX_ACCURACY,
    MIN_COST,
    best_path,
    best_suffix,
    best_suffix_kernel,
    best_suffix_reference,
    murakkab_path,
)
from runtime.types import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

SEEDS = st.integers(0, 2**32 - 1)


def random_trie(seed: int, coarse: bool = False, max_models: int = 3, max_depth: int = 4) -> ExecutionTrie:
    """A random trie; ``coarse`` draws q, costs and latencies from a few values so that ties happen."""
    rng = np.random.default_rng(seed)
    m, d = int(rng.integers(1, max_models + 1)), int(rng.integers(1, max_depth + 1))
    allowed = rng.random((d, m)) < 0.8
    n = trie_structure(m, allowed)[0].shape[0]
    q: Any = rng.choice([0.0, 0.25, 0.5, 1.0], n) if coarse else rng.random(n) * 0.8
    c: Any = rng.integers(0, 3, n) * 1.0 if coarse else rng.random(n)
    lat: Any = rng.integers(0, 3, n) * 1.0 if coarse else rng.random(n)
    return ExecutionTrie.from_prefix_rates(m, allowed, q, c, lat)


# -- the trie ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(SEEDS)
def test_preorder_slices_are_subtrees(seed: int) -> None:
    t = random_trie(seed)
    for v in range(t.n_nodes):
        below = {u for u in range(t.n_nodes) if v in _ancestors(t, u)}
        assert below == set(range(v, int(t.end[v])))
        kids = [int(t.child[v, m]) for m in range(t.n_models) if t.child[v, m] >= 0]
        assert kids == sorted(kids) and all(t.parent[u] == v and t.depth[u] == t.depth[v] + 1 for u in kids)
        assert kids == [u for u in range(t.n_nodes) if t.parent[u] == v]
        assert t.first_child[v] == (kids[0] if kids else -1)
        if kids:
            assert kids[0] == v + 1 and all(int(t.end[a]) == b for a, b in itertools.pairwise(kids))
        assert t.node(t.path(v)) == v


def _ancestors(t: ExecutionTrie, u: int) -> set[int]:
    out = {u}
    while u > 0:
        u = int(t.parent[u])
        out.add(u)
    return out


def test_sizes_of_the_paper_and_beyond() -> None:
    for m, d, n in ((9, 4, 7_381), (4, 6, 5_461), (2, 4, 31), (8, 3, 585), (9, 6, 597_871)):
        assert trie_structure(m, np.ones((d, m), bool))[0].shape[0] == n  # the root and 9 + 81 + ... prefixes
    allowed = np.ones((3, 4), bool)
    allowed[0, 3] = allowed[1:, 0] = False  # model 3 only repairs, model 0 only generates
    t = ExecutionTrie.from_prefix_rates(4, allowed, np.zeros((3, 5, 4)), np.zeros((3, 5, 4)), np.zeros((3, 5, 4)))
    assert t.n_nodes == 1 + 3 + 9 + 27 and all(p[0] != 3 and 0 not in p[1:] for p in map(t.path, range(1, t.n_nodes)))


@settings(max_examples=40, deadline=None)
@given(SEEDS)
def test_recursions_and_monotonicity(seed: int) -> None:
    t = random_trie(seed)
    for v in range(1, t.n_nodes):
        p = int(t.parent[v])
        assert t.A[v] == pytest.approx(t.A[p] + (1 - t.A[p]) * t.q[v], abs=1e-15)
        assert t.C[v] == pytest.approx(t.C[p] + (1 - t.A[p]) * t.c[v], abs=1e-15)
        assert t.L[v] == pytest.approx(t.L[p] + t.l[v], abs=1e-15)
        assert t.A[v] >= t.A[p] and t.C[v] >= t.C[p] and t.L[v] >= t.L[p]
        assert t.A_max[v] == t.A[v : int(t.end[v])].max()


def test_the_function_builder_and_the_rate_table_agree() -> None:
    rng = np.random.default_rng(3)
    table = rng.random((3, 4, 3)), rng.random((3, 4, 3)), rng.random((3, 4, 3))

    def rates(prefix: tuple[int, ...], m: int) -> tuple[float, float, float]:
        i = (len(prefix), prefix[-1] + 1 if prefix else 0, m)
        return float(table[0][i]), float(table[1][i]), float(table[2][i])

    a = ExecutionTrie.from_prefix_rates(3, np.ones((3, 3), bool), *table)
    b = ExecutionTrie.from_function(3, np.ones((3, 3), bool), rates)
    for x, y in ((a.A, b.A), (a.C, b.C), (a.L, b.L)):
        np.testing.assert_array_equal(x, y)


# -- the online search ---------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(SEEDS, st.booleans(), st.booleans())
def test_best_suffix_equals_brute_force(seed: int, coarse: bool, load_aware: bool) -> None:
    t = random_trie(seed, coarse=coarse)
    rng = np.random.default_rng(seed + 1)
    qd = rng.integers(0, 2, t.n_models) * 0.5 if load_aware else None
    for _ in range(6):
        v = int(rng.integers(0, t.n_nodes))
        caps = [math.inf, float(rng.integers(0, 5)), float(rng.random() * 3)]
        cost_left, latency_left = float(rng.choice(caps)), float(rng.choice(caps))
        for objective in (MAX_ACCURACY, MIN_COST):
            alpha = float(rng.choice([0.0, 0.5, rng.random(), 1.0]))
            args: dict[str, Any] = {"objective": objective, "alpha": alpha, "queue_delay": qd}
            got = best_suffix(t, v, cost_left, latency_left, **args)
            assert got == best_suffix_reference(t, v, cost_left, latency_left, **args)
            arrays = (t.depth, t.model, t.end, t.parent, t.A, t.C, t.L, t.A_max, v, cost_left, latency_left)
            qq: Any = np.zeros(t.n_models) if qd is None else qd
            plain = best_suffix_kernel(*arrays, objective, alpha, qq, t.horizon, False)
            assert plain == (got.target, got.next_model, 0 if got.met else 1)
            assert got.cost <= cost_left and got.latency <= latency_left
            assert (got.next_model == -1) == (got.target == v)


def test_min_cost_says_when_alpha_is_out_of_reach() -> None:
    t = ExecutionTrie.from_function(2, np.ones((2, 2), bool), lambda p, m: (0.3 + 0.2 * m, 1.0 + m, 1.0))
    s = best_suffix(t, 0, objective=MIN_COST, alpha=0.99)
    assert not s.met and s.target == t.node((1, 1)) and s.next_model == 1
    s = best_suffix(t, 0, objective=MIN_COST, alpha=0.5)
    assert s.met and s.target == t.node((0, 0)) and s.cost == pytest.approx(1.7)  # (1,) reaches 0.5 for 2
    assert best_suffix(t, 0, latency_left=0.5).next_model == -1  # nothing fits: stop


@settings(max_examples=40, deadline=None)
@given(SEEDS)
def test_rerooting_equals_a_fresh_trie_of_the_subtree(seed: int) -> None:
    """Re-rooted at v with nothing spent, the search answers what it answers on v's subtree as a new trie."""
    t = random_trie(seed, max_depth=3)
    rng = np.random.default_rng(seed)
    v = int(rng.integers(0, t.n_nodes))
    d = int(t.depth[v])
    if d == t.horizon:
        return
    here = t.path(v)

    def rates(prefix: tuple[int, ...], m: int) -> tuple[float, float, float]:
        u = t.node((*here, *prefix, m))
        return float(t.q[u]), float(t.c[u]), float(t.l[u])

    sub = ExecutionTrie.from_function(t.n_models, t.allowed[d:], rates)
    cost_left, latency_left = float(rng.random() * 2), float(rng.random() * 2)
    for objective in (MAX_ACCURACY, MIN_COST):
        a = best_suffix(t, v, cost_left, latency_left, objective=objective, alpha=0.5)
        b = best_suffix(sub, 0, cost_left, latency_left, objective=objective, alpha=0.5)
        assert t.path(a.target)[d:] == sub.path(b.target) and a.next_model == b.next_model
        assert a.accuracy == pytest.approx(b.accuracy) and a.cost == pytest.approx(b.cost)
    assert best_path(t, cost_left, latency_left) == t.path(best_suffix(t, 0, cost_left, latency_left).target)


@settings(max_examples=40, deadline=None)
@given(SEEDS)
def test_murakkab_is_a_restriction_of_vinelm(seed: int) -> None:
    t = random_trie(seed)
    cap = float(np.random.default_rng(seed).random() * 2)
    vine, mur = best_path(t, cap), murakkab_path(t, cap)
    assert t.A[t.node(vine)] >= t.A[t.node(mur)] and t.C[t.node(mur)] <= cap
    assert len(mur) <= 1 or len(set(mur[1:])) == 1
    single = murakkab_path(t, cap, single_stage=True)
    assert len(set(single)) <= 1 and t.A[t.node(mur)] >= t.A[t.node(single)]


# -- the closed-loop DP ----------------------------------------------------------------------------------------


def expectimax(t: ExecutionTrie, cost: Any, lat: Any, probs: Any, worst: Any) -> Any:
    """Hard-limit semantics in plain recursion: V(v, money left, time left) and Q for each model."""

    @cache
    def q_value(v: int, b: float, s: float, m: int) -> float:
        u = int(t.child[v, m])
        if u < 0 or worst[m] > b:
            return -1.0
        out = 0.0
        for k in range(probs.shape[1]):
            if lat[m, k] <= s:
                out += probs[m, k] * (t.q[u] + (1 - t.q[u]) * value(u, b - cost[m, k], s - lat[m, k]))
        return out

    @cache
    def value(v: int, b: float, s: float) -> float:
        return max([0.0, *(q_value(v, b, s, m) for m in range(t.n_models))])

    return value, q_value


@settings(max_examples=25, deadline=None)
@given(SEEDS, st.booleans())
def test_dp_equals_brute_force_on_integer_grids(seed: int, min_cost_ties: bool) -> None:
    rng = np.random.default_rng(seed)
    t = ExecutionTrie.from_prefix_rates(2, np.ones((3, 2), bool), rng.random(15) * 0.7, np.zeros(15), np.zeros(15))
    cost = rng.integers(0, 3, (2, 3))
    lat = rng.integers(0, 3, (2, 3)).astype(float)
    probs = rng.dirichlet(np.ones(3), 2)
    worst = cost.max(axis=1) + rng.integers(0, 2, 2)
    budget, deadline = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    pol = solve_closed_loop(
        t, cost, lat, probs, budget, float(deadline), worst_cost=worst,
        budget_bins=budget + 1, time_bins=deadline + 1, min_cost_ties=min_cost_ties,
    )  # fmt: skip
    assert pol.budget_unit == 1 and pol.time_unit == 1.0
    value, q_value = expectimax(t, cost, lat, probs, worst)
    for v in range(t.n_nodes):
        for b in range(budget + 1):
            for s in range(deadline + 1):
                best = value(v, b, s)
                assert pol.success(v, b, float(s)) == pytest.approx(best, abs=1e-12)
                m = pol.decide(v, b, float(s))
                assert (0.0 if m < 0 else q_value(v, b, s, m)) == pytest.approx(best, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(SEEDS, st.integers(2, 12), st.integers(2, 12))
@example(2963, 2, 8)  # deadline / unit rounded down by an ulp: the whole deadline fell in the cell below the top
def test_dp_value_grows_with_money_and_time_and_never_overpromises(seed: int, nb: int, nt: int) -> None:
    rng = np.random.default_rng(seed)
    t = random_trie(seed, max_models=2, max_depth=3)
    cost = rng.integers(1, 40, (t.n_models, 3))
    lat = rng.random((t.n_models, 3)) * 3
    probs = rng.dirichlet(np.ones(3), t.n_models)
    budget, deadline = int(rng.integers(1, 100)), float(rng.random() * 8 + 0.1)
    pol = solve_closed_loop(t, cost, lat, probs, budget, deadline, budget_bins=nb, time_bins=nt)
    assert pol.bins(budget, deadline) == (pol.value.shape[1] - 1, nt - 1)  # the whole budget and time: top cell
    assert (np.diff(pol.value, axis=1) >= -1e-15).all() and (np.diff(pol.value, axis=2) >= -1e-15).all()
    value, _ = expectimax(t, cost, lat, probs, cost.max(axis=1))
    assert pol.optimum <= value(0, budget, deadline) + 1e-12  # rounding up costs and time only loses


def test_dp_breaks_ties_by_expected_spend_when_asked() -> None:
    t = ExecutionTrie.from_prefix_rates(2, np.ones((1, 2), bool), np.full(3, 0.5), np.zeros(3), np.zeros(3))
    args = (np.array([[2, 2], [1, 1]]), np.ones((2, 2)), np.full((2, 2), 0.5), 4, 3.0)
    plain, cheap = solve_closed_loop(t, *args), solve_closed_loop(t, *args, min_cost_ties=True)
    assert plain.decide(0, 4, 3.0) == 0 and cheap.decide(0, 4, 3.0) == 1  # equal P(success) 0.5
    assert plain.optimum == cheap.optimum == 0.5 and cheap.expected_cost[0, -1, -1] == 1.0
    assert cheap.decide(0, 4, 0.99) == -1 and cheap.success(0, 1, 3.0) == 0.5  # no time; only model 1 fits
    assert cheap.bins(4, 3.0) == (cheap.value.shape[1] - 1, cheap.value.shape[2] - 1)


def test_dp_refuses_what_it_cannot_hold_or_read() -> None:
    m = 2
    t = ExecutionTrie.from_prefix_rates(m, np.ones((2, m), bool), np.full(7, 0.5), np.ones(7), np.ones(7))
    ok: dict[str, Any] = {
        "cost_points": np.ones((m, 2)),
        "latency_points": np.ones((m, 2)),
        "probs": np.full((m, 2), 0.5),
    }
    bad: list[dict[str, Any]] = [
        {"probs": np.full((m, 2), 0.4)},
        {"cost_points": np.full((m, 2), 1.5)},
        {"cost_points": -np.ones((m, 2))},
        {"latency_points": np.ones((m, 3))},
        {"worst_cost": np.zeros(m)},
        {"budget_bins": 1},
        {"budget": 0},
        {"deadline": math.nan},
        {"max_bytes": 10},
    ]
    for change in bad:
        kw = {**ok, "budget": 10, "deadline": 5.0, **change}
        with pytest.raises(UsageError):
            solve_closed_loop(t, **kw)


def test_bad_inputs_are_usage_errors() -> None:
    t = random_trie(2)
    calls: list[Callable[[], object]] = [
        lambda: trie_structure(0, np.ones((2, 1), bool)),
        lambda: trie_structure(2, np.ones((2, 3), bool)),
        lambda: trie_structure(9, np.ones((9, 9), bool)),  # 435 million nodes
        lambda: ExecutionTrie.from_prefix_rates(2, np.ones((2, 2), bool), np.full(7, 1.5), np.zeros(7), np.zeros(7)),
        lambda: ExecutionTrie.from_prefix_rates(2, np.ones((2, 2), bool), np.zeros(7), -np.ones(7), np.zeros(7)),
        lambda: ExecutionTrie.from_prefix_rates(2, np.ones((2, 2), bool), np.zeros(6), np.zeros(7), np.zeros(7)),
        lambda: best_suffix(t, t.n_nodes),
        lambda: best_suffix(t, 0, math.nan),
        lambda: best_suffix(t, 0, -1.0),
        lambda: best_suffix(t, 0, objective=2),
        lambda: best_suffix(t, 0, objective=MIN_COST, alpha=1.5),
        lambda: best_suffix(t, 0, queue_delay=-np.ones(t.n_models)),
        lambda: t.node((t.n_models,)),
    ]
    for call in calls:
        with pytest.raises(UsageError):
            call()
