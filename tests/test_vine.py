"""The repair-loop planners (issue 18, items 2 and 3): ``vine`` (VineLM re-rooting), ``murakkab``, ``vine-dp`` (the
exact closed loop), run through the real executor; and ``ontime bench vine``'s interface for scripts."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import runtime
from planners import make_planner
from planners.trie_search import best_suffix
from planners.vine import VineDPPlanner, loop_trie
from runtime import BatchLaunched, LaunchRejected
from runtime.cli import app
from runtime.types import PlannerContext, PlannerSpecError
from tests.conftest import build, model
from tests.helpers import of


def loop(horizon: int = 4, spread: float = 1.5, history: dict[str, Any] | None = None) -> dict[str, Any]:
    """One repair loop on three models of very different price and skill."""
    profiles = {
        "small": {"p": 0.45, "repair_p": 0.2, "output_tokens": {"mean": 220, "std": 60}},
        "mid": {"p": 0.65, "repair_p": 0.3, "output_tokens": {"mean": 240, "std": 60}},
        "large": {"p": 0.8, "repair_p": 0.45, "output_tokens": {"mean": 260, "std": 60}},
    }
    if history is not None:
        for p in profiles.values():
            p.pop("repair_p")
    return {
        "name": "loop",
        "models": {
            "small": model(inp=0.15, out=0.6, max_tokens=512),
            "mid": model(inp=1.0, out=4.0, max_tokens=512),
            "large": model(inp=3.0, out=15.0, max_tokens=512),
        },
        "subtasks": [
            {
                "id": "fix",
                "deps": [],
                "input_tokens": 2500,
                "loop": {"horizon": horizon},
                "profiles": profiles,
                **(history if history is not None else {"difficulty": {"spread": spread}}),
            }
        ],
    }


def successes(spec: dict[str, Any], planner: str, budget: float, runs: int) -> np.ndarray:
    """Runs 0 .. runs - 1 through the executor; the loop planners keep no state, so one instance serves them all
    (a vine-dp built per run would solve its program per run)."""
    wf = build(spec)
    table = runtime.ProfileTable.from_workflow(wf)
    one = make_planner(planner, PlannerContext(table, runtime.types.to_pusd(budget), 600.0, 0))
    return np.array([runtime.run(wf, budget, 600.0, planner=one, seed=s).success for s in range(runs)])


def test_the_trie_holds_the_exact_conditional_rates_of_the_history_model() -> None:
    table = runtime.ProfileTable.from_workflow(build(loop()))
    trie = loop_trie(table)
    small, large = table.model_index("small"), table.model_index("large")
    w = table.cls_w
    f_small, r_large = table.cls_p[:, small, 0], table.cls_p[:, large, 1]
    v = trie.node((small, large))
    # large repairs after small failed: the posterior after small's failure, times large's repair rate (times the
    # chance its answer is not cut off at max_tokens)
    kept = table.p[0, large] / table.p_draw[0, large]
    expected = (w * (1 - f_small) * r_large).sum() / (w * (1 - f_small)).sum() * kept
    assert trie.q[v] == pytest.approx(float(expected))
    assert trie.A[trie.node((large,))] == pytest.approx(0.8 * kept, abs=1e-6)


@pytest.mark.parametrize("budget", [0.004, 0.012, 0.05])
def test_the_closed_loop_is_at_least_vine_and_vine_at_least_murakkab(budget: float) -> None:
    runs = 300
    murakkab, vine, exact = (successes(loop(), p, budget, runs) for p in ("murakkab", "vine", "vine-dp"))
    for better, worse in ((vine, murakkab), (exact, vine)):
        d = better.astype(float) - worse
        assert d.mean() >= -2.5 * d.std() / math.sqrt(runs) - 1e-9, (budget, d.mean())


def test_vine_never_asks_for_a_launch_the_budget_cannot_reserve() -> None:
    events: list[runtime.Event] = []
    for s in range(60):
        runtime.run(build(loop()), 0.012, 600.0, planner="vine", seed=s, on_event=events.append)
    assert not of(events, LaunchRejected)
    assert {e.k for e in of(events, BatchLaunched)} == {1}


def test_murakkab_follows_one_plan_whatever_happens() -> None:
    events: list[runtime.Event] = []
    for s in range(40):
        runtime.run(build(loop()), 0.05, 600.0, planner="murakkab", seed=s, on_event=events.append)
    launched = of(events, BatchLaunched)
    firsts = {e.model for e in launched if e.batch == 1}
    repairs = {e.model for e in launched if e.batch > 1}
    assert len(firsts) == 1 and len(repairs) <= 1


def test_the_dp_value_is_what_its_runs_achieve() -> None:
    spec, budget = loop(), 0.012
    table = runtime.ProfileTable.from_workflow(build(spec))
    value = VineDPPlanner(table, runtime.types.to_pusd(budget), 600.0, bins=128).policy.optimum
    ok = successes(spec, "vine-dp:bins=128", budget, 600)
    assert abs(ok.mean() - value) < 4 * math.sqrt(value * (1 - value) / 600) + 0.01, (ok.mean(), value)


def test_vine_minimizes_cost_subject_to_an_accuracy_floor() -> None:
    table = runtime.ProfileTable.from_workflow(build(loop()))
    trie = loop_trie(table)
    s = best_suffix(trie, 0, objective=1, alpha=0.9)
    assert s.met and s.accuracy >= 0.9
    cheaper = [u for u in range(1, trie.n_nodes) if trie.A[u] >= 0.9 and trie.C[u] < s.cost - 1e-6]
    assert not cheaper
    wf = build(loop())
    r = runtime.run(wf, 1.0, 600.0, planner="vine:cost:alpha=0.9", seed=0)
    assert r.cost <= 1.0


@pytest.mark.parametrize(
    ("spec", "planner", "match"),
    [
        ({"horizon": None}, "vine", "not a loop"),
        ({}, "vine:alpha=0.5", "alpha goes with the cost objective"),
        ({}, "vine:cost", "needs alpha"),
        ({}, "vine:load=1,2", "load needs 3 delays"),
        ({}, "vine:fast=1", "unknown option"),
        ({}, "murakkab:single=2", "single must be 0 or 1"),
        ({}, "vine-dp:bins=1", "bins must be"),
        ({"two": True}, "vine", "one loop subtask"),
        ({}, "exact", "for a repair loop use vine-dp"),
    ],
)
def test_bad_loop_planner_specs_are_typed_errors(spec: dict[str, Any], planner: str, match: str) -> None:
    s = loop()
    if spec.get("horizon", 1) is None:
        del s["subtasks"][0]["loop"]
    if spec.get("two"):
        s["subtasks"].append({**s["subtasks"][0], "id": "again", "deps": ["fix"]})
    with pytest.raises(PlannerSpecError, match=match):
        runtime.run(build(s), 0.1, 60.0, planner=planner)


def test_bench_vine_prints_json_rows_for_scripts() -> None:
    result = CliRunner().invoke(app, ["bench", "vine", "--runs", "12", "--budgets", "0.001,0.01", "--workers", "1",
                                      "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert {(r["planner"], r["budget"]) for r in rows} == {
        (p, b) for p in ("murakkab", "vinelm", "vine", "vine-sparse", "exact", "mcp") for b in (0.001, 0.01)
    }
    for r in rows:
        assert set(r) == {"workload", "planner", "budget", "accuracy", "ci95", "mean_cost", "runs"}
        assert r["runs"] == 12 and r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
        assert r["mean_cost"] <= r["budget"]


def test_bench_vine_refuses_a_data_folder_without_the_data(tmp_path: Any) -> None:
    result = CliRunner().invoke(app, ["bench", "vine", "--data-dir", str(tmp_path), "--runs", "2"])
    assert result.exit_code == 2 and "no reflection" in result.output


def test_a_failure_on_a_model_the_planner_no_longer_has_is_passed_over() -> None:
    """A model whose endpoint went out of reach is planned without (the executor rebuilds the planner on a table
    that leaves it out), but the run's history still holds its failed batch: vine must not choke on it."""
    table = runtime.ProfileTable.from_workflow(build(loop()))
    small, large = table.model_index("small"), table.model_index("large")
    without = np.zeros((1, table.n_models), np.bool_)
    without[0, small] = True
    planner = make_planner("vine", PlannerContext(table.without(without), runtime.types.to_pusd(1.0), 600.0, 0))
    snap = runtime.Snapshot.at_start(table.without(without), runtime.types.to_pusd(1.0), 600.0)
    failed = (runtime.FailedBatch(0, small, 1, 0.0, 1.0), runtime.FailedBatch(0, large, 1, 1.0, 2.0))
    decision = planner.decide(dataclasses.replace(snap, failed=failed))
    assert decision.launches and decision.launches[0].model != small
