"""Workflows as code (issue 19): a program's calls run under the ledger, the clock, the events and the journal.

The property test drives random programs (sequences of calls, some concurrent in task groups, random widths and
caps) against a seeded text backend on the virtual clock, under budgets and deadlines that bind, and checks the
invariants DAG runs keep (tests/test_invariants.py): no overspend at any event, no launch after the deadline,
every dollar in exactly one settlement, the journal rebuilding the ledger, same seed same run.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 (a task no task group owns, which a program on asyncio can start)
import functools
import importlib.util
import json
import math
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import runtime
from adapters.chat import input_token_bound
from adapters.sim import tokens_at
from adapters.sim_server import SimServer, serve_in_thread
from runtime import (
    Adapter,
    BatchLaunched,
    BudgetReserved,
    BudgetSettled,
    DeadlineHit,
    Finish,
    LaunchRejected,
    Message,
    OverBudgetError,
    PastDeadlineError,
    ProviderUnavailableError,
    SampleEnd,
    SampleFinished,
    VirtualClock,
    call_llm,
    exec_code,
)
from runtime._ledger import Usage
from runtime.cli import app
from runtime.types import InvariantError, LLMCall, SpecError, UsageError, to_pusd
from tests.conftest import model
from tests.helpers import ask_program, comparable, of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from runtime._program_run import ProgramRun
    from runtime.types import Batch, Report

HAS_PROGRAM_SANDBOX = importlib.util.find_spec("tools.program_sandbox") is not None
needs_program_sandbox = pytest.mark.skipif(
    not HAS_PROGRAM_SANDBOX, reason="tools.program_sandbox (the sandbox channel, issue 19) is not here yet"
)

TTFT = 0.2
MODELS = {"small": model(inp=1.0, out=4.0, max_tokens=400), "big": model(inp=5.0, out=20.0, max_tokens=800)}


class TextSim(Adapter):
    """A seeded text backend on a clock: each sample's length, latency and fate (complete, cut off at max_tokens,
    an endpoint error) drawn from ``(seed, batch, sample)``; a cancelled sample is charged its input and the
    output it had streamed (linearly after ``TTFT``), as the adapter contract asks."""

    simulated = True

    def __init__(self, clock: runtime.Clock, seed: int = 0, *, error_rate: float = 0.0, tps: float = 50.0) -> None:
        self.clock, self.seed, self.error_rate, self.tps = clock, seed, error_rate, tps

    async def run(self, batch: Batch, report: Report) -> None:
        start = self.clock.now()
        plan = []
        for i in range(batch.k):
            rng = random.Random(f"{self.seed}:{batch.id}:{i}")
            tokens = rng.randint(1, batch.max_tokens + batch.max_tokens // 4)
            fate = Finish.CUT_OFF if tokens > batch.max_tokens else Finish.COMPLETE
            if rng.random() < self.error_rate:
                fate = Finish.ERROR
            tokens = min(tokens, batch.max_tokens)
            plan.append((TTFT + tokens / self.tps * rng.uniform(0.5, 2.0), i, tokens, fate))
        plan.sort()
        done: set[int] = set()
        try:
            for latency, i, tokens, fate in plan:
                await self.clock.sleep_until(start + latency, order=(batch.id, i))
                done.add(i)
                error = (
                    ProviderUnavailableError("simulated outage", provider="textsim") if fate is Finish.ERROR else None
                )
                text = None if error else f"{batch.tag}/{i}: " + "w" * tokens
                report(SampleEnd(index=i, finish=fate, input_tokens=batch.input_tokens, output_tokens=tokens,
                                 output=text, error=error))  # fmt: skip
        finally:
            elapsed = self.clock.now() - start
            for latency, i, tokens, _ in plan:
                if i not in done:
                    out = tokens_at(elapsed, tokens, latency, TTFT)
                    report(SampleEnd(index=i, finish=Finish.CANCELLED, input_tokens=batch.input_tokens,
                                     output_tokens=out))  # fmt: skip


def sim_run(program: Any, budget: float, deadline: float, *, seed: int = 0, error_rate: float = 0.0,
            tps: float = 50.0, **options: Any) -> tuple[runtime.RunResult, list[runtime.Event]]:  # fmt: skip
    """Run a program on :class:`TextSim` (both models) in virtual time; the result and every event."""
    clock = VirtualClock()
    sim = TextSim(clock, seed, error_rate=error_rate, tps=tps)
    events: list[runtime.Event] = []
    options.setdefault("models", MODELS)
    options.setdefault("input", "What is 6 x 7?")
    result = runtime.run(program, budget, deadline, clock=clock, adapters={"small": sim, "big": sim}, seed=seed,
                         on_event=events.append, **options)  # fmt: skip
    return result, events


# -- the property: random programs keep every invariant ------------------------------------------------------

Call = tuple[str, int, int | None]  # model, n, max_tokens


def scripted(steps: list[list[Call]], degrade: bool) -> Callable[[str], Awaitable[str]]:
    """A program that makes ``steps`` of calls in order, the calls of one step at once (an anyio task group).
    With ``degrade`` it answers with what it has when a call is refused for money."""

    async def workflow(problem: str) -> str:
        answers: list[str] = []
        refused: list[OverBudgetError] = []

        async def one(call: Call) -> None:
            name, n, cap = call
            try:
                answers.extend(await call_llm([problem, "Think step by step."], model=name, n=n, max_tokens=cap))
            except OverBudgetError as exc:
                if not degrade:
                    raise
                refused.append(exc)

        for step in steps:
            if len(step) == 1:
                await one(step[0])
            else:
                async with anyio.create_task_group() as tg:
                    for call in step:
                        tg.start_soon(one, call)
            if refused:
                break
        return f"{len(answers)} answers"

    return workflow


calls = st.tuples(st.sampled_from(["small", "big"]), st.integers(1, 6), st.none() | st.integers(1, 600))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[list[Call]], bool, float, float, dict[str, Any]]:
    steps = draw(st.lists(st.lists(calls, min_size=1, max_size=4), min_size=1, max_size=6))
    options = {
        "seed": draw(st.integers(0, 2**31)),
        "error_rate": draw(st.sampled_from([0.0, 0.0, 0.2])),
        "output_token_cap": draw(st.none() | st.integers(100, 20_000)),
    }
    return steps, draw(st.booleans()), draw(st.floats(1e-4, 0.5)), draw(st.floats(0.5, 40.0)), options


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_programs_keep_the_invariants(
    scenario: tuple[list[list[Call]], bool, float, float, dict[str, Any]],
) -> None:
    steps, degrade, budget, deadline, options = scenario
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "run.jsonl"
        result, events = sim_run(scripted(steps, degrade), budget, deadline, journal=journal, **options)

        # 1. Never overspend: at every event spent + reserved <= budget; at the end nothing is held.
        live = runtime.replay_ledger(events)
        assert live.peak_committed_pusd <= to_pusd(budget)
        assert live.reserved_pusd == 0
        assert live.spent_pusd == result.cost_pusd == live.reported_spent_pusd
        assert result.cost_pusd <= to_pusd(budget)
        cap = options["output_token_cap"]
        held = spent = 0
        for e in events:
            if isinstance(e, BudgetReserved):
                held += e.output_tokens
            elif isinstance(e, BudgetSettled):
                held -= e.output_tokens + e.released_output_tokens
                spent += e.output_tokens
            assert cap is None or held + spent <= cap

        # 2. Never work past the deadline: no launch at or after it, in-flight samples cancelled at it.
        assert all(e.t < deadline for e in of(events, BatchLaunched))
        assert all(e.t <= deadline + 1e-9 for e in of(events, SampleFinished))
        assert result.elapsed <= deadline + 1e-9
        if of(events, DeadlineHit):
            assert result.reason == "deadline" and not result.success
            cancelled = [e for e in of(events, SampleFinished) if e.status == "cancelled"]
            assert len(cancelled) == of(events, DeadlineHit)[0].cancelled_samples
            assert all(math.isclose(e.t, deadline) and e.input_tokens > 0 for e in cancelled)  # charged their use

        # 3. Nothing is lost: one settlement per launched sample; the journal rebuilds the ledger exactly.
        launched = sum(e.k for e in of(events, BatchLaunched))
        assert live.settlements == launched == len(of(events, SampleFinished))
        assert runtime.replay_ledger(runtime.read_journal(journal)) == live

        # The program's view: a refusal is raised inside it, and a program that degrades still succeeds.
        refused = [e for e in of(events, LaunchRejected) if e.reason == "budget"]
        assert not [e for e in of(events, BudgetReserved) if refused and e.t > refused[0].t and not degrade]
        if result.success:
            assert result.reason is None and result.answer == result.outputs["answer"]
            assert result.answer is not None and result.answer.endswith("answers")
        elif result.reason == "budget":
            assert refused and not degrade and "OverBudgetError" in (result.detail or "")
        else:
            assert result.reason == "deadline" or (result.reason == "unreachable" and options["error_rate"])
        if degrade and not of(events, DeadlineHit) and not options["error_rate"]:
            assert result.success

        event(f"reason: {result.reason}")  # what the examples cover (pytest --hypothesis-show-statistics)
        event(f"refused for money: {bool(refused)}, degrades: {degrade}")

        # 4. Same seed, same run.
        again, events2 = sim_run(scripted(steps, degrade), budget, deadline, **options)
        assert comparable(events) == comparable(events2) and again.cost_pusd == result.cost_pusd


# -- one rule at a time --------------------------------------------------------------------------------------


async def _ask_three(problem: str) -> str:
    """Three samples of the small model, then the big one on the first answer."""
    first = await call_llm(problem, n=3, model="small", max_tokens=100)
    second = await call_llm([first[0], "Check it."], model="big", max_tokens=100)
    return second[0]


def test_a_program_s_answer_cost_and_events() -> None:
    result, events = sim_run(_ask_three, 1.0, 600)
    assert result.success and result.reason is None
    assert result.answer is not None and result.answer.startswith("call-2/0")
    assert result.outputs == {"answer": result.answer}
    assert [(e.subtask, e.model, e.k, e.max_tokens) for e in of(events, BatchLaunched)] == [
        ("call-1", "small", 3, 100),
        ("call-2", "big", 1, 100),
    ]
    assert result.cost_pusd == sum(e.pusd for e in of(events, BudgetSettled)) > 0
    outcome = result.subtasks["answer"]
    assert (outcome.batches, outcome.samples, outcome.model, outcome.completed) == (2, 4, "small, big", True)
    assert events[0].to_dict()["planner"] == "program" and events[-1].to_dict()["success"] is True


def test_the_worst_case_is_reserved_before_launch() -> None:
    _, events = sim_run(_ask_three, 1.0, 600)
    [first, _] = of(events, BudgetReserved)
    # n x (input tokens x $1/M + max_tokens x $4/M), the input bounded by the prompt's bytes and framing.
    bound = input_token_bound((Message("user", "What is 6 x 7?"),))
    assert first.pusd == 3 * (bound * 1_000_000 + 100 * 4_000_000) and first.output_tokens == 300
    assert of(events, BatchLaunched)[0].t == first.t == 0.0


def test_a_call_that_cannot_be_afforded_is_refused_inside_the_program_and_charges_nothing() -> None:
    seen: list[str] = []

    async def degrade(problem: str) -> str:
        cheap = await call_llm(problem, model="small", max_tokens=50)
        try:
            await call_llm(problem, model="big", n=64)
        except OverBudgetError as exc:
            seen.append(str(exc))
            return cheap[0]
        return "unreachable"

    result, events = sim_run(degrade, 0.002, 600)
    assert result.success and result.answer is not None and result.answer.startswith("call-1/0")
    assert seen and "call-2" in seen[0] and "64 x 800" in seen[0]
    assert [(e.subtask, e.reason) for e in of(events, LaunchRejected)] == [("call-2", "budget")]
    assert len(of(events, BudgetReserved)) == 1  # the refused call held nothing


def test_a_refusal_the_program_lets_through_fails_the_run_with_reason_budget() -> None:
    async def greedy(problem: str) -> str:
        return (await call_llm(problem, model="big", n=64))[0]

    result, events = sim_run(greedy, 0.001, 600)
    assert not result.success and result.reason == "budget" and result.cost == 0
    assert result.detail is not None and result.detail.startswith("OverBudgetError: ")
    assert result.answer is None and not of(events, BatchLaunched)


def test_a_refusal_inside_a_task_group_keeps_its_reason() -> None:
    async def too_wide(problem: str) -> None:
        await call_llm(problem, model="big", n=64)

    async def fan_out(problem: str) -> str:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(call_llm, problem, model="small"))
            tg.start_soon(too_wide, problem)
        return "done"

    result, _ = sim_run(fan_out, 0.001, 600)
    assert not result.success and result.reason == "budget"


def test_the_deadline_cancels_the_program_and_charges_what_its_samples_used() -> None:
    async def slow(problem: str) -> str:
        return (await call_llm(problem, model="big", n=4))[0]

    result, events = sim_run(slow, 1.0, 1.0, tps=0.5)  # every answer takes longer than a second
    assert not result.success and result.reason == "deadline" and result.elapsed == 1.0
    [hit] = of(events, DeadlineHit)
    assert hit.cancelled_samples == 4 and hit.t == 1.0
    ends = of(events, SampleFinished)
    assert [e.status for e in ends] == ["cancelled"] * 4 and all(e.t == 1.0 and e.input_tokens > 0 for e in ends)
    assert result.cost_pusd == sum(e.pusd for e in of(events, BudgetSettled)) > 0
    assert runtime.replay_ledger(events).reserved_pusd == 0


def test_a_call_at_the_deadline_raises_past_deadline_inside_the_program() -> None:
    caught: list[str] = []

    async def late(problem: str) -> str:
        await call_llm(problem, model="small", max_tokens=1)
        try:
            await call_llm(problem, model="small")
        except PastDeadlineError as exc:
            caught.append(str(exc))
        return "as far as it got"

    first, events = sim_run(late, 1.0, 600)
    ends = of(events, SampleFinished)
    deadline = ends[0].t  # the first answer arrives exactly at the deadline: the next call may not start
    result, events = sim_run(late, 1.0, deadline)
    assert caught and "deadline" in caught[-1]
    assert result.success and result.answer == "as far as it got"
    assert [(e.subtask, e.reason) for e in of(events, LaunchRejected)] == [("call-2", "deadline")]
    assert first.success


def test_a_waiting_call_woken_at_the_deadline_is_rejected_in_the_events() -> None:
    caught: list[str] = []

    async def waits(problem: str) -> str:
        async def waiting() -> None:
            request = LLMCall(messages=(problem,), model="big", n=4, tag="waiting")
            try:
                await runtime.current_run().call(request, wait=True)  # needs the money "first" holds
            except PastDeadlineError as exc:
                caught.append(str(exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(call_llm, problem, model="big", n=4, tag="first"))
            await anyio.lowlevel.checkpoint()
            tg.start_soon(waiting)
        return "done"

    _, events = sim_run(waits, 0.1, 600)
    deadline = min(e.t for e in of(events, SampleFinished))  # the first settlement wakes it at the deadline
    _, events = sim_run(waits, 0.1, deadline)
    assert caught and "deadline" in caught[-1]
    assert [(e.subtask, e.reason, e.t) for e in of(events, LaunchRejected)] == [("waiting", "deadline", deadline)]


def test_samples_that_errored_are_left_out_and_all_errored_raises_the_provider_error() -> None:
    async def many(problem: str) -> str:
        return str(len(await call_llm(problem, model="small", n=8, max_tokens=20)))

    some, events = sim_run(many, 1.0, 600, error_rate=0.5, seed=3)
    errors = [e for e in of(events, SampleFinished) if e.status == "error"]
    assert some.success and 0 < len(errors) < 8 and some.answer == str(8 - len(errors))
    every, _ = sim_run(many, 1.0, 600, error_rate=1.0)
    assert not every.success and every.reason == "unreachable"
    assert every.detail is not None and every.detail.startswith("ProviderUnavailableError: simulated outage")


def test_a_program_that_raises_or_returns_no_text_fails_with_the_reason_in_detail() -> None:
    async def broken(problem: str) -> str:
        raise ValueError("no idea")

    async def silent(problem: str) -> str:
        return None  # type: ignore[return-value]

    raised, _ = sim_run(broken, 1.0, 60)
    assert (raised.success, raised.reason, raised.detail) == (False, "error", "ValueError: no idea")
    returned, _ = sim_run(silent, 1.0, 60)
    assert not returned.success and returned.detail == "the program returned NoneType, not text"


class _Boom(BaseException):
    """Neither an Exception nor a cancellation: still the program's own failure."""


@pytest.mark.parametrize(
    ("raised", "named"),
    [(lambda: anyio.get_cancelled_exc_class()(), "CancelledError"), (lambda: SystemExit(3), "SystemExit: 3"),
     (lambda: _Boom("boom"), "_Boom: boom"), (lambda: GeneratorExit(), "GeneratorExit")],
)  # fmt: skip
def test_a_program_that_raises_a_base_exception_fails_with_an_error_not_a_deadline(
    raised: Callable[[], BaseException], named: str
) -> None:
    async def odd(problem: str) -> str:
        await call_llm(problem, model="small", max_tokens=5)
        raise raised()

    result, events = sim_run(odd, 1.0, 600)
    assert (result.success, result.reason) == (False, "error") and not of(events, DeadlineHit)
    assert result.detail is not None and result.detail.startswith(named)
    assert 0 < result.elapsed < 600 and runtime.replay_ledger(events).reserved_pusd == 0


def test_a_program_s_own_work_between_calls_takes_no_virtual_time() -> None:
    async def chain(problem: str) -> None:
        first = await call_llm(problem, model="small", max_tokens=5, tag="first")
        async with anyio.create_task_group() as tg:  # a few turns of the event loop before the next call
            for _ in range(3):
                tg.start_soon(anyio.lowlevel.checkpoint)
        await call_llm(first, model="small", max_tokens=5, tag="second")

    async def busy(problem: str) -> str:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(call_llm, problem, model="big", tag="long"))  # a timer further on
            tg.start_soon(chain, problem)
        return "ok"

    result, events = sim_run(busy, 1.0, 600, tps=5.0)
    ended = {e.subtask: e.t for e in of(events, SampleFinished)}
    launched = {e.subtask: e.t for e in of(events, BatchLaunched)}
    assert result.success and ended["first"] < ended["long"]
    assert launched["second"] == ended["first"]  # not the next timer's time: the clock waited for the program


@pytest.mark.timeout(30)
def test_a_call_in_a_cancelled_scope_neither_launches_nor_stalls_the_clock() -> None:
    async def cancel_then_call(problem: str) -> str:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await call_llm(problem, model="big", n=8)
        return (await call_llm(problem, model="small", tag="after"))[0]

    result, events = sim_run(cancel_then_call, 1.0, 600)  # a waiter left on the clock's heap froze time forever
    assert result.success and result.answer is not None
    assert [e.subtask for e in of(events, BatchLaunched)] == ["after"]
    assert result.cost_pusd == sum(e.pusd for e in of(events, BudgetSettled)) > 0


@pytest.mark.timeout(30)
def test_a_sleep_cancelled_before_it_waits_leaves_no_wake_up_on_the_virtual_clock() -> None:
    clock = VirtualClock()

    async def main() -> float:
        with clock.participate():
            with anyio.CancelScope() as scope:
                scope.cancel()
                await clock.sleep_until(1.0)
            await clock.sleep_until(2.0)  # the stale wake-up at 1.0 counted a busy task that never woke: a hang
            await clock.sleep_until(3.0)
        return clock.now()

    assert anyio.run(main) == 3.0


def test_calls_in_flight_when_the_program_returns_are_settled_before_run_finished() -> None:
    left: list[asyncio.Task[list[str]]] = []

    async def orphan(problem: str) -> str:  # a task outside any task group of the program's, still calling
        left.append(asyncio.get_running_loop().create_task(call_llm(problem, model="big", n=8)))
        await anyio.lowlevel.checkpoint()
        return "early"

    result, events = sim_run(orphan, 1.0, 600)
    assert result.success and result.answer == "early"
    assert isinstance(events[-1], runtime.RunFinished) and len(of(events, runtime.RunFinished)) == 1
    ends = of(events, SampleFinished)
    assert len(ends) == 8 and {e.status for e in ends} == {"cancelled"}
    assert runtime.replay_ledger(events).reserved_pusd == 0
    assert result.cost_pusd == sum(e.pusd for e in of(events, BudgetSettled)) > 0  # charged its input


def test_a_call_after_the_program_has_returned_is_refused_and_records_nothing() -> None:
    runs: list[ProgramRun] = []

    async def keep(problem: str) -> str:
        runs.append(runtime.current_run())
        return "done"

    async def overstay(problem: str) -> str:
        runs.append(runtime.current_run())
        await anyio.sleep_forever()
        return "never"

    request = LLMCall(messages=("hi",), model="small")
    for program, deadline, error in ((keep, 600.0, UsageError), (overstay, 5.0, PastDeadlineError)):
        _, events = sim_run(program, 1.0, deadline)
        count = len(events)
        with pytest.raises(error):
            anyio.run(runs[-1].call, request)
        with pytest.raises(error):
            anyio.run(runs[-1].exec_code, "x = 1", "assert x == 1")
        assert len(events) == count  # nothing after RunFinished


def test_a_run_refuses_to_finish_with_money_still_reserved() -> None:
    async def leaks(problem: str) -> str:
        runtime.current_run().ledger.reserve(Usage(1, 1))  # a hold no settlement will ever release
        return "done"

    with pytest.raises(InvariantError, match="still reserved"):
        sim_run(leaks, 1.0, 600)


@pytest.mark.timeout(30)
def test_a_program_retrying_a_refused_call_in_a_loop_does_not_freeze_virtual_time() -> None:
    async def spin(problem: str) -> str:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(call_llm, problem, model="big", n=4, tag="first"))
            await anyio.lowlevel.checkpoint()
            while True:  # refused until the first call settles: each refusal held the clock, so it never did
                try:
                    await call_llm(problem, model="big", n=3, max_tokens=700, tag="retry")
                except OverBudgetError:
                    await anyio.lowlevel.checkpoint()
                else:
                    break
        return "done"

    result, events = sim_run(spin, 0.1, 600)
    assert result.success and result.answer == "done"
    launched = {e.subtask: e.t for e in of(events, BatchLaunched)}
    freed = {e.t for e in of(events, SampleFinished) if e.subtask == "first"}
    assert launched["retry"] in freed and launched["retry"] > 0  # at the instant a settlement freed the money


def test_the_run_handle_calls_prices_and_tells_what_is_left() -> None:
    seen: list[Any] = []

    async def direct(problem: str) -> str:
        run = runtime.current_run()
        before = run.remaining()
        got = await run.call(LLMCall(messages=(problem,), model="small", n=2, max_tokens=10, tag="ask"))
        seen.extend([before, got, run.remaining()])
        return got.outputs[0]

    result, events = sim_run(direct, 0.5, 100)
    before, got, after = seen
    assert before == (0.5, 100.0)
    assert got.cost_pusd == result.cost_pusd and len(got.outputs) == 2 and got.output_tokens <= 20
    assert math.isclose(after[0], 0.5 - result.cost) and after[1] < 100.0
    assert of(events, BatchLaunched)[0].subtask == "ask"


def test_call_llm_and_exec_code_outside_a_run_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="inside a program"):
        anyio.run(call_llm, "hello")
    with pytest.raises(UsageError, match="inside a program"):
        anyio.run(exec_code, "x = 1")
    with pytest.raises(UsageError):
        runtime.current_run()


def test_a_call_past_the_output_token_cap_is_refused_and_says_so() -> None:
    async def wide(problem: str) -> str:
        try:
            await call_llm(problem, model="small", n=4, max_tokens=100)
        except OverBudgetError as exc:
            return str(exc)
        return "launched"

    result, _ = sim_run(wide, 1.0, 60, output_token_cap=300)
    assert (
        result.answer == "call_llm (call-1): 4 x 100 output tokens on 'small' may use them all; 300 are left "
        "under the output_token_cap"
    )


def test_exec_code_without_tests_is_a_usage_error_inside_the_program() -> None:
    async def untested(problem: str) -> str:
        try:
            await exec_code("x = 1\n")
        except UsageError as exc:
            return str(exc)
        return "ran"

    result, _ = sim_run(untested, 1.0, 60)
    assert result.answer is not None and "tests=" in result.answer


def test_call_llm_arguments_are_checked_inside_the_program() -> None:
    async def odd(problem: str) -> str:
        for kwargs in ({"model": "nope"}, {"n": 0}, {"temperature": 3.0}):
            try:
                await call_llm(problem, **kwargs)
            except UsageError as exc:
                problem += f"|{exc}"
        return problem

    result, events = sim_run(odd, 1.0, 60)
    assert result.success and result.answer is not None
    assert "unknown model 'nope'" in result.answer and "num_of_response" in result.answer
    assert "temperature" in result.answer and not of(events, BatchLaunched)


def test_bad_program_runs_are_refused_before_anything_is_spent() -> None:
    def sync(problem: str) -> str:
        return problem

    clock = VirtualClock()
    sim = TextSim(clock)
    bad: list[tuple[Any, dict[str, Any]]] = [
        (sync, {"models": MODELS}),
        (_ask_three, {}),  # no models anywhere
        (_ask_three, {"models": MODELS, "input": 3}),
        (_ask_three, {"models": MODELS}),  # no input, and the function has no EXAMPLE
        (_ask_three, {"models": MODELS, "input": "q", "adapters": {"small": sim}}),  # "big" gives no text
        (_ask_three, {"models": MODELS, "input": "q", "adapters": {"small": sim, "big": sim, "x": sim}}),
        (_ask_three, {"models": MODELS, "input": "q", "planner": "mcp"}),
        (_ask_three, {"models": {"m": {"provider": "sim"}}, "input": "q"}),
    ]
    for program, options in bad:
        with pytest.raises(UsageError):
            runtime.run(program, 1.0, 60, **options)
    with pytest.raises(runtime.LimitError):
        runtime.run(_ask_three, -1.0, 60, models=MODELS, input="q", adapters={"small": sim, "big": sim})


# -- program files: read with ast, never executed here --------------------------------------------------------

SOURCE = '''"""Answer by asking the small model, then checking with the big one."""
import pathlib

pathlib.Path(MARKER).write_text("executed")  # a program file's module must never run in ontime's process

MODELS = {"small": {"provider": "sim", "input_price_per_mtok": 1, "output_price_per_mtok": 4, "tokens_per_s": 50,
                    "ttft_s": 0.2, "max_output_tokens": 400}}
DEFAULT_MODEL = "small"
EXAMPLE: str = "What is 6 x 7?"


async def workflow(problem: str) -> str:
    # Step 1: Ask
    answers = await call_llm([problem], num_of_response=2, max_tokens=30)
    # Step 2: Pick
    return answers[0]
'''


def test_a_program_file_is_read_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "wf.py"
    path.write_text(SOURCE.replace("MARKER", repr(str(marker))))
    program = runtime.load_program(path)
    assert not marker.exists()
    assert program.sandboxed and program.fn is None and program.name == str(path)
    assert program.default_model == "small" and program.example == "What is 6 x 7?"
    assert program.models is not None and program.models["small"].output_price_per_mtok == 4
    assert program.description.startswith("Answer by asking")


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("def workflow(problem): return problem", "async def workflow"),
        ("async def workflow(a, b): return a", "async def workflow"),
        ("async def workflow(problem):\n  return (", "not valid Python"),
        ("MODELS = dict(a=1)\nasync def workflow(problem): return problem", "MODELS must be a literal"),
        ("MODELS = {'m': {'provider': 'sim'}}\nasync def workflow(problem): return problem", "missing"),
        ("EXAMPLE = 3\nasync def workflow(problem): return problem", "EXAMPLE must be a string"),
    ],
)
def test_a_malformed_program_is_a_spec_error(source: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        runtime.Program.from_source(source)


def test_a_models_block_is_checked_as_a_spec_s(tmp_path: Path) -> None:
    bad = {"m": {**model(), "input_price_per_mtok": -1}}
    with pytest.raises(SpecError, match=r"models\.m\.input_price_per_mtok"):
        runtime.Program(_ask_three, models=bad)
    with pytest.raises(SpecError, match="cannot read"):
        runtime.load_program(tmp_path / "missing.py")


# -- exec_code: the code sandbox, under the run ---------------------------------------------------------------


def test_exec_code_runs_the_public_tests_in_the_sandbox() -> None:
    async def coder(problem: str) -> str:
        good = await exec_code("def add(a, b):\n    return a + b\n")
        bad = await exec_code("def add(a, b):\n    return a - b\n")
        crash = await exec_code("def add(a, b):\n    raise SystemExit\n", "add(1, 2)\n")
        return json.dumps([good, bad, crash])

    result, _ = sim_run(coder, 1.0, 60, tests="assert add(2, 3) == 5\n")
    assert result.success and result.answer is not None
    good, bad, crash = json.loads(result.answer)
    assert good == "no error"
    assert isinstance(bad, list) and bad[0]["error_type"] == "AssertionError"
    assert isinstance(crash, dict) and "exec_fail_case" in crash


def test_the_deadline_stops_exec_code_on_the_real_clock() -> None:
    async def spin(problem: str) -> str:
        return str(await exec_code("while True:\n    pass\n", "assert True\n"))

    clock = runtime.RealClock()
    sim = TextSim(clock)
    result = runtime.run(spin, 1.0, 0.5, models=MODELS, input="q", clock=clock, adapters={"small": sim, "big": sim})
    assert not result.success and result.reason == "deadline" and 0.5 <= result.elapsed < 2.0  # the sandbox allows 10 s


# -- against the real OpenAI SDK, through serve-sim on loopback ------------------------------------------------


def test_a_program_runs_against_serve_sim_through_the_openai_sdk() -> None:
    served = runtime.parse_workflow({
        "models": {"gpt-sim": model(inp=0.5, out=1.5, tps=2000.0, ttft=0.01, max_tokens=200)},
        "subtasks": [
            {"id": "ask", "input_tokens": 30, "reference": "The answer is 42.",
             "profiles": {"gpt-sim": {"p": 1.0, "output_tokens": {"fixed": 12}}}},
        ],
    })  # fmt: skip

    async def ask(problem: str) -> str:
        answers = await call_llm([problem], n=2, tag="ask", instructions="Be brief.")
        return answers[0]

    server = SimServer(served, seed=1, speed=10.0)
    with serve_in_thread(server) as url:
        models = {"gpt-sim": {"provider": "openai", "base_url": url + "/v1", "input_price_per_mtok": 0.5,
                              "output_price_per_mtok": 1.5, "tokens_per_s": 2000.0, "ttft_s": 0.01,
                              "max_output_tokens": 200, "timeout_s": 5.0}}  # fmt: skip
        events: list[runtime.Event] = []
        result = runtime.run(ask, 0.01, 30, models=models, input="What is 6 x 7?", on_event=events.append)
    assert result.success, result.detail
    assert result.answer == "The answer is 42."
    [request] = server.record
    assert request.subtask == "ask" and request.n == 2 and request.status == "complete"
    ends = of(events, SampleFinished)
    assert sum(e.output_tokens for e in ends) == sum(request.output_tokens) == 24
    assert sum(e.input_tokens for e in ends) == request.input_tokens
    assert result.cost_pusd == request.input_tokens * 500_000 + 24 * 1_500_000
    assert events[0].to_dict()["clock"] == "RealClock"


# -- model-written programs: always in the sandbox ------------------------------------------------------------


@needs_program_sandbox
def test_a_sandboxed_program_calls_through_the_parent_under_its_budget(tmp_path: Path) -> None:
    path = tmp_path / "wf.py"
    path.write_text("\n".join(line for line in SOURCE.splitlines() if "pathlib" not in line))
    clock = VirtualClock()
    events: list[runtime.Event] = []
    result = runtime.run(str(path), 1.0, 600, clock=clock, adapters={"small": TextSim(clock)}, on_event=events.append)
    assert result.success, result.detail
    assert result.answer is not None and result.answer.startswith("call-1/0: ")
    assert [(e.model, e.k, e.max_tokens) for e in of(events, BatchLaunched)] == [("small", 2, 30)]
    assert runtime.replay_ledger(events).spent_pusd == result.cost_pusd > 0


@needs_program_sandbox
def test_a_sandboxed_program_that_overspends_is_refused_and_one_past_its_deadline_is_stopped() -> None:
    greedy = "async def workflow(problem):\n    return (await call_llm(problem, n=64))[0]\n"
    clock = VirtualClock()
    options: dict[str, Any] = {"models": {"small": MODELS["small"]}, "input": "q", "clock": clock,
                               "adapters": {"small": TextSim(clock)}}  # fmt: skip
    result = runtime.run(runtime.Program.from_source(greedy), 0.0001, 600, **options)
    assert not result.success and result.reason == "budget" and result.cost == 0
    assert result.detail is not None and "OverBudgetError" in result.detail
    spin = "async def workflow(problem):\n    while True:\n        await call_llm(problem, max_tokens=1)\n"
    clock = VirtualClock()
    options.update(clock=clock, adapters={"small": TextSim(clock)})
    stopped = runtime.run(runtime.Program.from_source(spin), 1.0, 5.0, **options)
    assert not stopped.success and stopped.reason == "deadline" and stopped.elapsed <= 5.0


@needs_program_sandbox
def test_a_sandboxed_program_cannot_set_its_run_s_reason_from_its_error_message() -> None:
    spoof = "async def workflow(problem):\n    raise ValueError('no answer\\nPastDeadlineError: it was the clock')\n"
    clock = VirtualClock()
    result = runtime.run(runtime.Program.from_source(spoof), 1.0, 600, models={"small": MODELS["small"]},
                         input="q", clock=clock, adapters={"small": TextSim(clock)})  # fmt: skip
    assert (result.success, result.reason) == (False, "error")
    assert result.detail is not None and result.detail.startswith("ValueError: no answer\nPastDeadlineError")


@needs_program_sandbox
def test_ontime_run_runs_a_program_file_in_the_sandbox(tmp_path: Path) -> None:
    entry = "async def workflow(problem):\n    return (await call_llm(problem, tag='ask'))[0]\n"
    with ask_program(tmp_path, entry) as path:
        result = CliRunner().invoke(app, ["run", str(path), "-b", "0.01", "-d", "30", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == "Answer: B" and data["success"] and 0 < data["cost"] <= 0.01


def test_ontime_run_refuses_dag_options_for_a_program_and_input_for_a_spec(tmp_path: Path) -> None:
    path = tmp_path / "wf.py"
    path.write_text("async def workflow(problem):\n    return problem\n")
    refused = CliRunner().invoke(app, ["run", str(path), "-b", "1", "-d", "10", "--rounds"])
    assert refused.exit_code == 2 and "for workflow specs" in refused.stderr
    spec = Path(__file__).resolve().parent.parent / "examples" / "chain.json"
    refused = CliRunner().invoke(app, ["run", str(spec), "-b", "1", "-d", "10", "--input", "x"])
    assert refused.exit_code == 2 and "--input" in refused.stderr
    no_models = CliRunner().invoke(app, ["run", str(path), "-b", "1", "-d", "10", "--input", "x"])
    assert no_models.exit_code == 2 and "MODELS" in no_models.stderr
