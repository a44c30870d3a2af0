"""Repair loops and history-dependent attempts (issue 18, item 1): the spec forms, the simulated backend's draws,
and the kernels' parity with the executor on them."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime
from planners.kernels import hidden, simulate_snapshot, snapshot_arrays, step, table_arrays
from runtime import BatchFailed, BatchLaunched, SubtaskCompleted
from runtime.types import Adapter, Batch, CascadeTable, Finish, LatentClasses, Report, SampleEnd, SpecError
from tests.conftest import EXAMPLES, build, model
from tests.helpers import of

LOOP = EXAMPLES / "repair_loop.json"


def loop_spec(history: dict[str, Any], horizon: int | None = 6, **profiles: dict[str, Any]) -> dict[str, Any]:
    """One loop subtask on two models, with the given history form."""
    profiles = profiles or {
        "weak": {"p": 0.5, "output_tokens": {"fixed": 100}},
        "strong": {"p": 0.8, "output_tokens": {"fixed": 100}},
    }
    subtask: dict[str, Any] = {"id": "fix", "deps": [], "input_tokens": 100, "profiles": profiles, **history}
    if horizon is not None:
        subtask["loop"] = {"horizon": horizon}
    return {"name": "loop", "models": {"weak": model(out=1.0), "strong": model(out=10.0)}, "subtasks": [subtask]}


def rates_from_runs(spec: dict[str, Any], planner: str, runs: int) -> tuple[float, float, int]:
    """Over real executor runs of a one-subtask loop: P(first batch succeeds), P(second succeeds | first failed)
    and how many runs had a second batch."""
    first = second = seconds = 0
    wf = build(spec)
    for seed in range(runs):
        events: list[runtime.Event] = []
        runtime.run(wf, 10.0, 1e6, planner=planner, seed=seed, on_event=events.append)
        launched = of(events, BatchLaunched)
        done = {e.batch for e in of(events, SubtaskCompleted)}
        first += launched[0].batch in done
        if len(launched) > 1:
            seconds += 1
            second += launched[1].batch in done
    return first / runs, second / max(seconds, 1), seconds


def test_a_difficulty_model_reproduces_its_first_and_repair_rates_exactly() -> None:
    h = LatentClasses.difficulty({"a": 0.786, "b": 0.3}, spread=1.5, repair={"a": 0.199}, classes=24)
    w, f, r = (np.array(x) for x in (h.weights, h.first["a"], h.repair["a"]))
    assert h.marginal("a") == pytest.approx(0.786, abs=1e-9)
    assert (w * (1 - f) * r).sum() / (w * (1 - f)).sum() == pytest.approx(0.199, abs=1e-9)
    # failures are informative: b is less likely to succeed where a failed than on average
    fb = np.array(h.first["b"])
    assert (w * (1 - f) * fb).sum() / (w * (1 - f)).sum() < 0.3 - 0.1
    # no spread: every class alike, independent attempts
    flat = LatentClasses.difficulty({"a": 0.6}, spread=0.0)
    assert max(flat.first["a"]) - min(flat.first["a"]) < 1e-12


def test_the_simulated_backend_draws_repairs_at_their_conditional_rate() -> None:
    spec = loop_spec(
        {"difficulty": {"spread": 1.2, "repairs": "own"}},
        weak={"p": 0.5, "repair_p": 0.15, "output_tokens": {"fixed": 100}},
    )
    p1, p2, n2 = rates_from_runs(spec, "retry:weak:1", 1500)
    assert abs(p1 - 0.5) < 4 * math.sqrt(0.25 / 1500)
    assert abs(p2 - 0.15) < 4 * math.sqrt(0.15 * 0.85 / n2), (p2, n2)


def test_a_cascade_table_decides_each_attempt_by_the_failures_before_it() -> None:
    spec = loop_spec({"cascade": {"weak": 0.5, "weak>weak": 0.1, "weak>weak>weak": 0.9}})
    p1, p2, n2 = rates_from_runs(spec, "retry:weak:1", 1500)
    assert abs(p1 - 0.5) < 4 * math.sqrt(0.25 / 1500)
    assert abs(p2 - 0.1) < 4 * math.sqrt(0.09 / n2)
    t = runtime.ProfileTable.from_workflow(build(spec))
    weak = t.model_index("weak")
    # back-off: after three failures the table's deepest entry still applies (the oldest failure is forgotten)
    assert t.success_rate(0, weak, [weak] * 3) == pytest.approx(0.9)
    assert t.success_rate(0, weak, [weak] * 2) == pytest.approx(0.9)
    assert t.success_rate(0, t.model_index("strong"), [weak]) == pytest.approx(0.8)  # no entry: its profile's p


def test_a_replay_gives_each_run_one_recorded_question() -> None:
    first = {"weak": [1, 0, 0, 0], "strong": [1, 1, 0, 0]}
    repair = {"weak": [0, 1, 0, 0], "strong": [0, 0, 0, 1]}
    spec = loop_spec({"replay": {"first": first, "repair": repair}}, horizon=3)
    wf = build(spec)
    outcomes = {runtime.run(wf, 10.0, 1e6, planner="retry:weak:1", seed=s).success for s in range(40)}
    assert outcomes == {True, False}
    # weak, weak: solves questions 0 and 1 only (its repair of question 1 is right), whatever the seed
    t = runtime.ProfileTable.from_workflow(wf)
    assert t.success_rate(0, t.model_index("weak"), [t.model_index("weak")], cls=1) == 1.0
    assert t.success_rate(0, t.model_index("strong"), [t.model_index("weak")], cls=3) == 0.0  # fresh: first answer
    assert t.success_rate(0, t.model_index("strong"), [t.model_index("strong")], cls=3) == 1.0


def test_a_loop_that_fails_every_invocation_stops_as_exhausted() -> None:
    spec = loop_spec({}, horizon=3, weak={"p": 0.0, "output_tokens": {"fixed": 100}})
    events: list[runtime.Event] = []
    result = runtime.run(build(spec), 10.0, 1e6, planner="retry:weak:1", on_event=events.append)
    assert not result.success and result.reason == "exhausted"
    assert len(of(events, BatchLaunched)) == len(of(events, BatchFailed)) == 3


@pytest.mark.parametrize(
    ("planner", "model", "k", "budget", "deadline"),
    [
        ("retry:small:1", "small", 1, 0.2, 300.0),
        ("retry:large:1", "large", 1, 0.2, 300.0),
        ("retry:small:3", "small", 3, 0.2, 300.0),  # k samples of a batch share the hidden class
        ("retry:large:2", "large", 2, 0.05, 60.0),  # budget and deadline bind
    ],
)
def test_kernel_matches_the_executor_on_repair_loops(
    planner: str, model: str, k: int, budget: float, deadline: float
) -> None:
    wf = runtime.load_workflow(LOOP)
    table = runtime.ProfileTable.from_workflow(wf)
    start = runtime.Snapshot.at_start(table, runtime.types.to_pusd(budget), deadline)
    ok, spent, end = simulate_snapshot(start, {}, table.model_index(model), k, 6000, 3)
    runs = 500
    report = runtime.evaluate(wf, budget, deadline, planner=planner, runs=runs, seed=0)
    p_sim, p_run = ok.mean(), report.p_success
    se = math.sqrt(p_sim * (1 - p_sim) / 6000 + p_run * (1 - p_run) / runs) + 1e-3
    assert abs(p_sim - p_run) < 4 * se, (p_sim, p_run)
    assert spent.mean() / runtime.PUSD_PER_USD == pytest.approx(report.mean_cost, rel=0.08)
    assert end.mean() == pytest.approx(report.mean_elapsed, rel=0.08)
    assert spent.max() <= runtime.types.to_pusd(budget) and end.max() <= deadline


def test_mcp_predicted_in_the_kernel_matches_mcp_run_through_the_executor_on_loops() -> None:
    wf = runtime.load_workflow(LOOP)
    predicted = runtime.predict(wf, 0.05, 120.0, planner="mcp:n=16", runs=300, seed=1)
    measured = runtime.evaluate(wf, 0.05, 120.0, planner="mcp:n=16", runs=300, seed=2)
    p, q = predicted.p_success, measured.p_success
    assert abs(p - q) < 4 * math.sqrt(p * (1 - p) / 300 + q * (1 - q) / 300) + 0.01, (p, q)


def test_a_planner_on_loops_beats_every_single_model_retry() -> None:
    """History matters: on repair_loop, MCP mixes models (cheap first, strong on failure) where one model fails."""
    wf = runtime.load_workflow(LOOP)
    mcp = runtime.evaluate(wf, 0.05, 120.0, planner="mcp", runs=200, seed=0).p_success
    retry = [runtime.evaluate(wf, 0.05, 120.0, planner=f"retry:{m}:1", runs=200, seed=0).p_success
             for m in ("small", "large")]  # fmt: skip
    assert mcp >= max(retry) - 0.03, (mcp, retry)


def test_planners_never_see_the_hidden_class() -> None:
    wf = runtime.load_workflow(LOOP)
    table = runtime.ProfileTable.from_workflow(wf)
    snap = snapshot_arrays(runtime.Snapshot.at_start(table, runtime.types.to_pusd(1.0), 600.0))
    assert (snap[17] == -1).all()
    sql = table.subtask_ids.index("sql")
    # a step of a real run draws the run's class and keeps it; a planner's view of that state forgets it
    nxt, _, _, _ = step(table_arrays(table), snap, np.array([0]), np.array([0]), np.array([1]), 5, 0)
    after, _, _, _ = step(table_arrays(table), nxt, np.array([sql]), np.array([0]), np.array([1]), 5, 1)
    assert after[17][sql] >= 0
    assert (hidden(after)[17] == -1).all()
    # what the planner believes after the failures it saw is the posterior, never the class itself
    assert not np.isin(after[14], [0.0, 1.0]).all()


def test_the_belief_over_classes_follows_bayes_rule_after_a_failure() -> None:
    spec = loop_spec({"difficulty": {"spread": 2.0, "classes": 4}})
    table = runtime.ProfileTable.from_workflow(build(spec))
    weak = table.model_index("weak")
    snap = runtime.Snapshot.at_start(table, runtime.types.to_pusd(1.0), 600.0)
    failed = runtime.FailedBatch(0, weak, 2, 0.0, 1.0)
    post = snapshot_arrays(dataclasses.replace(snap, failed=(failed,)))[14]
    prior, rates = table.cls_w, table.cls_p[:, weak, 0]
    expected = prior * (1 - rates) ** 2
    assert post == pytest.approx(expected / expected.sum())


@pytest.mark.parametrize(
    ("history", "field"),
    [
        ({"difficulty": {"spread": -1}}, "difficulty.spread"),
        ({"difficulty": {"spread": 1, "repairs": "some"}}, "difficulty.repairs"),
        ({"difficulty": {"spread": 1, "classes": 0}}, "difficulty.classes"),
        ({"cascade": {"weak>nobody": 0.5}}, "cascade.weak>nobody"),
        ({"cascade": {"weak": 1.5}}, "cascade.weak"),
        ({"cascade": {"weak>>weak": 0.5}}, "cascade"),
        ({"replay": {"first": {"weak": [1, 0], "strong": [1]}}}, "replay"),
        ({"replay": {"first": {"weak": [2], "strong": [1]}}}, "replay.first.weak"),
        ({"cascade": {"weak": 0.5}, "replay": {"first": {"weak": [1]}}}, "replay"),
        ({"loop": {"horizon": 0}}, "loop.horizon"),
        ({"loop": {"horizon": 2, "tool": 1}}, "loop.tool"),
        ({"loop": {"horizon": 2, "tool": {"latency_s": -1}}}, "loop.tool.latency_s"),
        ({"loop": {"horizon": 2, "tool": {"cost_usd": "1"}}}, "loop.tool.cost_usd"),
        ({"loop": {"horizon": 2, "tools": {}}}, "loop"),
    ],
)
def test_bad_histories_are_typed_spec_errors(history: dict[str, Any], field: str) -> None:
    spec = loop_spec(history, horizon=None)
    with pytest.raises(SpecError) as err:
        runtime.parse_workflow(spec)
    assert err.value.field == field and err.value.subtask == "fix"


def test_repair_p_needs_a_difficulty_model() -> None:
    spec = loop_spec({}, weak={"p": 0.5, "repair_p": 0.2, "output_tokens": {"fixed": 10}})
    with pytest.raises(SpecError, match="repair_p goes with a difficulty model"):
        runtime.parse_workflow(spec)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["loop", "difficulty", "cascade", "replay"]),
                       st.recursive(st.none() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=3),
                                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                        max_size=3),
                                    max_leaves=6)))  # fmt: skip
def test_any_history_is_a_valid_loop_or_a_spec_error(history: dict[str, Any]) -> None:
    try:
        wf = runtime.parse_workflow(loop_spec(history, horizon=None))
    except SpecError:
        return
    result = runtime.run(wf, 0.01, 60.0, planner="retry:weak:1")  # what parses, runs
    assert result.cost_pusd <= runtime.types.to_pusd(0.01)


def test_hand_built_histories_are_checked_too() -> None:
    wf = build(loop_spec({}, horizon=None))
    bad = LatentClasses((0.5, 0.6), {"weak": (0.1, 0.2)}, {"weak": (0.1, 0.2)})
    s = dataclasses.replace(wf.subtasks[0], history=bad)
    with pytest.raises(SpecError, match="sum to 1"):
        runtime.validate_workflow(dataclasses.replace(wf, subtasks=(s,)))
    s = dataclasses.replace(wf.subtasks[0], history=CascadeTable({("ghost",): 0.5}))
    with pytest.raises(SpecError, match="without a profile"):
        runtime.validate_workflow(dataclasses.replace(wf, subtasks=(s,)))


def test_a_tool_stage_adds_its_latency_and_cost_to_every_attempt_that_ends() -> None:
    spec = loop_spec({}, horizon=3, weak={"p": 0.0, "output_tokens": {"fixed": 100}})
    spec["subtasks"][0]["loop"]["tool"] = {"latency_s": 2.0, "cost_usd": 0.001}
    wf = build(spec)
    table = runtime.ProfileTable.from_workflow(wf)
    weak = table.model_index("weak")
    plain = int(table.input_tokens[0] * table.in_price[weak] + 100 * table.out_price[weak])
    assert table.worst_cost[0, weak] == 100 * table.in_price[weak] + 2000 * table.out_price[weak] + 10**9
    result = runtime.run(wf, 10.0, 1e6, planner="retry:weak:1")
    assert result.reason == "exhausted"
    assert result.cost_pusd == 3 * (plain + 10**9)
    one = 0.5 + 100 / 100.0 + 2.0  # ttft + tokens / tokens_per_s + the tool stage
    assert result.elapsed == pytest.approx(3 * one)


@pytest.mark.parametrize(("k", "deadline"), [(1, 300.0), (3, 300.0), (2, 12.0)])
def test_kernel_matches_the_executor_on_loops_with_a_tool_stage(k: int, deadline: float) -> None:
    spec = loop_spec({"difficulty": {"spread": 1.0}}, horizon=4)
    spec["subtasks"][0]["loop"]["tool"] = {"latency_s": 1.5, "cost_usd": 0.0002}
    wf = build(spec)
    table = runtime.ProfileTable.from_workflow(wf)
    start = runtime.Snapshot.at_start(table, runtime.types.to_pusd(0.05), deadline)
    ok, spent, end = simulate_snapshot(start, {}, table.model_index("weak"), k, 6000, 3)
    report = runtime.evaluate(wf, 0.05, deadline, planner=f"retry:weak:{k}", runs=400, seed=0)
    p_sim, p_run = ok.mean(), report.p_success
    assert abs(p_sim - p_run) < 4 * math.sqrt(p_sim * (1 - p_sim) / 6000 + p_run * (1 - p_run) / 400) + 1e-3
    assert spent.mean() / runtime.PUSD_PER_USD == pytest.approx(report.mean_cost, rel=0.06)
    assert end.mean() == pytest.approx(report.mean_elapsed, rel=0.06)


class DownOnceThenWrong(Adapter):
    """The endpoint is down for the first batch (every sample an error), then answers, always wrongly."""

    simulated = True

    def __init__(self) -> None:
        self.histories: list[tuple[int, ...]] = []

    async def run(self, batch: Batch, report: Report) -> None:
        self.histories.append(batch.history)
        for idx in range(batch.k):
            if len(self.histories) == 1:
                down = runtime.ProviderUnavailableError("connection refused", provider="test")
                report(SampleEnd(index=idx, finish=Finish.ERROR, input_tokens=0, output_tokens=0, error=down))
            else:
                report(SampleEnd(index=idx, finish=Finish.COMPLETE, input_tokens=10, output_tokens=5, passed=False))


def test_a_batch_that_met_only_endpoint_errors_is_no_invocation_of_the_loop() -> None:
    """Its failure says nothing about the case and uses none of the loop's horizon; the next is a first attempt."""
    adapter = DownOnceThenWrong()
    events: list[runtime.Event] = []
    result = runtime.run(build(loop_spec({}, horizon=2)), 1.0, 600.0, planner="retry:weak:1",
                         adapters={"weak": adapter}, on_event=events.append)  # fmt: skip
    assert result.reason == "exhausted"
    assert adapter.histories == [(), (), (0,)]  # weak is model 0; the errored batch is not in the history
    assert len(of(events, BatchFailed)) == 3
