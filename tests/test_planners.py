"""Planner specs and the two baselines' rules."""

from __future__ import annotations

import pytest

import runtime
from planners import PLANNERS, make_planner
from planners.baselines import MAX_WIDTH, RetryPlanner, UniformPlanner
from runtime import PlannerContext
from tests.conftest import EXAMPLES, build, chain_spec, model


def ctx(wf: runtime.Workflow, budget_usd: float = 1.0) -> PlannerContext:
    return PlannerContext(runtime.ProfileTable.from_workflow(wf), int(budget_usd * runtime.PUSD_PER_USD), 600.0, 0)


def snapshot(
    table: runtime.ProfileTable, ready: tuple[int, ...], budget_left: int, launched: tuple[int, ...] | None = None
) -> runtime.Snapshot:
    return runtime.Snapshot(
        table=table,
        now=0.0,
        time_left=600.0,
        budget_pusd=budget_left,
        budget_left_pusd=budget_left,
        output_tokens_left=None,
        completed=frozenset(),
        ready=ready,
        in_flight=(),
        failed=(),
        samples_launched=launched or (0,) * table.n_subtasks,
    )


def test_specs_parse() -> None:
    wf = runtime.load_workflow(EXAMPLES / "release20.json")
    c = ctx(wf)
    assert make_planner("retry", c).name == "retry:mini:1"
    assert make_planner("retry:large:16", c).name == "retry:large:16"
    assert make_planner("uniform:mid", c).name == "uniform:mid"
    assert {"retry", "uniform", "mcp", "exact", "best-retry", "best-uniform"} <= set(PLANNERS)


@pytest.mark.parametrize(
    "spec",
    ["nope", "retry:huge", "retry:mini:0", "retry:mini:x", "retry:mini:1:2", "uniform:a:b", "base", "baselines", ""],
)
def test_bad_specs_raise_planner_spec_error(spec: str) -> None:
    with pytest.raises(runtime.PlannerSpecError):
        make_planner(spec, ctx(build(chain_spec(1))))


def test_an_unknown_planner_lists_every_planner() -> None:
    """Issue 15: the message named only the planners built into the package's __init__, not mcp or exact."""
    with pytest.raises(runtime.PlannerSpecError) as caught:
        make_planner("foo", ctx(build(chain_spec(1))))
    assert str(caught.value) == f"unknown planner 'foo' (known: {', '.join(sorted(PLANNERS))})"
    assert {"mcp", "exact", "retry", "uniform", "best-retry", "best-uniform"} <= set(PLANNERS)


def test_retry_shrinks_to_what_the_budget_covers() -> None:
    wf = build(chain_spec(1))
    table = runtime.ProfileTable.from_workflow(wf)
    worst = int(table.worst_cost[0, 0])
    p = RetryPlanner(table, 0, 8)
    assert p.decide(snapshot(table, (0,), 100 * worst)).launches[0].k == 8
    assert p.decide(snapshot(table, (0,), 3 * worst + 1)).launches[0].k == 3
    none = p.decide(snapshot(table, (0,), worst - 1))
    assert not none.launches and none.reason == "budget"


def test_uniform_splits_the_budget_into_a_fixed_number_of_rollouts() -> None:
    wf = build(chain_spec(2))
    table = runtime.ProfileTable.from_workflow(wf)
    budget = 1_000 * int(table.mean_cost[0, 0])
    p = UniformPlanner(table, 0, budget)
    assert p.rollouts == (500, 500)
    first = p.decide(snapshot(table, (0,), budget))
    assert first.launches[0].k == MAX_WIDTH
    later = p.decide(snapshot(table, (0,), budget, launched=(480, 0)))
    assert later.launches[0].k == 20
    spent = p.decide(snapshot(table, (0,), budget, launched=(500, 0)))
    assert not spent.launches and spent.reason == "budget"


def test_family_falls_back_to_the_cheapest_model_that_can_run_the_subtask() -> None:
    spec = chain_spec(1)
    spec["models"]["cheap"] = model(inp=0.1, out=0.1)
    spec["models"]["pricey"] = model(inp=9, out=9)
    spec["subtasks"][0]["profiles"] = {
        "cheap": {"p": 0.5, "output_tokens": {"fixed": 10}},
        "pricey": {"p": 0.5, "output_tokens": {"fixed": 10}},
    }
    table = runtime.ProfileTable.from_workflow(build(spec))
    d = RetryPlanner(table, table.model_index("m"), 1).decide(snapshot(table, (0,), 10**15))
    assert d.launches[0].model == table.model_index("cheap")


def test_uniform_and_retry_complete_the_examples_with_money_to_spare() -> None:
    for planner in ("retry:large:2", "uniform:large"):
        r = runtime.run(EXAMPLES / "release20.json", 20.0, 3600, planner=planner)
        assert r.success and r.cost < 20.0
