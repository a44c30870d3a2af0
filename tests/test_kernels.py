"""The simulation kernel mirrors the executor: a Seq-(m, k) policy simulated by the kernel finishes as
often, spends as much and takes as long as ``retry:m:k`` run through the real executor."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

import runtime
from planners.baselines import RetryPlanner
from planners.kernels import SnapshotSim, simulate_snapshot
from runtime import evaluate
from tests.conftest import EXAMPLES

CASES = [  # (spec, budget, deadline, model, k, executor runs): kept small, the executor is the slow side
    ("release20.json", 2.0, 1200.0, "mid", 2, 500),
    ("diamond.json", 0.05, 120.0, "small", 2, 1500),
    ("diamond.json", 0.3, 60.0, "large", 3, 1500),
    ("chain.json", 0.01, 40.0, "small", 4, 1500),
    # wide batches: siblings cancelled on a pool with recorded latency, and at a deadline that binds
    ("diamond.json", 0.1, 30.0, "small", 16, 1500),
    ("release20.json", 4.0, 400.0, "mid", 16, 300),
]


def start_snapshot(
    table: runtime.ProfileTable, budget: float, deadline: float, cancel: bool = True, rounds: bool = False
) -> runtime.Snapshot:
    return runtime.Snapshot.at_start(
        table, runtime.types.to_pusd(budget), deadline, cancel_siblings=cancel, rounds=rounds
    )


@pytest.mark.parametrize(("spec", "budget", "deadline", "model", "k", "runs"), CASES)
def test_kernel_matches_the_executor(spec: str, budget: float, deadline: float, model: str, k: int, runs: int) -> None:
    wf = runtime.load_workflow(EXAMPLES / spec)
    table = runtime.ProfileTable.from_workflow(wf)
    ok, spent, end = simulate_snapshot(
        start_snapshot(table, budget, deadline), {}, table.model_index(model), k, 4000, 1
    )
    report = evaluate(wf, budget, deadline, planner=f"retry:{model}:{k}", runs=runs, seed=0)
    p_sim, p_run = ok.mean(), report.p_success
    se = math.sqrt(p_sim * (1 - p_sim) / 4000 + p_run * (1 - p_run) / runs) + 1e-3
    assert abs(p_sim - p_run) < 4 * se, (p_sim, p_run)
    assert spent.mean() / runtime.PUSD_PER_USD == pytest.approx(report.mean_cost, rel=0.05, abs=1e-6)
    assert end.mean() == pytest.approx(report.mean_elapsed, rel=0.05)
    assert spent.max() <= runtime.types.to_pusd(budget)
    assert end.max() <= deadline


@pytest.mark.parametrize(("spec", "budget", "deadline", "model", "k"), [("diamond.json", 0.1, 40.0, "small", 8)])
def test_kernel_matches_the_executor_when_siblings_run_on(
    spec: str, budget: float, deadline: float, model: str, k: int
) -> None:
    wf = runtime.load_workflow(EXAMPLES / spec)
    table = runtime.ProfileTable.from_workflow(wf)
    snap = start_snapshot(table, budget, deadline, cancel=False)
    ok, spent, end = simulate_snapshot(snap, {}, table.model_index(model), k, 4000, 1)
    report = evaluate(wf, budget, deadline, planner=f"retry:{model}:{k}", runs=1500, seed=0, cancel_siblings=False)
    se = math.sqrt(ok.mean() * (1 - ok.mean()) / 4000 + report.p_success * (1 - report.p_success) / 1500)
    assert abs(ok.mean() - report.p_success) < 4 * se + 1e-3, (ok.mean(), report.p_success)
    assert spent.mean() / runtime.PUSD_PER_USD == pytest.approx(report.mean_cost, rel=0.05)
    assert end.mean() == pytest.approx(report.mean_elapsed, rel=0.05)


ROUNDS_CASES = [  # (spec, budget, deadline, model, k, cancel_siblings, executor runs)
    ("diamond.json", 0.05, 60.0, "small", 2, True, 1500),
    # siblings left to finish hold the round open: rounds cost 10 points and 10 seconds here
    ("diamond.json", 0.1, 40.0, "small", 8, False, 1500),
    ("release20.json", 2.0, 1000.0, "mid", 2, True, 300),
]


@pytest.mark.parametrize(("spec", "budget", "deadline", "model", "k", "cancel", "runs"), ROUNDS_CASES)
def test_kernel_matches_the_executor_in_synchronized_rounds(
    spec: str, budget: float, deadline: float, model: str, k: int, cancel: bool, runs: int
) -> None:
    """With ``rounds`` the policy decides only once nothing is in flight, in the kernel as in the executor."""
    wf = runtime.load_workflow(EXAMPLES / spec)
    table = runtime.ProfileTable.from_workflow(wf)
    j = table.model_index(model)
    ok, spent, end = simulate_snapshot(start_snapshot(table, budget, deadline, cancel, rounds=True), {}, j, k, 4000, 1)
    report = evaluate(
        wf, budget, deadline, planner=f"retry:{model}:{k}", runs=runs, seed=0, cancel_siblings=cancel, rounds=True
    )
    p_sim, p_run = ok.mean(), report.p_success
    se = math.sqrt(p_sim * (1 - p_sim) / 4000 + p_run * (1 - p_run) / runs) + 1e-3
    assert abs(p_sim - p_run) < 4 * se, (p_sim, p_run)
    assert spent.mean() / runtime.PUSD_PER_USD == pytest.approx(report.mean_cost, rel=0.05, abs=1e-6)
    assert end.mean() == pytest.approx(report.mean_elapsed, rel=0.05)
    # and the rule is in force: the rounds run is no faster than the event-driven one on the same draws
    _, _, end_events = simulate_snapshot(start_snapshot(table, budget, deadline, cancel), {}, j, k, 4000, 1)
    assert end.mean() > end_events.mean()


@pytest.mark.parametrize("subtask", ["research_a", "research_b"])  # lognormal lengths; a pool with latency
def test_samples_in_flight_are_drawn_given_that_they_are_still_running(subtask: str) -> None:
    """An in-flight sample of age e ends after e with the profile's distribution conditioned on that."""
    wf = runtime.load_workflow(EXAMPLES / "diamond.json")
    table = runtime.ProfileTable.from_workflow(wf)
    i, j, age = table.subtask_ids.index(subtask), table.model_index("small"), 9.0
    others = frozenset(range(table.n_subtasks)) - {i}  # so the run succeeds exactly when the batch does
    flight = runtime.InFlight(batch=0, subtask=i, model=j, k=3, started_at=0.0, open_samples=3, done=False)
    snap = runtime.Snapshot(
        table=table, now=age, time_left=1e6, budget_pusd=10**12, budget_left_pusd=10**12, output_tokens_left=None,
        completed=others, ready=(), in_flight=(flight,), failed=(), samples_launched=(0,) * table.n_subtasks,
    )  # fmt: skip
    ok, _spent, end = simulate_snapshot(snap, {}, j, 0, 20000, 5)  # no continuation: the batch alone
    from adapters.sim import draw_sample

    rng = random.Random(0)
    first_ends: list[float] = []
    first_ok: list[bool] = []
    while len(first_ends) < 20000:  # the same by rejection: three samples that last longer than age
        draws = [draw_sample(table, i, j, rng) for _ in range(3)]
        if all(lat > age for _, _, lat in draws):
            wins = [lat for good, _, lat in draws if good]
            first_ends.append((min(wins) if wins else max(lat for _, _, lat in draws)) - age)
            first_ok.append(bool(wins))
    assert ok.mean() == pytest.approx(np.mean(first_ok), abs=0.02)
    assert end.mean() == pytest.approx(np.mean(first_ends), rel=0.03)
    assert end.min() >= 0.0


def test_normal_quantile_is_accurate_in_the_body_and_the_tails() -> None:
    from statistics import NormalDist

    from planners.kernels import _upper_quantile

    for w in (1e-12, 1e-6, 0.001, 0.02, 0.0243, 0.1, 0.5, 0.77, 0.9757, 0.99, 1 - 1e-9):
        assert _upper_quantile(w) == pytest.approx(NormalDist().inv_cdf(1 - w), rel=1e-6, abs=1e-8), w


@pytest.mark.parametrize(
    ("spec", "budget", "deadline", "model"),
    [("release20.json", 3.0, 1500.0, "large"), ("diamond.json", 0.02, 90.0, "small")],
)
def test_kernel_matches_the_executor_for_uniform(spec: str, budget: float, deadline: float, model: str) -> None:
    from planners.baselines import MAX_WIDTH, UniformPlanner

    wf = runtime.load_workflow(EXAMPLES / spec)
    table = runtime.ProfileTable.from_workflow(wf)
    j = table.model_index(model)
    rollouts = UniformPlanner(table, j, runtime.types.to_pusd(budget)).rollouts
    snap = start_snapshot(table, budget, deadline)
    ok, spent, _end = simulate_snapshot(snap, {}, j, MAX_WIDTH, 4000, 1, rollouts=rollouts)
    report = evaluate(wf, budget, deadline, planner=f"uniform:{model}", runs=800, seed=0)
    se = math.sqrt(ok.mean() * (1 - ok.mean()) / 4000 + report.p_success * (1 - report.p_success) / 800) + 1e-3
    assert abs(ok.mean() - report.p_success) < 4 * se, (ok.mean(), report.p_success)
    assert spent.mean() / runtime.PUSD_PER_USD == pytest.approx(report.mean_cost, rel=0.05, abs=1e-6)


def test_explicit_first_action_equals_the_policy_deciding_itself() -> None:
    table = runtime.ProfileTable.from_workflow(runtime.load_workflow(EXAMPLES / "release20.json"))
    snap = start_snapshot(table, 1.0, 900.0)
    j = table.model_index("mid")
    first = RetryPlanner(table, j, 2).decide(snap).launches
    a = simulate_snapshot(snap, dict(first), j, 2, 300, 7)
    b = simulate_snapshot(snap, {}, j, 2, 300, 7)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


def test_same_seed_same_draws_and_waiting_with_nothing_in_flight_fails() -> None:
    table = runtime.ProfileTable.from_workflow(runtime.load_workflow(EXAMPLES / "diamond.json"))
    snap = start_snapshot(table, 0.05, 120.0)
    a = simulate_snapshot(snap, {}, 0, 2, 200, 3)
    b = simulate_snapshot(snap, {}, 0, 2, 200, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    idle = simulate_snapshot(snap, {0: runtime.Launch(0, 0)}, 0, 2, 50, 3)  # "not now" on the only ready subtask
    assert not idle[0].any()


def test_each_simulation_is_its_own_stream_so_a_range_can_be_replayed() -> None:
    table = runtime.ProfileTable.from_workflow(runtime.load_workflow(EXAMPLES / "release20.json"))
    sim = SnapshotSim(start_snapshot(table, 1.0, 900.0))
    whole = sim({}, 1, 4, 64, 11)
    head, tail = sim({}, 1, 4, 16, 11), sim({}, 1, 4, 48, 11, first_sim=16)
    for x, h, t in zip(whole, head, tail, strict=True):
        assert np.array_equal(x, np.concatenate([h, t]))
    other = sim({}, 1, 4, 64, 12)
    assert not np.array_equal(whole[1], other[1]), "another seed draws other runs"


def test_in_flight_batches_are_continued_from_a_mid_run_snapshot() -> None:
    wf = runtime.load_workflow(EXAMPLES / "release20.json")
    table = runtime.ProfileTable.from_workflow(wf)
    snaps: list[runtime.Snapshot] = []

    class Spy(RetryPlanner):
        def decide(self, snapshot: runtime.Snapshot) -> runtime.Decision:
            snaps.append(snapshot)
            return super().decide(snapshot)

    runtime.run(wf, 2.0, 1200, planner=Spy(table, table.model_index("mid"), 2), seed=4)
    mid = next(s for s in snaps if s.in_flight and s.completed)
    ok, spent, end = simulate_snapshot(mid, {}, table.model_index("mid"), 2, 500, 2)
    assert 0.0 < ok.mean() <= 1.0
    assert spent.max() <= mid.budget_left_pusd + sum(
        int(table.worst_cost[b.subtask, b.model]) * b.open_samples for b in mid.in_flight
    )
    assert end.max() <= mid.time_left


@pytest.mark.parametrize("rounds", [False, True])
def test_playing_a_policy_step_by_step_matches_simulating_it_whole(rounds: bool) -> None:
    """``step`` hands a run from one decision to the next (samples in flight redrawn given their age); the
    Retry policy played that way finishes as often and spends as much as simulated in one go. In rounds a
    step ends only once nothing is in flight."""
    from planners.kernels import snapshot_arrays, step, table_arrays

    table = runtime.ProfileTable.from_workflow(runtime.load_workflow(EXAMPLES / "diamond.json"))
    snap0 = start_snapshot(table, 0.03, 40.0, rounds=rounds)
    tab, j, k, runs = table_arrays(table), table.model_index("small"), 3, 3000
    ok_whole, spent_whole, _ = simulate_snapshot(snap0, {}, j, k, runs, 5)
    wins, spent = 0, []
    for r in range(runs):
        snap, status, total, stream = snapshot_arrays(snap0), 0, 0, 0
        while status == 0:
            completed, fl_sub, fl_done, left = snap[0], snap[1], snap[5], snap[7]
            busy = {int(i) for i, d in zip(fl_sub, fl_done, strict=True) if not d}
            ready = [
                i
                for i in range(table.n_subtasks)
                if not completed[i] and i not in busy and all(completed[d] for d in table.deps(i))
            ]
            widths = []
            for i in ready:  # the Retry rule: k samples, fewer if the budget left cannot cover them
                w = int(table.worst_cost[i, j])
                widths.append(max(0, min(k, left // w)))
                left -= widths[-1] * w
            subs = np.array(ready, np.int64)
            snap, cost, _, status = step(tab, snap, subs, np.full(len(ready), j, np.int64), np.array(widths, np.int64),
                                         1000 + r, stream)  # fmt: skip
            total, stream = total + cost, stream + 1
            assert bool(snap[11]) is rounds
            if rounds and status == 0:
                assert snap[1].shape[0] == 0, "a decision in rounds with a batch still in flight"
        wins += status == 1
        spent.append(total)
    p_step, p_whole = wins / runs, ok_whole.mean()
    assert abs(p_step - p_whole) < 4 * math.sqrt(2 * p_whole * (1 - p_whole) / runs) + 1e-3, (p_step, p_whole)
    assert np.mean(spent) == pytest.approx(spent_whole.mean(), rel=0.03)
