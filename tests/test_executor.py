"""The executor follows the execution model of DESIGN.md, one rule per test."""

from __future__ import annotations

import time
from typing import Any

import anyio
import numpy as np
import pytest

import runtime
from adapters.sim import tokens_at
from planners.baselines import MAX_BATCH
from runtime import (
    BatchLaunched,
    BudgetSettled,
    DeadlineHit,
    LaunchRejected,
    SampleFinished,
    SubtaskCompleted,
)
from runtime.types import Adapter, Batch, Decision, Finish, Launch, Planner, Report, SampleEnd, Snapshot
from tests.conftest import build, chain_spec, model
from tests.helpers import of, run_collect

# A pool with a quick success and a slow failure: with k samples, some of each.
QUICK_OR_SLOW = {"samples": [[1, 100, 2.0], [0, 1000, 20.0]]}


def pool_chain(n: int = 2) -> runtime.Workflow:
    spec = chain_spec(n, ttft=0.5, max_tokens=2000)
    spec["subtasks"][0]["profiles"]["m"] = QUICK_OR_SLOW
    return build(spec)


def test_first_success_completes_the_subtask_and_cancels_siblings_charging_partial_output() -> None:
    wf = pool_chain(1)
    result, events = run_collect(wf, 1.0, 100, planner="retry:m:8", seed=3)
    assert result.success and result.elapsed == 2.0
    finished = of(events, SampleFinished)
    assert len(finished) == 8
    cancelled = [e for e in finished if e.status == "cancelled"]
    assert cancelled, "seed 3 should draw at least one slow sample"
    # A slow sample streams 1000 tokens between its first token (0.5 s) and its end (20 s); a quick one
    # that ended at the same instant as the winner had produced all of its 100.
    assert all(e.t == 2.0 for e in cancelled)
    assert {e.output_tokens for e in cancelled} <= {100, tokens_at(2.0, 1000, 20.0, 0.5)}
    assert tokens_at(2.0, 1000, 20.0, 0.5) == 76
    assert any(e.output_tokens == 76 for e in cancelled)
    settled = {(e.batch, e.sample): e for e in of(events, BudgetSettled)}
    table = runtime.ProfileTable.from_workflow(wf)
    for e in finished:
        s = settled[(e.batch, e.sample)]
        assert s.pusd == table.cost_of(0, 0, e.output_tokens)
    assert result.cost_pusd == sum(s.pusd for s in settled.values())


def test_keep_siblings_lets_them_finish_while_downstream_work_starts() -> None:
    spec = chain_spec(2, p=1.0, tokens=2000, ttft=0.5, max_tokens=2000)  # s1 takes 20.5 s
    spec["subtasks"][0]["profiles"]["m"] = QUICK_OR_SLOW
    wf = build(spec)
    _result, events = run_collect(wf, 1.0, 100, planner="retry:m:8", seed=3, cancel_siblings=False)
    first = [e for e in of(events, SampleFinished) if e.subtask == "s0"]
    assert {e.status for e in first} == {"succeeded", "failed"}
    assert max(e.t for e in first) == 20.0  # the slow ones ran to their end, charged in full
    assert all(e.output_tokens == 1000 for e in first if e.status == "failed")
    s1_launch = next(e for e in of(events, BatchLaunched) if e.subtask == "s1")
    assert s1_launch.t == 2.0  # downstream did not wait for the stragglers


def test_deadline_cancels_everything_in_flight_at_once() -> None:
    spec = chain_spec(1, p=1.0, tps=10, ttft=0.0)
    spec["subtasks"][0]["profiles"]["m"]["output_tokens"] = {"mean": 1000, "std": 1}  # about 100 s
    result, events = run_collect(build(spec), 1.0, 30, planner="retry:m:3")
    assert not result.success and result.reason == "deadline"
    assert result.elapsed == 30.0
    (hit,) = of(events, DeadlineHit)
    assert hit.t == 30.0 and hit.cancelled_samples == 3
    for e in of(events, SampleFinished):
        assert e.status == "cancelled" and e.t == 30.0 and 298 <= e.output_tokens <= 301


def test_a_plugin_that_holds_the_event_loop_past_the_deadline_is_reported_not_hidden() -> None:
    """A sink that blocks 0.6 s (a blocking verifier or logger) holds the loop past a 0.3 s deadline: the run
    reports the time it really stopped and a deadline_hit, not the deadline it missed."""
    spec = chain_spec(1, p=1.0, tps=10, ttft=0.0)
    spec["subtasks"][0]["profiles"]["m"]["output_tokens"] = {"mean": 1000, "std": 1}  # about 100 s
    events: list[runtime.Event] = []

    def blocking(event: runtime.Event) -> None:
        events.append(event)
        if isinstance(event, BatchLaunched):
            time.sleep(0.6)

    result = runtime.run(build(spec), 1.0, 0.3, planner="retry:m:1", clock="real", on_event=blocking)
    assert not result.success and result.reason == "deadline"
    assert result.elapsed >= 0.6
    (hit,) = of(events, DeadlineHit)
    assert hit.t >= 0.6 and hit.cancelled_samples == 1
    (finished,) = of(events, runtime.RunFinished)
    assert finished.elapsed_s == result.elapsed


def test_interrupt_cancels_and_settles_everything_and_says_interrupted() -> None:
    """Run.interrupt() (ontime run's SIGINT and SIGTERM): every sample in flight is cancelled and settled,
    nothing new launches, and the run returns a result whose reason is "interrupted" (issue 16 item 4)."""
    events: list[runtime.Event] = []
    runs: list[runtime.Run] = []

    def on_event(event: runtime.Event) -> None:
        events.append(event)
        if isinstance(event, SubtaskCompleted):  # at 2.0 s; the slow siblings stream on (keep_siblings)
            runs[0].interrupt()

    async def main() -> runtime.RunResult:
        opts: dict[str, Any] = {"planner": "retry:m:8", "seed": 3, "cancel_siblings": False, "on_event": on_event}
        async with runtime.open_run(pool_chain(2), 1.0, 100, **opts) as r:
            runs.append(r)
            return await r.execute()

    result = anyio.run(main)
    assert not result.success and result.reason == "interrupted" and result.elapsed == 2.0
    assert {e.subtask for e in of(events, BatchLaunched)} == {"s0"}  # s1 was ready but not launched
    cancelled = [e for e in of(events, SampleFinished) if e.status == "cancelled"]
    assert cancelled and all(e.t == 2.0 for e in cancelled)
    ledger = runtime.replay_ledger(events)
    assert ledger.reserved_pusd == 0 and ledger.spent_pusd == result.cost_pusd > 0
    assert events[-1].to_dict()["reason"] == "interrupted"


def test_an_interrupt_at_launch_settles_at_that_instant_on_a_virtual_clock() -> None:
    """The settlement ran after the run had left the clock, which had by then jumped to the next timer: samples
    interrupted at t = 0 were settled at t = 1.5 (review of issue 16)."""
    events: list[runtime.Event] = []
    runs: list[runtime.Run] = []

    def on_event(event: runtime.Event) -> None:
        events.append(event)
        if isinstance(event, BatchLaunched):
            runs[0].interrupt()

    async def main() -> runtime.RunResult:
        async with runtime.open_run(pool_chain(1), 1.0, 100, planner="retry:m:4", on_event=on_event) as r:
            runs.append(r)
            return await r.execute()

    result = anyio.run(main)
    assert result.reason == "interrupted" and result.elapsed == 0.0
    finished = of(events, SampleFinished)
    assert len(finished) == 4 and all(e.t == 0.0 and e.status == "cancelled" for e in finished)
    assert events[-1].t == 0.0


class _SlowPlanner(Planner):
    """Decides in a worker thread, slowly: an interrupt arrives while it thinks."""

    name = "slow"
    in_thread = True

    def decide(self, snapshot: Snapshot) -> Decision:
        time.sleep(0.3)
        return Decision({i: Launch(0, 1) for i in snapshot.ready})


def test_an_interrupt_while_a_threaded_planner_decides_launches_nothing() -> None:
    """The decision that came back after the interrupt was launched (and charged), or, when it launched
    nothing, the run ended "planner_gave_up" instead of "interrupted" (review of issue 16)."""
    events: list[runtime.Event] = []

    async def main() -> runtime.RunResult:
        opened = runtime.open_run(pool_chain(1), 1.0, 100, planner=_SlowPlanner(), on_event=events.append)
        async with opened as r, anyio.create_task_group() as tg:

            async def interrupt_soon() -> None:
                await anyio.sleep(0.1)
                r.interrupt()

            tg.start_soon(interrupt_soon)
            result = await r.execute()
        return result

    result = anyio.run(main)
    assert result.reason == "interrupted" and result.cost == 0
    assert not of(events, BatchLaunched) and not of(events, runtime.BudgetReserved)


def test_no_attempt_starts_that_cannot_finish_before_the_deadline() -> None:
    spec = chain_spec(1, p=0.0, tokens=100, tps=10, ttft=0.0)  # 10 s per attempt, never succeeds
    result, events = run_collect(build(spec), 1.0, 25, planner="retry:m:1")
    launches = of(events, BatchLaunched)
    assert [e.t for e in launches] == [0.0, 10.0]  # a third would end at 30 > 25
    (rejected,) = of(events, LaunchRejected)
    assert rejected.t == 20.0 and rejected.reason == "deadline"
    assert result.reason == "deadline" and result.elapsed == 20.0


def test_budget_below_one_worst_case_launches_nothing() -> None:
    spec = chain_spec(1, inp=1000, out=10.0, max_tokens=1000)  # worst case 1000*1 + 1000*10 = 11000 micro$
    result, events = run_collect(build(spec), 0.0109, 100)
    assert not result.success and result.reason == "budget" and result.cost == 0
    assert not of(events, BatchLaunched)


def test_output_token_cap_is_reserved_like_money() -> None:
    spec = chain_spec(2, p=1.0, tokens=50, max_tokens=100)
    ok = runtime.run(build(spec), 1.0, 100, output_token_cap=200)
    assert ok.success
    short = runtime.run(build(spec), 1.0, 100, output_token_cap=150, planner="retry:m:2")
    assert short.success  # a width-2 batch needs 200 tokens held; retry shrinks it to width 1
    starved = runtime.run(build(spec), 1.0, 100, output_token_cap=99)
    assert not starved.success and starved.reason == "budget"


def test_failed_batch_makes_the_subtask_ready_again() -> None:
    spec = chain_spec(1, p=0.5, tokens=10)
    result, events = run_collect(build(spec), 1.0, 1000, planner="retry:m:1", seed=1)
    batches = of(events, BatchLaunched)
    fails = [e for e in events if isinstance(e, runtime.BatchFailed)]
    assert result.success and len(batches) == len(fails) + 1


class BadPlanner(Planner):
    name = "bad"

    def __init__(self, launch: dict[int, Launch]) -> None:
        self.launch = launch

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision(self.launch)


@pytest.mark.parametrize(
    "launch",
    [
        {1: Launch(0, 1)},
        {0: Launch(0, 0)},
        {0: Launch(5, 1)},
        {0: Launch(0.0, 1)},  # type: ignore[arg-type]  # an IndexError once
        {0: Launch(0, True)},  # once taken as k = 1
        {0: (0, 1)},
        None,  # an AttributeError once
    ],
    ids=["not_ready", "zero_width", "unknown_model", "float_model", "bool_width", "not_a_launch", "no_mapping"],
)
def test_invalid_decisions_raise_planner_error(launch: Any) -> None:
    with pytest.raises(runtime.PlannerError):
        runtime.run(build(chain_spec(2)), 1.0, 100, planner=BadPlanner(launch))


def test_numpy_integers_are_counts_a_planner_may_return() -> None:
    launch = {0: Launch(np.int64(0), np.int64(2))}  # type: ignore[arg-type]
    result, events = run_collect(build(chain_spec(1, p=1.0)), 1.0, 100, planner=BadPlanner(launch))
    assert result.success and [e.k for e in of(events, BatchLaunched)] == [2]


def test_no_batch_is_wider_than_max_batch_whatever_the_planner_asks() -> None:
    """Issue 16: k = 100,000 from a planner spent $48.5 on a job worth $0.0025 (and k = 10^6 grew to 7 GB)."""
    spec = chain_spec(1, p=1.0, tokens=5, inp=1, out=0.001, max_tokens=10)
    result, events = run_collect(build(spec), 1000.0, 100, planner=BadPlanner({0: Launch(0, 10**9)}))
    assert result.success and [e.k for e in of(events, BatchLaunched)] == [MAX_BATCH]


def test_a_launch_wider_than_what_is_left_is_narrowed_to_fit() -> None:
    """Issue 16: a launch the ledger could not afford in full was rejected, and the run ended with money left."""
    spec = chain_spec(1, p=0.0, inp=1000, out=10.0, max_tokens=1000)  # worst case 11,000 micro$ a sample
    result, events = run_collect(build(spec), 0.035, 100, planner=BadPlanner({0: Launch(0, 10)}))
    assert next(e.k for e in of(events, BatchLaunched)) == 3  # what $0.035 holds; rejected only when not one fits
    assert all(e.t > 0 for e in of(events, LaunchRejected)) and result.cost <= 0.035


def test_planner_runs_in_a_worker_thread_when_it_asks_to() -> None:
    import threading

    threads: list[str] = []

    class Threaded(Planner):
        name = "threaded"
        in_thread = True

        def decide(self, snapshot: Snapshot) -> Decision:
            threads.append(threading.current_thread().name)
            return Decision({i: Launch(0, 1) for i in snapshot.ready})

    result = runtime.run(build(chain_spec(2, p=1.0)), 1.0, 100, planner=Threaded())
    assert result.success
    assert threads and all(t != threading.main_thread().name for t in threads)


class Unreachable(Adapter):
    """Every sample's request is sent (input charged) and fails with a transport error."""

    async def run(self, batch: Batch, report: Report) -> None:
        error = runtime.ProviderUnavailableError("boom", provider="test")
        for idx in range(batch.k):
            report(SampleEnd(index=idx, finish=Finish.ERROR, input_tokens=batch.input_tokens, output_tokens=0,
                             error=error))  # fmt: skip


class Broken(Adapter):
    async def run(self, batch: Batch, report: Report) -> None:
        raise ZeroDivisionError("a bug")


def test_endpoint_errors_fail_the_sample_not_the_run() -> None:
    wf = build(chain_spec(1))
    table = runtime.ProfileTable.from_workflow(wf)
    result, events = run_collect(wf, 0.01, 100, adapters={"m": Unreachable()}, planner="retry:m:1")
    assert not result.success
    errors = [e for e in of(events, SampleFinished) if e.status == "error"]
    assert errors and errors[0].error == "ProviderUnavailableError: boom"
    # Input tokens were sent, so they are charged; the ledger still balances.
    assert result.cost_pusd == len(errors) * table.cost_of(0, 0, 0)
    assert runtime.replay_ledger(events).spent_pusd == result.cost_pusd


def test_an_adapter_bug_propagates_after_the_run_is_settled() -> None:
    """An exception that is not an endpoint's failure is a bug: it stops the run instead of failing samples."""
    events: list[runtime.Event] = []
    with pytest.raises(ZeroDivisionError, match="a bug"):
        runtime.run(build(chain_spec(1)), 0.01, 100, adapters={"m": Broken()}, on_event=events.append)
    (finished,) = of(events, runtime.RunFinished)
    assert finished.reason == runtime.Reason.ERROR and finished.detail == "ZeroDivisionError: a bug"
    replay = runtime.replay_ledger(events)
    assert replay.reserved_pusd == 0 and replay.spent_pusd == finished.spent_pusd == 0


def test_subtask_outcomes_and_outputs() -> None:
    wf = build(chain_spec(3, p=1.0))
    result, events = run_collect(wf, 1.0, 100)
    assert result.success and result.completed == 3
    assert set(result.outputs) == {"s0", "s1", "s2"}
    assert all(result.outputs[s] for s in result.outputs)
    assert [e.subtask for e in of(events, SubtaskCompleted)] == ["s0", "s1", "s2"]
    assert sum(o.cost for o in result.subtasks.values()) == pytest.approx(result.cost)


def test_charge_planner_time_advances_the_virtual_clock() -> None:
    import time

    class Slow(Planner):
        name = "slow"

        def decide(self, snapshot: Snapshot) -> Decision:
            time.sleep(0.02)
            return Decision({i: Launch(0, 1) for i in snapshot.ready})

    wf = build(chain_spec(2, p=1.0))
    plain = runtime.run(wf, 1.0, 100, planner=Slow())
    charged = runtime.run(wf, 1.0, 100, planner=Slow(), charge_planner_time=True)
    assert charged.elapsed >= plain.elapsed + 0.04


def test_sim_adapter_is_the_default_and_unusable_providers_are_rejected_before_spending() -> None:
    spec = chain_spec(1)
    spec["models"]["m"]["provider"] = "bogus"
    with pytest.raises(runtime.SpecError, match="'bogus' is not one of sim, openai, anthropic"):
        build(spec)
    spec["models"]["m"].update(provider="openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(runtime.UsageError, match="no prompt"):  # a real model needs something to send
        runtime.run(build(spec), 1.0, 100)
    spec["subtasks"][0]["prompt"] = "Say hi."
    # A clock object counts too: virtual time, or a fast real clock, would not hold a real endpoint's deadline.
    for clock in ("virtual", runtime.VirtualClock(), runtime.RealClock(100.0)):
        with pytest.raises(runtime.UsageError, match="real clock"):
            runtime.run(build(spec), 1.0, 100, clock=clock)


@pytest.mark.parametrize("budget", [0, -1, float("nan"), float("inf")])
def test_bad_budgets_raise_limit_error(budget: float) -> None:
    with pytest.raises(runtime.LimitError):
        runtime.run(build(chain_spec(1)), budget, 100)


@pytest.mark.parametrize("deadline", [0, -5, float("nan"), float("inf")])
def test_bad_deadlines_raise_limit_error(deadline: float) -> None:
    with pytest.raises(runtime.LimitError):
        runtime.run(build(chain_spec(1)), 1.0, deadline)


def test_models_may_be_missing_from_profiles() -> None:
    spec: dict[str, Any] = chain_spec(2, p=1.0)
    spec["models"]["other"] = model()
    spec["subtasks"][1]["profiles"] = {"other": {"p": 1.0, "output_tokens": {"fixed": 10}}}
    result = runtime.run(build(spec), 1.0, 100, planner="retry:m:1")
    assert result.success
    assert result.subtasks["s1"].model == "other"  # the family falls back to a model that can run it


def fork_spec() -> dict[str, Any]:
    """fast and slow side by side, next after fast: fast takes 1.5 s, slow 10.5 s, next 2.5 s; all succeed."""
    spec: dict[str, Any] = {"name": "fork", "models": {"m": model(tps=100, ttft=0.5)}, "subtasks": []}
    for sid, deps, tokens in (("fast", [], 100), ("slow", [], 1000), ("next", ["fast"], 200)):
        profile = {"p": 1.0, "output_tokens": {"fixed": tokens}}
        spec["subtasks"].append({"id": sid, "deps": deps, "input_tokens": 100, "profiles": {"m": profile}})
    return spec


@pytest.mark.parametrize("rounds", [False, True])
def test_rounds_wait_for_every_batch_in_flight_before_the_next_decision(rounds: bool) -> None:
    """Event-driven, ``next`` starts as soon as ``fast`` completes; in synchronized rounds the planner is not
    asked until ``slow``, the other batch of the round, has ended too."""
    result, events = run_collect(build(fork_spec()), 1.0, 100, planner="retry:m:1", rounds=rounds)
    assert result.success
    launched = {e.subtask: e.t for e in of(events, BatchLaunched)}
    decisions = [e.t for e in of(events, runtime.DecisionMade)]
    assert launched["fast"] == launched["slow"] == 0.0
    if rounds:
        assert launched["next"] == 10.5 and decisions == [0.0, 10.5]
        assert result.elapsed == 13.0
    else:
        assert launched["next"] == 1.5 and decisions == [0.0, 1.5]
        assert result.elapsed == 10.5
    assert of(events, runtime.RunStarted)[0].rounds is rounds


def test_rounds_retry_a_failed_batch_only_when_the_round_ends() -> None:
    """A batch that fails early is retried at once event-driven, but in rounds only once the other batch of
    its round has ended."""
    spec = fork_spec()
    spec["subtasks"] = spec["subtasks"][:2]
    spec["subtasks"][0]["profiles"]["m"]["p"] = 0.0  # fast fails every 1.5 s
    for rounds, expected in ((False, [1.5 * x for x in range(9)]), (True, [0.0, 10.5, 12.0])):
        result, events = run_collect(build(spec), 1.0, 14, planner="retry:m:1", rounds=rounds)
        assert [e.t for e in of(events, BatchLaunched) if e.subtask == "fast"] == expected, rounds
        assert [e.t for e in of(events, LaunchRejected)] == [expected[-1] + 1.5]  # would end at 15 > 14
        assert not result.success and result.reason == "deadline"
