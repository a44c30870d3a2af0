"""The public entry points: ``run`` (sync), ``arun`` (async) and ``stream`` (events as they happen)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import uuid
from functools import partial
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

import anyio

from runtime._clock import Clock, RealClock, VirtualClock, single_error
from runtime._errors import UsageError
from runtime._events import Event
from runtime._executor import Executor, ExecutorOptions
from runtime._money import check_limit, to_pusd
from runtime._profiles import ProfileTable
from runtime._sinks import JournalSink, Sink, user_sinks
from runtime._spec import load_workflow
from runtime._workflow import Workflow

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from adapters.base import Adapter, SampleRequest
    from planners.base import Planner
    from runtime._result import RunResult

__all__ = ["DEFAULT_PLANNER", "arun", "prepare", "run", "stream"]

DEFAULT_PLANNER = "mcp"

WorkflowLike = Workflow | str | PathLike[str]
ClockLike = Literal["virtual", "real"] | Clock


def _workflow(wf: WorkflowLike) -> Workflow:
    return wf if isinstance(wf, Workflow) else load_workflow(wf)


def _make_clock(clock: ClockLike | None, speed: float, wf: Workflow) -> Clock:
    real = list(wf.real_models)
    if real and (clock == "virtual" or speed != 1.0):
        raise UsageError(
            f"model {real[0]!r} is a real endpoint: its run needs the real clock at speed 1, "
            f"not clock={clock!r}, speed={speed!r}"
        )
    if clock is None:
        clock = "real" if real else "virtual"
    if isinstance(clock, Clock):
        return clock
    if clock == "virtual":
        return VirtualClock()
    if clock == "real":
        check_limit("speed", speed)
        return RealClock(speed)
    raise UsageError(f"clock must be 'virtual', 'real' or a Clock, not {clock!r}")


def _adapters(wf: Workflow, table: ProfileTable, clock: Clock, seed: int) -> list[Adapter]:
    """One adapter per model: the simulated one, or a chat adapter on the model's endpoint."""
    from adapters.sim import SimAdapter

    sim = SimAdapter(table, clock, seed)
    real = wf.real_models
    if not real:
        return [sim] * table.n_models
    from adapters.chat_adapter import ChatAdapter
    from adapters.endpoints import make_backend
    from runtime._verifiers import build_verifier

    for s in wf.subtasks:
        if s.prompt is None and any(m in real for m in s.profiles):
            raise UsageError(f"subtask {s.id!r} may run on a real model but has no prompt")
    backends = {name: make_backend(m) for name, m in real.items()}
    verifiers = [
        None if s.verifier is None else build_verifier(s.verifier, dict(wf.models), backends) for s in wf.subtasks
    ]

    async def check(req: SampleRequest, output: str) -> tuple[bool, int]:
        v = verifiers[req.subtask]
        if v is None:  # no verifier: an answer that finished by itself passes
            return True, 0
        verdict = await v.check(output, req.check_pusd)
        return verdict.ok, verdict.cost_pusd

    def check_worst(i: int, max_tokens: int) -> int:
        v = verifiers[i]
        return 0 if v is None else v.worst_pusd(max_tokens)

    out: list[Adapter] = []
    for name in table.model_names:
        endpoint = wf.models[name].endpoint
        if endpoint is None:
            out.append(sim)
        else:
            out.append(
                ChatAdapter(
                    backends[name], endpoint.model, check, check_worst=check_worst, temperature=endpoint.temperature
                )
            )
    return out


def prepare(
    workflow: WorkflowLike,
    budget: float,
    deadline: float,
    *,
    planner: str | Planner | None = None,
    seed: int = 0,
    clock: ClockLike | None = None,
    speed: float = 1.0,
    sinks: Sequence[Sink] = (),
    cancel_siblings: bool = True,
    rounds: bool = False,
    charge_planner_time: bool = False,
    output_token_cap: int | None = None,
    table: ProfileTable | None = None,
    run_id: str | None = None,
) -> Executor:
    """Check every input and build the executor of one run, without starting it.

    Everything :func:`run` can reject is rejected here, before any money is spent. ``table`` lets a
    caller that runs the same workflow many times build its :class:`ProfileTable` once.
    """
    from planners import PlannerContext, make_planner
    from planners.base import Planner

    wf = _workflow(workflow)
    check_limit("budget", budget)
    check_limit("deadline", deadline)
    if output_token_cap is not None and (not isinstance(output_token_cap, int) or output_token_cap < 1):
        raise UsageError(f"output_token_cap must be a positive integer, not {output_token_cap!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, not {seed!r}")
    table = table or ProfileTable.from_workflow(wf)
    budget_pusd = to_pusd(budget)
    if isinstance(planner, Planner):
        pl = planner
    else:
        pl = make_planner(planner or DEFAULT_PLANNER, PlannerContext(table, budget_pusd, float(deadline), seed))
    clk = _make_clock(clock, speed, wf)
    adapters = _adapters(wf, table, clk, seed)
    sink_list = list(sinks)

    def emit(event: Event) -> None:
        for s in sink_list:
            s(event)

    return Executor(
        table=table,
        workflow_name=wf.name,
        planner=pl,
        adapters=adapters,
        clock=clk,
        budget_pusd=budget_pusd,
        deadline_s=float(deadline),
        seed=seed,
        run_id=run_id or uuid.uuid4().hex[:12],
        emit=emit,
        options=ExecutorOptions(
            cancel_siblings=cancel_siblings,
            charge_planner_time=charge_planner_time,
            output_token_cap=output_token_cap,
            rounds=rounds,
        ),
        subtasks=wf.subtasks,
    )


async def arun(
    workflow: WorkflowLike,
    budget: float,
    deadline: float,
    *,
    planner: str | Planner | None = None,
    seed: int = 0,
    clock: ClockLike | None = None,
    speed: float = 1.0,
    journal: str | PathLike[str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    log: bool | Any = True,
    cancel_siblings: bool = True,
    rounds: bool = False,
    charge_planner_time: bool = False,
    output_token_cap: int | None = None,
) -> RunResult:
    """Run a workflow within ``budget`` US dollars and ``deadline`` seconds; return how it went.

    Args:
        workflow: a :class:`Workflow` or the path of a spec file.
        budget: hard cap on dollars spent; never exceeded (the worst case of every batch is reserved first).
        deadline: seconds from the start; no attempt starts after it and in-flight work is cancelled at it.
        planner: a planner spec (default :data:`DEFAULT_PLANNER`, ``"mcp"``; see README "Planners"), or a
            :class:`planners.base.Planner` instance to use for this one run.
        seed: seeds the simulated backend; the same seed on a virtual clock gives the same run.
        clock: ``"virtual"`` (discrete-event time), ``"real"``, or a :class:`Clock`. Default: virtual when
            every model is simulated, real when any model is a real endpoint (which requires it).
        speed: with ``clock="real"``, clock seconds per wall second (replays a simulated run faster).
        journal: a path to write every event to, one JSON object per line.
        on_event: called with every event, in order, on the event loop; must not block.
        log: log every event through structlog (``True``: the ``"ontime"`` logger of the app's structlog
            configuration; a structlog logger: that one; ``False``: no logging).
        cancel_siblings: cancel the rest of a batch when one sample succeeds (else let them finish).
        rounds: synchronized rounds (the MCP paper's execution): ask the planner only once nothing is in
            flight, so a round lasts as long as its slowest batch; off, it is asked after every event that
            changes what is possible.
        charge_planner_time: advance the clock by the planner's wall time before each launch.
        output_token_cap: cap on total output tokens, reserved and settled like dollars.

    Raises:
        UsageError: bad input (spec, limits, planner, options), before any money is spent.
        RunError: a planner returned an invalid decision, or an invariant would have been broken.
    """
    executor, journal_sink = _setup(
        workflow,
        budget,
        deadline,
        journal=journal,
        on_event=on_event,
        log=log,
        planner=planner,
        seed=seed,
        clock=clock,
        speed=speed,
        cancel_siblings=cancel_siblings,
        rounds=rounds,
        charge_planner_time=charge_planner_time,
        output_token_cap=output_token_cap,
    )
    return await execute(executor, journal_sink)


def _setup(
    workflow: WorkflowLike,
    budget: float,
    deadline: float,
    *,
    journal: str | PathLike[str] | None,
    on_event: Callable[[Event], None] | None,
    log: bool | Any,
    **options: Any,
) -> tuple[Executor, JournalSink | None]:
    run_id = uuid.uuid4().hex[:12]
    sinks, journal_sink = user_sinks(run_id, log, on_event, journal)
    return prepare(workflow, budget, deadline, sinks=sinks, run_id=run_id, **options), journal_sink


async def execute(executor: Executor, journal_sink: JournalSink | None) -> RunResult:
    """Run a prepared executor: finalize its answer, then close its adapters and the journal."""
    try:
        return _finalize_answer(executor, await executor.run())
    finally:
        with anyio.CancelScope(shield=True):
            for adapter in dict.fromkeys(executor.adapters):
                await adapter.aclose()
        if journal_sink is not None:
            journal_sink.close()


def _finalize_answer(executor: Executor, result: RunResult) -> RunResult:
    """For a workflow with an ``answer`` subtask: run the risk-controlled finalizer over its output.

    The question is the subtask's prompt (its dependencies' outputs filled in) and the evidence is those
    outputs; nothing is called, so nothing is spent. Without such a subtask the result is unchanged.
    """
    subtasks = executor.subtasks or ()
    target = next((s for s in subtasks if s.answer), None)
    base = None if target is None else result.outputs.get(target.id)
    if target is None or base is None:
        return result
    from planners.finalizer import finalize
    from runtime._prompts import render
    from runtime._qa_types import Trace
    from tools.retrieval import Hit

    outputs = result.outputs
    deps = {d: outputs.get(d) for d in target.deps}
    messages = render(target, deps)
    trace = Trace(messages[-1].content if messages else target.id)
    for d, text in deps.items():
        if text:
            trace.evidence[d] = Hit(d, d, text, 1.0)
    fin = finalize(trace, base.strip())
    return dataclasses.replace(result, answer=fin.answer, base_answer=base)


def run(workflow: WorkflowLike, budget: float, deadline: float, **options: Any) -> RunResult:
    """Synchronous :func:`arun`: starts an event loop, runs the workflow, returns the result.

    Takes the same keyword options as :func:`arun`. Inside async code, await :func:`arun` instead.
    """
    return anyio.run(partial(arun, workflow, budget, deadline, **options))


async def stream(workflow: WorkflowLike, budget: float, deadline: float, **options: Any) -> AsyncIterator[Event]:
    """The events of a run as they happen; the last one is :class:`RunFinished`.

    Takes the same keyword options as :func:`arun` (except ``on_event``). If you may stop iterating
    early, wrap the call in ``contextlib.aclosing`` so the run is cancelled in the task that started it.
    """
    if "on_event" in options:
        raise UsageError("stream() delivers the events itself; on_event is not accepted here")
    send, receive = anyio.create_memory_object_stream[Event](math.inf)
    journal = options.pop("journal", None)
    log = options.pop("log", True)

    def deliver(event: Event) -> None:
        # If the consumer stopped listening, the run is being cancelled: drop the event.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            send.send_nowait(event)

    try:
        executor, journal_sink = _setup(
            workflow,
            budget,
            deadline,
            journal=journal,
            on_event=deliver,
            log=log,
            **options,
        )
    except BaseException:
        send.close()
        receive.close()
        raise

    async def produce() -> None:
        async with send:
            await execute(executor, journal_sink)

    with single_error():
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            try:
                async with receive:
                    async for event in receive:
                        yield event
            finally:
                tg.cancel_scope.cancel()  # the consumer stopped early: stop the run too
