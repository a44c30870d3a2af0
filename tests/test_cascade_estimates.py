"""Sparse cascade profiling and the estimators of VineLM's Table 1 (issue 18, item 4): the trie's preorder,
checkpoints, fill-in and the budget are exact; the decomposition is unbiased where it must be."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planners.cascade_estimates import ESTIMATORS, CascadeRate, decompose, estimate
from planners.cascade_sampling import Observations, PathOutcomes, PathTrie, cascade_sample
from runtime.types import UsageError
from tools.reflection_cascade import cascade_table
from tools.reflection_data import Outcomes, load_attempts

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "reflection" / "attempts_sample.csv"
DATA = os.environ.get("ONTIME_DATA_DIR")
DECOMPOSING = ("vinelm_lite", "vinelm", "vinelm_eb", "latent_class")


def synthetic(seed: int, questions: int, models: int = 3, depth: int = 3, classes: int = 2) -> PathOutcomes:
    """A latent-class reflection loop: each question has a class; model m's j-th try succeeds with a chance
    that depends on the class, the same answer whichever path it is on. Integer costs, so sums are exact."""
    rng = np.random.default_rng(seed)
    trie = PathTrie([f"m{i}" for i in range(models)], depth)
    theta = rng.uniform(0.05, 0.9, (classes, models, depth))
    tries = rng.random((questions, models, depth)) < theta[rng.integers(classes, size=questions)]
    cost = rng.integers(1, 5, (questions, trie.size)).astype(np.float64)
    return PathOutcomes(trie, tries[:, trie.model, trie.repeat], cost)


@given(st.integers(1, 4), st.integers(1, 4))
def test_preorder_slices_are_subtrees(models: int, depth: int) -> None:
    trie = PathTrie([f"m{i}" for i in range(models)], depth)
    assert trie.size == sum(models**d for d in range(1, depth + 1))
    for n in range(trie.size):
        inside = {int(x) for x in np.flatnonzero((trie.ancestors == n).any(axis=1))}
        assert inside == set(range(n, int(trie.end[n])))
        path = trie.path(n)
        assert len(path) == trie.depth[n] and path[-1] == trie.models[trie.model[n]]
        assert trie.repeat[n] == path[:-1].count(path[-1])
        if trie.parent[n] >= 0:
            assert trie.parent[n] < n and trie.path(int(trie.parent[n])) == path[:-1]


def test_bad_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="at least one model"):
        PathTrie([], 3)
    with pytest.raises(UsageError, match="depth >= 1"):
        PathTrie(["a"], 0)
    with pytest.raises(UsageError, match="distinct"):
        PathTrie(["a", "a"], 2)
    with pytest.raises(UsageError, match="paths"):
        PathTrie([f"m{i}" for i in range(9)], 7)
    trie = PathTrie(["a", "b"], 2)
    with pytest.raises(UsageError, match="questions x 6"):
        PathOutcomes(trie, np.zeros((0, 6), dtype=bool), np.zeros((0, 6)))
    table = synthetic(0, 5, models=2, depth=2)
    with pytest.raises(UsageError, match="budget"):
        cascade_sample(table, -1.0, np.random.default_rng(0))
    empty = cascade_sample(table, 0.0, np.random.default_rng(0))
    with pytest.raises(UsageError, match="no observations"):
        estimate("vinelm", table.trie, empty)
    full = cascade_sample(table, 1e9, np.random.default_rng(0))
    with pytest.raises(UsageError, match="unknown estimator 'xgboost'"):
        estimate("xgboost", table.trie, full)
    with pytest.raises(UsageError, match="no conditional rates"):
        estimate("average", table.trie, full).cascade_rates(table.trie)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8), st.floats(0.0, 1.2))
def test_checkpoints_charge_once_and_the_budget_holds(seed: int, questions: int, share: float) -> None:
    table = synthetic(seed, questions, models=2, depth=3)
    budget = share * table.profiling_cost().checkpointed
    obs = cascade_sample(table, budget, np.random.default_rng(seed))
    assert obs.spent <= budget
    assert obs.spent == table.cost[obs.executed].sum()  # each (question, node) paid for once
    trie, y = table.trie, table.outcomes
    for q, n in zip(*np.nonzero(obs.executed), strict=True):
        above = trie.ancestors[n, : trie.depth[n] - 1]
        assert obs.executed[q, above].all() and not y[q, above].any()  # run from the root, only after failures
    assert (obs.success == (table.invoke & obs.executed)).all()


def test_fill_in_marks_exactly_the_subtrees_of_observed_successes() -> None:
    trie = PathTrie(["a", "b"], 3)
    executed = np.zeros((2, trie.size), dtype=bool)
    success = np.zeros_like(executed)
    a, ab = 0, 4  # ("a",) and ("a", "b") in preorder
    executed[0, [a, ab]] = True
    success[0, ab] = True
    executed[1, a] = True  # a failure fills nothing
    observed, value = Observations(trie, executed, success).filled()
    assert set(np.flatnonzero(value[0])) == set(range(ab, int(trie.end[ab])))
    assert set(np.flatnonzero(observed[0])) == {a, *range(ab, int(trie.end[ab]))}
    assert not value[1].any() and set(np.flatnonzero(observed[1])) == {a}


@pytest.mark.parametrize("seed", [0, 1])
def test_full_observation_gives_the_true_means(seed: int) -> None:
    table = synthetic(seed, 60)
    cost = table.profiling_cost()
    obs = cascade_sample(table, cost.checkpointed, np.random.default_rng(seed))
    assert obs.executed.sum() == table.reachable().sum() and obs.spent == pytest.approx(cost.checkpointed)
    assert cost.full >= cost.checkpointed
    truth = table.accuracy
    for name in ("prefix_average", "vinelm_lite"):
        assert np.allclose(estimate(name, table.trie, obs).accuracy, truth, atol=1e-12), name


def test_the_decomposition_converges_on_a_mixture_and_direct_averaging_does_not() -> None:
    errors: dict[str, list[float]] = {"vinelm_lite": [], "latent_class": [], "average": []}
    for share in (0.03, 0.3):
        table = synthetic(7, 3000)
        obs = cascade_sample(table, share * table.profiling_cost().checkpointed, np.random.default_rng(7))
        for name, errs in errors.items():
            errs.append(float(np.abs(estimate(name, table.trie, obs).accuracy - table.accuracy).mean()))
    assert errors["vinelm_lite"][1] < errors["vinelm_lite"][0] / 2 and errors["vinelm_lite"][1] < 0.015
    assert errors["latent_class"][1] < 0.01
    assert errors["average"][1] > 0.1  # MNAR: deep columns are seen only on hard questions


@pytest.mark.parametrize("name", DECOMPOSING)
def test_decomposing_estimators_are_monotone_and_give_rates(name: str) -> None:
    table = synthetic(3, 200)
    obs = cascade_sample(table, 0.1 * table.profiling_cost().checkpointed, np.random.default_rng(3))
    est = estimate(name, table.trie, obs)
    trie, acc = table.trie, est.accuracy
    deeper = trie.parent >= 0
    assert (acc[deeper] >= acc[trie.parent[deeper]] - 1e-12).all() and ((acc >= 0) & (acc <= 1)).all()
    assert est.conditional is not None and np.allclose(decompose(trie, est.conditional), acc)
    if est.low is not None:
        rates = est.cascade_rates(trie)
        assert len(rates) == trie.size and all(isinstance(r, CascadeRate) for r in rates)
        assert all(0 <= r.low <= r.rate <= r.high <= 1 for r in rates)
        low, high = est.accuracy_interval(trie)
        assert (low <= acc + 1e-12).all() and (acc <= high + 1e-12).all()


def test_every_estimator_runs_on_the_shipped_slice() -> None:
    attempts = load_attempts(SAMPLE)
    o = Outcomes(attempts)
    table, questions = cascade_table(attempts, o.models, 3)
    assert len(questions) == 200 and (table.cost[table.reachable()] > 0).all()  # every run invocation is priced
    trie, truth = table.trie, table.accuracy
    for m in o.models:  # depth 1 is the first answer; (m, m) adds m's own repair
        first, repair = o.first(m).mean, o.repair(m).mean
        node = trie.by_depth[0][trie.models.index(m)]
        assert truth[node] == pytest.approx(first)
        again = next(int(c) for c in trie.by_depth[1] if trie.path(int(c)) == (m, m))
        assert truth[again] == pytest.approx(first + (1 - first) * repair)
    obs = cascade_sample(table, 0.05 * table.profiling_cost().checkpointed, np.random.default_rng(0))
    for name in ESTIMATORS:
        assert estimate(name, trie, obs).accuracy.shape == (trie.size,)


def test_the_benchmark_runs_on_the_slice(tmp_path: Path) -> None:
    from benchmarks.vine_estimators import main

    assert main(["--depth", "3", "--seeds", "2", "--sweep", "0.05", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"table1.csv", "table2.csv", "mae_vs_coverage.png"}


@pytest.mark.skipif(DATA is None, reason="set ONTIME_DATA_DIR for the full attempts file")
def test_on_the_full_data_the_decomposition_beats_direct_averaging() -> None:
    attempts = load_attempts(Path(str(DATA)) / "reflection" / "renze_attempts.csv")
    table, questions = cascade_table(attempts, ["llama-2-7b-chat", "gpt-35-turbo", "mistral-large"], 4)
    assert len(questions) == 800
    obs = cascade_sample(table, 0.02 * table.profiling_cost().checkpointed, np.random.default_rng(0))
    err = {n: float(np.abs(estimate(n, table.trie, obs).accuracy - table.accuracy).mean()) for n in ESTIMATORS}
    assert err["vinelm_lite"] < err["prefix_average"] < err["average"]
