"""``benchmarks/mcp_explain.py``: the losses it charges each decision add up to the planner's gap."""

from __future__ import annotations

import math

import pytest

from benchmarks.mcp_explain import explain
from benchmarks.mcp_quality import family

CELL = family(1, 69)[7]  # a 4-subtask DAG, two models, loose budget and medium deadline: MCP lost 5 points here


def test_the_optimal_policy_loses_nothing_anywhere() -> None:
    optimum, rate, rows = explain(CELL, 300, "exact")
    assert rows and all(abs(r["loss_pts"]) < 1e-9 and r["action"] == r["optimal"] for r in rows)
    assert abs(rate - optimum) < 4 * math.sqrt(optimum * (1 - optimum) / 300)


@pytest.mark.parametrize("planner", ["retry:m0:1", "mcp:n=16"])
def test_the_losses_add_up_to_the_gap(planner: str) -> None:
    """Per run, the losses charged sum to V*(start) - 1{success} plus terms of mean zero, so their mean over
    the runs matches the gap measured on the same runs."""
    runs = 600
    optimum, rate, rows = explain(CELL, runs, planner)
    charged = sum(r["loss_pts"] for r in rows) / 100
    assert optimum - rate > 0.02  # a planner that loses: the test says where
    assert abs(charged - (optimum - rate)) < 4 * math.sqrt(optimum * (1 - optimum) / runs), (charged, optimum, rate)
