"""``ontime eval`` against a closed form: a 2-subtask chain, p = 0.5, fixed output tokens, one model,
planner retry:m:1. Attempts are sequential, so the run succeeds iff two of the first N attempts succeed,
where N is the number of attempts that fit in both the deadline and the budget."""

from __future__ import annotations

import math

import pytest

from runtime import evaluate
from tests.conftest import build, chain_spec

P = 0.5
LATENCY = 0.5 + 100 / 100  # ttft + tokens / tokens_per_s
COST = 100 * 1.0e-6 + 100 * 2.0e-6  # input tokens x input price + output tokens x output price
WORST = 100 * 1.0e-6 + 2000 * 2.0e-6  # the reservation: output at max_output_tokens


def attempts_that_fit(budget: float, deadline: float) -> int:
    by_time = math.floor(deadline / LATENCY)  # an attempt starts only if it can end by the deadline
    by_money = math.floor((budget - WORST) / COST + 1e-9) + 1  # attempt n needs (n-1) x COST + WORST
    return min(by_time, by_money)


def p_two_successes(n: int, p: float = P) -> float:
    return 1 - (1 - p) ** n - n * p * (1 - p) ** (n - 1)


@pytest.mark.parametrize(
    ("budget", "deadline", "binding"),
    [(WORST + 4 * COST, 100.0, "budget"), (1.0, 10.0, "deadline"), (WORST + 2 * COST, 4.5, "both")],
)
def test_eval_matches_closed_form(budget: float, deadline: float, binding: str) -> None:
    n = attempts_that_fit(budget, deadline)
    assert n >= 2
    expected = p_two_successes(n)
    wf = build(chain_spec(2, p=P, tokens=100, inp=100))  # prices 1 and 2 $/Mtok, 100 tok/s, ttft 0.5 s
    report = evaluate(wf, budget, deadline, planner="retry:m:1", runs=4000, seed=0)
    lo, hi = report.ci95
    assert lo <= expected <= hi, (binding, n, expected, report.p_success)
    assert report.overspend_runs == 0 and report.late_runs == 0
    assert report.max_cost <= budget
    assert set(report.failure_reasons) <= {"budget", "deadline"}
