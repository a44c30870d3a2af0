"""predict (the MCP paper's B.6): closed-loop simulations of the planner, before anything is spent.

Calibration over the full grid, 2000 runs a side, is benchmarks/predict_calibration.py; here one cell at a
time, with a tolerance from the Monte Carlo error of both sides.
"""

from __future__ import annotations

import math

import pytest

import runtime
from runtime import evaluate
from tests.conftest import EXAMPLES, mixed_diamond


@pytest.mark.parametrize(
    ("spec", "budget", "deadline", "planner", "options"),
    [
        ("chain.json", 0.01, 30.0, "mcp:n=16", {}),
        ("diamond.json", 0.02, 40.0, "mcp:n=16", {}),
        ("diamond.json", 0.03, 40.0, "mcp:n=16", {"cancel_siblings": False}),
        ("diamond.json", 0.03, 40.0, "mcp:n=16", {"rounds": True}),
        ("chain.json", 0.2, 120.0, "mcp:n=16", {"output_token_cap": 10000}),
        ("chain.json", 0.2, 120.0, "retry:large:2", {}),
        ("diamond.json", 0.02, 90.0, "uniform:small", {}),
    ],
)
def test_prediction_agrees_with_the_success_rate_eval_measures(
    spec: str, budget: float, deadline: float, planner: str, options: runtime.PlanOptions
) -> None:
    """predict plays these planners in kernels; eval runs them through the executor."""
    wf = runtime.load_workflow(EXAMPLES / spec)
    plan: runtime.PlanOptions = {**options, "planner": planner}
    pred = runtime.predict(wf, budget, deadline, runs=1000, **plan)
    assert pred.method == "kernel"
    runs = 400
    real = evaluate(wf, budget, deadline, runs=runs, **plan)
    p, r = pred.p_success, real.p_success
    sd = math.sqrt(max(p * (1 - p), 0.01) / pred.runs + max(r * (1 - r), 0.01) / runs)
    assert abs(p - r) <= 4 * sd, (p, r)
    assert pred.expected_cost == pytest.approx(real.mean_cost, rel=0.1)
    assert pred.expected_elapsed == pytest.approx(real.mean_elapsed, rel=0.1)
    assert pred.ci95[0] <= p <= pred.ci95[1] and pred.runs == 1000


def test_the_answer_does_not_depend_on_the_threads() -> None:
    wf = runtime.load_workflow(EXAMPLES / "diamond.json")
    one = runtime.predict(wf, 0.02, 40, planner="mcp:n=8", runs=300, workers=1)
    two = runtime.predict(wf, 0.02, 40, planner="mcp:n=8", runs=300, workers=2, precision=0.2)
    three = runtime.predict(wf, 0.02, 40, planner="mcp:n=8", runs=300, workers=3, precision=0.2)
    assert one.p_success != 0 and (two.runs, two.p_success) == (three.runs, three.p_success) == (100, two.p_success)
    assert two.expected_cost == three.expected_cost


@pytest.mark.parametrize(("planner", "options"), [("exact", {}), ("mcp:n=8", {"charge_planner_time": True})])
def test_planners_without_a_kernel_form_are_played_through_the_executor(
    planner: str, options: runtime.PlanOptions
) -> None:
    wf = mixed_diamond()  # fixed output tokens, so the exact solver applies
    plan: runtime.PlanOptions = {**options, "planner": planner}
    pred = runtime.predict(wf, 0.03, 30, runs=100, **plan)
    assert pred.method == "executor" and pred.runs == 100 and 0 < pred.p_success < 1


def test_prediction_is_a_function_of_the_seed_and_uses_seeds_eval_does_not() -> None:
    wf = runtime.load_workflow(EXAMPLES / "diamond.json")
    a = runtime.predict(wf, 0.02, 40, planner="mcp:n=8", runs=100, seed=1)
    b = runtime.predict(wf, 0.02, 40, planner="mcp:n=8", runs=100, seed=1)
    assert (a.p_success, a.expected_cost, a.expected_elapsed) == (b.p_success, b.expected_cost, b.expected_elapsed)
    real = evaluate(wf, 0.02, 40, planner="mcp:n=8", runs=100, seed=1)
    assert (a.expected_cost, a.expected_elapsed) != (real.mean_cost, real.mean_elapsed)


def test_precision_stops_at_a_checkpoint_once_the_interval_is_narrow_enough() -> None:
    wf = runtime.load_workflow(EXAMPLES / "chain.json")
    # The chance is near 1 here, so 100 runs already give a half-width under 0.05.
    pred = runtime.predict(wf, 1.0, 600, planner="retry:large:2", runs=1000, precision=0.05)
    assert pred.runs == 100
    assert (pred.ci95[1] - pred.ci95[0]) / 2 <= 0.05
    full = runtime.predict(wf, 1.0, 600, planner="retry:large:2", runs=300)
    assert full.runs == 300


@pytest.mark.parametrize(
    "kwargs",
    [{"runs": 0}, {"runs": 2.5}, {"precision": 0.0}, {"precision": 1.0}, {"planner": "mcp:k="}, {"workers": 0}],
)
def test_bad_arguments_raise_usage_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(runtime.UsageError):
        runtime.predict(EXAMPLES / "chain.json", 0.02, 40, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("what", [runtime.evaluate, runtime.predict])
def test_seeds_out_of_range_are_refused_before_any_run(what: object) -> None:
    """The last of ``runs`` seeds must be a valid seed too: evaluate refused it only when that run came up."""
    with pytest.raises(runtime.UsageError, match="for 3 runs"):
        what(EXAMPLES / "chain.json", 0.02, 40, runs=3, seed=2**62 - 2, workers=1)  # type: ignore[operator]
