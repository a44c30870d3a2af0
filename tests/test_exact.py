"""The exact solver: its dynamic program agrees with the executor, it bounds every policy it covers, and
MCP comes within a few points of it on small instances."""

from __future__ import annotations

import math

import pytest

import runtime
from benchmarks.mcp_quality import exact_value
from planners import make_planner
from planners.exact import ExactPlanner
from runtime import PlannerContext, evaluate
from tests.conftest import EXAMPLES, build, chain_spec, mixed_diamond


def test_closed_form_chain() -> None:
    # One model, p = 0.5, 1.5 s per attempt, 10 s: the optimum samples as widely as the budget allows.
    wf = build(chain_spec(2, p=0.5, tokens=100, inp=100))
    assert exact_value(wf, 1.0, 2.9) == 0.0  # two sequential attempts need 3 s
    v = exact_value(wf, 1.0, 3.0)  # one batch per subtask; a 64-wide batch almost surely succeeds
    assert v == pytest.approx((1 - 0.5**64) ** 2)


@pytest.mark.parametrize(("budget", "deadline"), [(0.03, 30.0), (0.02, 45.0)])
def test_dynamic_program_matches_the_executor(budget: float, deadline: float) -> None:
    wf = mixed_diamond()
    v = exact_value(wf, budget, deadline)
    runs = 1500
    report = evaluate(wf, budget, deadline, planner="exact", runs=runs, seed=0)
    se = math.sqrt(v * (1 - v) / runs) + 1e-3
    assert abs(report.p_success - v) < 4 * se, (report.p_success, v)


@pytest.mark.parametrize(("budget", "deadline"), [(0.03, 30.0), (0.03, 45.0), (0.02, 45.0), (0.05, 30.0)])
def test_mcp_is_within_three_points_of_the_optimum_and_beats_the_best_baseline(budget: float, deadline: float) -> None:
    """Closed-loop runs in the kernel (predict's, checked against the executor in test_predict.py): enough of
    them to hold MCP to 3 points, up to two standard errors."""
    wf = mixed_diamond()
    v = exact_value(wf, budget, deadline)
    runs = 1500
    mcp = runtime.predict(wf, budget, deadline, runs=runs).p_success
    retry = runtime.predict(wf, budget, deadline, planner="best-retry", runs=runs).p_success
    se = math.sqrt(v * (1 - v) / runs)
    assert mcp >= v - 0.03 - 2 * se, (mcp, v)
    assert mcp > retry + 0.2  # mixing models is worth a lot here
    assert retry <= v + 3 * se


def test_exact_refuses_what_it_cannot_solve() -> None:
    table = runtime.ProfileTable.from_workflow(runtime.load_workflow(EXAMPLES / "diamond.json"))
    with pytest.raises(runtime.PlannerSpecError, match="fixed output tokens"):
        make_planner("exact", PlannerContext(table, runtime.PUSD_PER_USD, 60.0, 0))
    big = runtime.ProfileTable.from_workflow(build(chain_spec(8)))
    with pytest.raises(runtime.PlannerSpecError, match="at most"):
        make_planner("exact", PlannerContext(big, runtime.PUSD_PER_USD, 60.0, 0))
    with pytest.raises(runtime.PlannerSpecError):
        make_planner("exact:k=0", PlannerContext(runtime.ProfileTable.from_workflow(mixed_diamond()), 1, 1.0, 0))


def test_an_actions_value_is_the_optimum_for_the_best_and_at_most_it_for_any() -> None:
    """``action_value`` (Q*) of the best action is the optimum; of any other in the action space it is no more
    (a width outside K may do better: two samples of model 0 here); an action the money left cannot cover is a
    typed error."""
    table = runtime.ProfileTable.from_workflow(mixed_diamond())
    budget = runtime.types.to_pusd(0.03)
    planner = make_planner("exact", PlannerContext(table, budget, 45.0, 0))
    assert isinstance(planner, ExactPlanner)
    start = runtime.Snapshot.at_start(table, budget, 45.0)
    v = planner.optimum(budget)
    assert planner.state_value(start) == pytest.approx(v)
    assert planner.action_value(start, planner.decide(start).launches) == pytest.approx(v)
    for j in range(table.n_models):
        for k in (1, 4, 16):
            if k * int(table.worst_cost[0, j]) <= budget:
                assert planner.action_value(start, {0: runtime.Launch(j, k)}) <= v + 1e-12
    with pytest.raises(runtime.UsageError, match="more than"):
        planner.action_value(start, {0: runtime.Launch(0, 10**6)})
