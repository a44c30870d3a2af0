"""The budget x deadline map: predict at every cell, its numbers against eval's, its JSON rows and PNG."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import runtime
from runtime.cli import app
from tests.conftest import EXAMPLES

if TYPE_CHECKING:
    from pathlib import Path

DIAMOND = EXAMPLES / "diamond.json"


def test_the_map_matches_eval_within_intervals_on_two_cells() -> None:
    """Two cells apart in budget: each cell's chance agrees with the success rate eval measures through the
    executor, within the Monte Carlo error of both."""
    wf = runtime.load_workflow(DIAMOND)
    grid = runtime.predict_map(wf, [0.03, 0.015], [40], planner="mcp:n=16", runs=600)
    assert grid.budgets == (0.015, 0.03) and grid.deadlines == (40.0,)
    for budget in grid.budgets:
        cell = grid.cell(budget, 40)
        real = runtime.evaluate(wf, budget, 40, planner="mcp:n=16", runs=300)
        p, r = cell.p_success, real.p_success
        sd = math.sqrt(max(p * (1 - p), 0.01) / cell.runs + max(r * (1 - r), 0.01) / real.runs)
        assert abs(p - r) <= 4 * sd, (budget, p, r)
        assert cell.expected_cost == pytest.approx(real.mean_cost, rel=0.15)
    low, high = (grid.cell(b, 40).p_success for b in grid.budgets)
    assert high > low + 0.1  # twice the money is visibly more likely to finish here (0.40 vs 0.86)


def test_a_cell_is_the_prediction_predict_gives_alone() -> None:
    wf = runtime.load_workflow(DIAMOND)
    grid = runtime.predict_map(wf, [0.02], [30, 60], planner="mcp:n=8", runs=100, seed=3)
    alone = runtime.predict(wf, 0.02, 60, planner="mcp:n=8", runs=100, seed=3)
    cell = grid.cell(0.02, 60)
    assert (cell.p_success, cell.ci95, cell.expected_cost) == (alone.p_success, alone.ci95, alone.expected_cost)
    with pytest.raises(runtime.UsageError, match="no cell"):
        grid.cell(0.03, 60)


def test_json_rows_and_the_png_from_the_command_line(tmp_path: Path) -> None:
    png = tmp_path / "map.png"
    args = ["predict", str(DIAMOND), "--budgets", "0.04,0.01", "--deadlines", "30,60", "-p", "mcp:n=8", "-n", "100"]
    result = CliRunner().invoke(app, [*args, "--json", "--png", str(png)])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)  # stdout holds the JSON alone
    assert [(r["budget"], r["deadline"]) for r in rows] == [(0.01, 30), (0.01, 60), (0.04, 30), (0.04, 60)]
    for r in rows:
        assert set(r) == {"budget", "deadline", "p_success", "ci95", "expected_cost"}
        assert r["ci95"][0] <= r["p_success"] <= r["ci95"][1] and 0 < r["expected_cost"] <= r["budget"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "wrote" in result.stderr
    table = CliRunner().invoke(app, [*args[:4], "-d", "60", "-p", "mcp:n=8", "-n", "100"])
    assert table.exit_code == 0 and "$0.04" in table.stdout and "60 s" in table.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budgets", "0.01,abc", "-d", "60"], "numbers separated by commas"),
        (["--budgets", "", "-d", "60"], "numbers separated by commas"),
        (["--budgets", "0.01", "-b", "1", "-d", "60"], "not both"),
        (["--budgets", "0.01,-2", "-d", "60"], "budget must be positive"),
        (["--budgets", "0.01", "--deadlines", "60,nan"], "deadline must be positive"),
        (["--budgets", "0.01"], "--deadline or --deadlines"),
        (["-b", "1"], "needs --budget and --deadline"),
        (["--budgets", "0.01", "-d", "60", "--png", "/nonexistent-dir/x.png"], "cannot write the map"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(extra: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["predict", str(DIAMOND), "-n", "20", "-p", "mcp:n=4", *extra])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


numbers = st.one_of(st.floats(allow_nan=True), st.integers(-(10**30), 10**30), st.booleans(), st.text(max_size=3))


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.lists(numbers, max_size=4), numbers), st.one_of(st.lists(numbers, max_size=4), numbers))
def test_any_levels_give_a_map_or_a_usage_error_before_any_simulation(budgets: object, deadlines: object) -> None:
    wf = runtime.load_workflow(DIAMOND)
    done: list[int] = []
    try:
        grid = runtime.predict_map(wf, budgets, deadlines, planner="retry:small:1", runs=5, progress=done.append)  # type: ignore[arg-type]
    except runtime.UsageError:
        assert not done  # refused before any run
        return
    assert len(grid.cells) == len(grid.budgets) * len(grid.deadlines) and sum(done) == 5 * len(grid.cells)
    assert list(grid.budgets) == sorted(set(grid.budgets)) and all(b > 0 for b in grid.budgets)


def test_a_map_past_its_cell_cap_is_refused() -> None:
    wf = runtime.load_workflow(DIAMOND)
    with pytest.raises(runtime.UsageError, match="at most"):
        runtime.predict_map(wf, [0.01 * i for i in range(1, 30)], range(1, 30), runs=5)
    with pytest.raises(runtime.UsageError, match="at most"):
        runtime.predict_map(wf, iter(lambda: 1.0, None), [60], runs=5)  # no end
