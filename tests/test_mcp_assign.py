"""MCP's assigned family (planners/mcp_assign.py): a model per subtask, searched by simulation at the first
decision; deterministic, never worse than where it starts, the same in a run and in its prediction, searched
once per process, and what closes MCP's worst gap on the family's fresh draw."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import runtime
from benchmarks.mcp_quality import family
from planners import mcp_assign
from planners.kernels import snapshot_arrays
from planners.mcp import MCPPlanner
from planners.mcp_kernel import simulate_policy


def _cell(seed: int, budget: str, deadline: str) -> tuple[runtime.ProfileTable, runtime.Snapshot]:
    """A cell of the generated family, and its start."""
    cell = next(c for c in family(1, first_seed=seed) if (c.budget_level, c.deadline_level) == (budget, deadline))
    table = runtime.ProfileTable.from_workflow(runtime.parse_workflow(cell.spec))
    return table, runtime.Snapshot.at_start(table, runtime.types.to_pusd(cell.budget), cell.deadline)


def _assigned(planner: MCPPlanner) -> list[tuple[int, list[int]]]:
    return [(p.k, p.models[:, 0].tolist()) for p in planner.portfolio if p.name == "assigned"]


@pytest.fixture(autouse=True)
def _no_memo() -> None:
    mcp_assign._memo.clear()


def test_the_search_is_deterministic_and_starts_from_the_value_assignment() -> None:
    table, start = _cell(30, "medium", "medium")
    a, b = MCPPlanner(table, seed=4), MCPPlanner(table, seed=9)
    value = a._value.tolist()
    assert _assigned(a) == [(k, value) for k in (1, 4, 16, 64, -1)]  # until the first decision
    a.decide(start)
    mcp_assign._memo.clear()
    b.decide(start)
    assert _assigned(a) == _assigned(b) != [(k, value) for k in (1, 4, 16, 64, -1)]
    assert np.array_equal(a._port_models, b._port_models)


def test_an_assignment_is_never_worse_than_the_value_assignment_on_the_searched_simulations() -> None:
    table, start = _cell(38, "loose", "tight")
    planner = MCPPlanner(table, seed=0)
    planner.decide(start)
    snap = snapshot_arrays(start, table)
    stream = mcp_assign.STREAM
    sims = max(64, min(256, mcp_assign.SIMS_PER_PASS // (table.n_subtasks * table.n_models)))
    for k, models in _assigned(planner):
        found = simulate_policy(planner._tab, snap, np.array(models), planner._fallback, k, sims, stream)[0].sum()
        value = simulate_policy(planner._tab, snap, planner._value, planner._fallback, k, sims, stream)[0].sum()
        assert found >= value


def test_a_prediction_holds_the_assignment_its_run_holds() -> None:
    table, start = _cell(34, "medium", "tight")
    run, predicted = MCPPlanner(table, seed=2), MCPPlanner(table, seed=2)
    run.decide(start)
    mcp_assign._memo.clear()
    predicted.closed_loop(start, 5, 0, 1)
    assert _assigned(run) == _assigned(predicted)


def test_the_search_runs_once_per_state_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    table, start = _cell(30, "medium", "medium")
    calls: list[int] = []
    real = simulate_policy

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(mcp_assign, "simulate_policy", counted)
    first = MCPPlanner(table, seed=0)
    first.decide(start)
    searched = len(calls)
    assert searched > 0
    second = MCPPlanner(table, seed=0)
    second.decide(start)
    second.decide(start)  # and once per planner
    third = MCPPlanner(table, seed=7)  # another run's planner: the search does not depend on the seed
    third.decide(start)
    assert len(calls) == searched and _assigned(first) == _assigned(second) == _assigned(third)
    MCPPlanner(table, seed=0, widths=(1, 2)).decide(start)  # other settings search again
    assert len(calls) > searched


def test_mixed_off_has_no_assigned_family() -> None:
    table, start = _cell(30, "medium", "medium")
    planner = MCPPlanner(table, mixed=False)
    planner.decide(start)
    assert _assigned(planner) == []


def test_the_family_closes_mcps_worst_gap_on_the_fresh_draw() -> None:
    """Seed 30 at medium limits: the exact optimum is 0.819; MCP without the family made 0.615 (400 runs), the
    best single-model Retry 0.612; the assignment m0, m1, m0, m1 alone makes 0.81 in simulation."""
    table, start = _cell(30, "medium", "medium")
    ok = MCPPlanner(table, seed=0).closed_loop(start, 11, 0, 400)[0]
    assert ok.mean() >= 0.75  # 0.808 measured; 3 standard errors below is 0.75
