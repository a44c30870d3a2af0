"""The public entry points. :func:`open_run` owns one run: its planner, clock, adapters, clients and sinks,
closed when its ``async with`` ends, on every path. :func:`arun`, :func:`run` (sync) and :func:`stream`
(the run's events as they happen) go through it.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from functools import partial
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack, cast, overload

import anyio
import anyio.to_thread
import sniffio

from adapters.chat_adapter import ChatAdapter
from adapters.endpoints import make_backend
from adapters.sim import SimAdapter
from planners import make_planner
from planners.finalizer import finalize
from runtime._compile import compile_notice
from runtime._executor import Executor, ExecutorOptions, Resumed, planner_threads
from runtime._program import Program, load_program
from runtime._prompts import render
from runtime._sinks import check_sinks, user_sinks
from runtime._spec import load_workflow, parse_workflow, validate_workflow
from runtime.types import (
    Adapter,
    Clock,
    Event,
    Hit,
    LimitError,
    ModelSpec,
    Planner,
    PlannerContext,
    ProfileTable,
    RealClock,
    Trace,
    UsageError,
    VirtualClock,
    Workflow,
    check_budget,
    check_limit,
)
from runtime.types._clock import single_error
from tools.verifiers import build_verifier

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from types import TracebackType

    from anyio.streams.memory import MemoryObjectReceiveStream
    from structlog.typing import FilteringBoundLogger

    from adapters.chat import ChatBackend
    from runtime._program import ProgramFn
    from runtime._program_run import ProgramOptions
    from runtime._result import RunResult


__all__ = [
    "DEFAULT_PLANNER",
    "EventStream",
    "PlanOptions",
    "Run",
    "RunOptions",
    "RunSetup",
    "arun",
    "check_plan_options",
    "open_run",
    "open_setup",
    "run",
    "stream",
]

DEFAULT_PLANNER = "mcp"

WorkflowLike = Workflow | str | PathLike[str] | Mapping[str, Any]  # a spec's decoded data too
ClockLike = Literal["virtual", "real"] | Clock


class PlanOptions(TypedDict, total=False):
    """What decides how a run unfolds: the options :func:`runtime.evaluate` and :func:`runtime.predict` take."""

    planner: str | Planner | None
    cancel_siblings: bool
    rounds: bool
    charge_planner_time: bool
    output_token_cap: int | None


class RunBasics(TypedDict, total=False):
    """The options every kind of run takes (:func:`open_run` documents each one)."""

    seed: int
    clock: ClockLike | None
    speed: float
    journal: str | PathLike[str] | None
    on_event: Callable[[Event], None] | None
    log: bool | FilteringBoundLogger
    adapters: Mapping[str, Adapter]
    run_id: str


class RunOptions(PlanOptions, RunBasics, total=False):
    """How a run is carried out. Every key is optional; :func:`open_run` documents each one."""

    table: ProfileTable


class RunSetup:
    """A run's inputs, checked (raises :class:`UsageError`) without building anything that holds a resource,
    with what can be derived from them without I/O."""

    __slots__ = ("budget_pusd", "deadline_s", "options", "seed", "table", "workflow")

    def __init__(self, workflow: WorkflowLike, budget: float, deadline: float, options: RunOptions) -> None:
        check_option_names(options, RunOptions.__annotations__)
        self.workflow = _workflow(workflow)
        self.budget_pusd = check_budget(budget)
        check_limit("deadline", deadline)
        self.deadline_s = float(deadline)
        self.options = options
        self.seed = check_run_options(options)
        for name in ("cancel_siblings", "rounds", "charge_planner_time"):
            if not isinstance(options.get(name, False), bool):
                raise UsageError(f"{name} must be True or False, not {options.get(name)!r}")
        planner = options.get("planner")
        if planner is not None and not isinstance(planner, str | Planner):
            raise UsageError(f"planner must be a spec string or a Planner, not {planner!r}")
        given = options.get("adapters", {})
        self.clock()  # rejects a bad clock or speed now; the run makes its own when it starts
        wf = self.workflow
        unknown = [m for m in given if m not in wf.models]
        if unknown:
            raise UsageError(f"adapters: {unknown[0]!r} is not a model of workflow {wf.name!r}")
        real = [m for m in wf.real_models if m not in given]
        for s in wf.subtasks:
            if s.prompt is None and any(m in real for m in s.profiles):
                raise UsageError(f"subtask {s.id!r} may run on a real model but has no prompt")
        table = options.get("table")
        self.table = table if table is not None else ProfileTable.from_workflow(wf)
        shape = (wf.subtask_ids, tuple(wf.models))
        if not isinstance(self.table, ProfileTable) or (self.table.subtask_ids, self.table.model_names) != shape:
            raise UsageError(f"table must be the ProfileTable of workflow {wf.name!r}")

    def clock(self) -> Clock:
        """The run's clock: virtual when every model is simulated, real (at speed 1) when any is not."""
        return make_clock(self.options, self.workflow.real_models)

    def planner(self, table: ProfileTable | None = None) -> Planner:
        """The run's planner: the instance given, or a fresh one from its spec (which may simulate to choose),
        on ``table`` (default: the workflow's)."""
        given = self.options.get("planner")
        if isinstance(given, Planner):
            return given
        ctx = PlannerContext(table or self.table, self.budget_pusd, self.deadline_s, self.seed)
        return make_planner(given or DEFAULT_PLANNER, ctx)


def check_option_names(options: Mapping[str, Any], known: Mapping[str, Any]) -> None:
    """Raise :class:`UsageError` for an option not among ``known`` (a TypedDict's annotations)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UsageError(f"unknown run option {unknown[0]!r} (options: {', '.join(known)})")


def check_run_options(options: Mapping[str, Any]) -> int:
    """Check the options every kind of run takes (``seed``, ``output_token_cap``, the sinks, ``run_id``,
    ``adapters``) and return the seed; raise :class:`UsageError` for a bad one, before anything is opened."""
    seed = check_seed(options.get("seed", 0))
    cap = options.get("output_token_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 2**53):
        raise LimitError(f"output_token_cap must be a positive integer up to 2**53, not {cap!r}")
    check_sinks(options.get("log", False), options.get("on_event"), options.get("journal"))
    run_id = options.get("run_id")
    if run_id is not None and not (isinstance(run_id, str) and run_id):
        raise UsageError(f"run_id must be a non-empty string, not {run_id!r}")
    given = options.get("adapters", {})
    if not isinstance(given, Mapping) or not all(isinstance(a, Adapter) for a in given.values()):
        raise UsageError(f"adapters must map model names to runtime.Adapter objects, not {given!r}")
    return seed


def make_clock(options: Mapping[str, Any], models: Mapping[str, ModelSpec]) -> Clock:
    """The clock ``options`` ask for (``clock``, ``speed``): by default virtual when every model is simulated
    (by the built-in backend or an adapter given in ``adapters`` that says it is), real when any is not; a real
    endpoint among ``models`` that no given adapter replaces requires the real clock at speed 1.

    Raises:
        UsageError: a bad clock or speed, or one a real endpoint cannot run on.
    """
    clock, speed = options.get("clock"), options.get("speed", 1.0)
    check_limit("speed", speed)
    if not 1e-3 <= speed <= 1e6:
        raise UsageError(f"speed must be between 0.001 and 1,000,000, not {speed!r}")
    if speed != 1.0 and clock != "real":
        raise UsageError(f"speed sets the pace of the real clock (clock='real'), not of clock={clock!r}")
    given = options.get("adapters", {})
    real = [name for name, m in models.items() if m.endpoint is not None and name not in given]
    wall = clock is None or clock == "real" or (isinstance(clock, RealClock) and clock.speed == 1.0)
    if real and (not wall or speed != 1.0):  # a Clock of one's own included: the deadline must be wall time
        raise UsageError(
            f"model {real[0]!r} is a real endpoint: its run needs the real clock at speed 1, "
            f"not clock={clock!r}, speed={speed!r}"
        )
    if isinstance(clock, Clock):
        return clock
    if clock is None:  # an adapter of one's own may do real I/O, which virtual time would not wait for
        clock = "real" if real or any(not a.simulated for a in given.values()) else "virtual"
    if clock == "virtual":
        return VirtualClock()
    if clock == "real":
        return RealClock(speed)
    raise UsageError(f"clock must be 'virtual', 'real' or a Clock, not {clock!r}")


def open_backends(
    stack: AsyncExitStack, models: Mapping[str, ModelSpec], given: Mapping[str, Adapter]
) -> dict[str, ChatBackend]:
    """A backend for every real model no given adapter replaces, closed by ``stack`` (also when a later one
    fails to open)."""
    backends: dict[str, ChatBackend] = {}
    stack.push_async_callback(_aclose, backends.values())
    for name, model in models.items():
        if model.endpoint is not None and name not in given:
            backends[name] = make_backend(model)
    return backends


def _workflow(workflow: WorkflowLike) -> Workflow:
    """A workflow checked and in topological order: as given, from a spec's decoded data, or from its file."""
    if isinstance(workflow, Workflow):
        return validate_workflow(workflow)
    if isinstance(workflow, Mapping):
        return parse_workflow(workflow)
    if isinstance(workflow, str | PathLike):
        return load_workflow(workflow)
    raise UsageError(f"workflow must be a Workflow, a spec's data or a spec file's path, not {workflow!r}")


def check_plan_options(options: PlanOptions, who: str, *, instance: bool = False) -> None:
    """Refuse what a caller of many runs (``who``) cannot take: callbacks, files, clocks, backends, and
    unless ``instance``, a planner instance (each run through the executor needs a fresh one)."""
    extra = sorted(set(options) - set(PlanOptions.__annotations__))
    if extra:
        raise UsageError(f"{who} cannot take {extra[0]!r} (it takes {', '.join(PlanOptions.__annotations__)})")
    if not instance and isinstance(options.get("planner"), Planner):
        raise UsageError(f"{who} builds a fresh planner for every run: give the planner as a spec string")


class Run:
    """One run, opened by :func:`open_run`: call :meth:`execute` once, inside the ``async with``."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._started = False
        self._closed = False

    @property
    def run_id(self) -> str:
        return self._executor.run_id

    @property
    def planner(self) -> Planner:
        return self._executor.planner

    @property
    def workflow(self) -> Workflow:
        return self._executor.workflow

    def interrupt(self) -> None:
        """Stop the run now, from a task of its event loop (a signal handler, a shutdown hook): every sample is
        cancelled and settled, and :meth:`execute` returns a result whose reason is ``interrupted``."""
        self._executor.interrupt()

    async def execute(self) -> RunResult:
        """Run the workflow to its end and return how it went (see :func:`open_run` for what it raises)."""
        if self._closed:
            raise UsageError("this run is closed: execute it inside its `async with runtime.open_run(...)`")
        if self._started:
            raise UsageError("a run executes once; open another with runtime.open_run")
        self._started = True
        return _finalize_answer(self._executor.workflow, await self._executor.run())


@asynccontextmanager
async def open_run(
    workflow: WorkflowLike, budget: float, deadline: float, **options: Unpack[RunOptions]
) -> AsyncIterator[Run]:
    """Check a run's inputs and open what it needs; leaving the ``async with`` closes all of it.

        async with runtime.open_run(wf, budget=1.00, deadline=600) as run:
            result = await run.execute()

    Args:
        workflow: a :class:`Workflow` (checked and put in topological order here) or a spec file's path.
        budget: hard cap on US dollars spent, at most :data:`runtime.MAX_BUDGET_USD`; never exceeded (the
            worst case of every batch is reserved first).
        deadline: seconds from the start; no attempt starts after it and in-flight work is cancelled at it.
        options: how to carry the run out (:class:`RunOptions`), all optional:

            - ``planner``: a planner spec (default ``"mcp"``; README "Planners") or a :class:`Planner`.
            - ``seed`` (0): seeds the simulated backend and the planner; same seed on a virtual clock, same run.
            - ``clock``: ``"virtual"`` (discrete-event time), ``"real"``, or a :class:`Clock`; default virtual
              when every model is simulated, real when any model is a real endpoint (which requires it).
            - ``speed`` (1.0): with the real clock, clock seconds per wall second (replays a simulated run
              faster).
            - ``journal``: a path to write every event to, one JSON object per line.
            - ``on_event``: called with every event, in order, on the event loop; must not block.
            - ``log`` (False): also log every event through structlog (True: the ``"ontime"`` logger of the
              app's structlog configuration; or the logger to use).
            - ``cancel_siblings`` (True): cancel the rest of a batch when one sample succeeds.
            - ``rounds`` (False): synchronized rounds (the MCP paper's execution): ask the planner only once
              nothing is in flight.
            - ``charge_planner_time`` (False): advance the clock by the planner's wall time before each launch.
            - ``output_token_cap``: a cap on total output tokens, reserved and settled like dollars.
            - ``adapters``: backends to use for some models (by name) instead of the built-in ones; the run
              does not close them, and runs on the real clock unless each says it is ``simulated``.
            - ``table``: the workflow's :class:`ProfileTable`, for a caller that builds it once for many runs.
            - ``run_id``: the id events carry (default: a fresh random one).

    Raises:
        UsageError: bad input (spec, limits, planner, options), before anything is spent.
        ProviderRejectedError: from ``execute``, when an endpoint refused the key, the permission or the model.
        RunError: from ``execute``, when a planner returned an invalid decision or an invariant would break.
    """
    async with open_setup(RunSetup(workflow, budget, deadline, options)) as run:
        yield run


@asynccontextmanager
async def open_setup(setup: RunSetup, resumed: Resumed | None = None) -> AsyncIterator[Run]:
    """:func:`open_run` of checked inputs; ``resumed``: start where a crashed run stopped (:func:`runtime.resume`)."""
    wf, table, options = setup.workflow, setup.table, setup.options
    run_id = options.get("run_id") or uuid.uuid4().hex[:12]
    async with AsyncExitStack() as stack:
        stack.enter_context(compile_notice())  # a first use on this machine compiles the planner's kernels
        # Building a planner may take a while (best-retry simulates to choose): not on the event loop.
        planner = await anyio.to_thread.run_sync(setup.planner, limiter=planner_threads())
        clock = setup.clock()
        given = options.get("adapters", {})
        backends = open_backends(stack, wf.models, given)
        sim = SimAdapter(table, clock, setup.seed)
        adapters = [given[name] if name in given else _adapter(wf, name, backends, sim) for name in table.model_names]
        verifiers = [
            None if s.verifier is None else build_verifier(s.verifier, dict(wf.models), backends) for s in wf.subtasks
        ]
        # The journal is opened last: input refused above leaves no file behind to block the corrected run.
        emit, close_journal = user_sinks(run_id, options.get("log", False), options.get("on_event"),
                                         options.get("journal"))  # fmt: skip
        stack.callback(close_journal)
        executor = Executor(
            workflow=wf,
            table=table,
            planner=planner,
            adapters=adapters,
            verifiers=verifiers,
            clock=clock,
            budget_pusd=setup.budget_pusd,
            deadline_s=setup.deadline_s,
            seed=setup.seed,
            run_id=run_id,
            emit=emit,
            options=ExecutorOptions(
                cancel_siblings=options.get("cancel_siblings", True),
                charge_planner_time=options.get("charge_planner_time", False),
                output_token_cap=options.get("output_token_cap"),
                rounds=options.get("rounds", False),
            ),
            replanner=None if isinstance(options.get("planner"), Planner) else setup.planner,
            resumed=resumed,
        )
        run = Run(executor)
        try:
            yield run
        finally:
            run._closed = True


def _adapter(wf: Workflow, name: str, backends: Mapping[str, ChatBackend], sim: SimAdapter) -> Adapter:
    endpoint = wf.models[name].endpoint
    if endpoint is None:
        return sim
    return ChatAdapter(backends[name], endpoint.model, temperature=endpoint.temperature)


async def _aclose(backends: Iterable[ChatBackend]) -> None:
    """Close every backend, even when one fails to (its error goes on once all are closed)."""
    with anyio.CancelScope(shield=True):
        async with AsyncExitStack() as stack:
            for backend in backends:
                stack.push_async_callback(backend.aclose)


def _finalize_answer(wf: Workflow, result: RunResult) -> RunResult:
    """Run the risk-controlled finalizer over the ``answer`` subtask's output, if any: the question is its
    prompt, the evidence its dependencies' outputs; nothing is called, so nothing is spent."""
    target = next((s for s in wf.subtasks if s.answer), None)
    base = None if target is None else result.outputs.get(target.id)
    if target is None or base is None:
        return result
    deps = {d: result.outputs.get(d) for d in target.deps}
    messages = render(target, deps)
    trace = Trace(messages[-1].content if messages else target.id)
    for d, text in deps.items():
        if text:
            trace.evidence[d] = Hit(d, d, text, 1.0)
    fin = finalize(trace, base.strip())
    return dataclasses.replace(result, answer=fin.answer, base_answer=base)


@overload
async def arun(
    workflow: Program | ProgramFn, budget: float, deadline: float, **options: Unpack[ProgramOptions]
) -> RunResult: ...
@overload
async def arun(workflow: WorkflowLike, budget: float, deadline: float, **options: Unpack[RunOptions]) -> RunResult: ...
async def arun(workflow: Any, budget: float, deadline: float, **options: Any) -> RunResult:
    """Run a workflow within ``budget`` US dollars and ``deadline`` seconds; return how it went.

    A workflow is a DAG (takes the options of :func:`open_run`, and raises what it raises) or a program
    (a :class:`runtime.Program`, a program file's path (``.py``, run in the sandbox), or an
    ``async def workflow(problem: str) -> str`` of one's own), whose
    :func:`runtime.call_llm` calls each run as one batch under the budget and the deadline. A program's answer
    is ``result.answer`` (and ``result.outputs["answer"]``); the run succeeds when the program returns text in
    time, and when it raises, ``detail`` holds its error and ``reason`` the cause where one fits (``budget`` for
    an :class:`OverBudgetError` it let through, ``deadline``, ``provider_rejected``, ``unreachable``, else
    ``error``). A program takes these options (:class:`ProgramOptions`), all optional:

        - ``input``: the problem it is called with (default: the program's ``EXAMPLE``).
        - ``tests``: the problem's public tests, which :func:`runtime.exec_code` runs by default.
        - ``models``: the models it may call, a workflow spec's ``"models"`` block (default: the program's
          ``MODELS``). A simulated model (``provider: sim``) needs an adapter in ``adapters``, which gives text.
        - ``clock``, ``speed``, ``journal``, ``on_event``, ``log``, ``adapters``, ``output_token_cap`` and
          ``run_id``, as :func:`open_run` documents them; ``seed`` is only recorded (the adapters given carry
          their own).

    Raises:
        UsageError: bad input (program, models, limits, options), before anything is spent.
        RunError: ontime, an adapter or a sink failed while the program ran (the program's own errors are
            results).
    """
    if isinstance(workflow, str | PathLike) and str(workflow).endswith(".py"):
        workflow = load_program(workflow)
    if isinstance(workflow, Program) or callable(workflow):  # a function that is not async is refused there
        from runtime._program_run import execute_program  # it builds on this module

        return await execute_program(workflow, budget, deadline, cast("ProgramOptions", options))
    async with open_run(workflow, budget, deadline, **options) as r:
        return await r.execute()


@overload
def run(
    workflow: Program | ProgramFn, budget: float, deadline: float, **options: Unpack[ProgramOptions]
) -> RunResult: ...
@overload
def run(workflow: WorkflowLike, budget: float, deadline: float, **options: Unpack[RunOptions]) -> RunResult: ...
def run(workflow: Any, budget: float, deadline: float, **options: Any) -> RunResult:
    """Synchronous :func:`arun`: starts an event loop, runs the workflow or program, returns the result.

    Raises:
        UsageError: called where an event loop is already running (Jupyter, async code): await
            :func:`arun` there instead. And what :func:`arun` raises.
    """
    refuse_inside_event_loop("runtime.run()", "await runtime.arun(...)")
    return anyio.run(partial(arun, workflow, budget, deadline, **options))


def check_seed(seed: object) -> int:
    """``seed``, or :class:`UsageError` unless it is an integer in 0..2**62 (what the simulations mix)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62:
        raise UsageError(f"seed must be an integer in 0..2**62, not {seed!r}")
    return seed


def refuse_inside_event_loop(what: str, instead: str) -> None:
    """Raise a :class:`UsageError` if an event loop is running in this thread (a sync entry point would fail)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return
    raise UsageError(f"{what} cannot run inside a running {library} event loop (Jupyter, async code): use {instead}")


def stream(workflow: WorkflowLike, budget: float, deadline: float, **options: Unpack[RunOptions]) -> EventStream:
    """The events of a run as they happen, the last one :class:`RunFinished`::

        async with runtime.stream(wf, budget=1.00, deadline=600) as events:
            async for event in events:
                ...

    Leaving the ``async with`` early (a ``break``, an exception) stops the run in the task that started it:
    everything in flight is cancelled and settled, and ``RunFinished`` says ``cancelled``. Takes the options
    of :func:`open_run`; ``on_event``, if given, sees every event too.
    """
    return EventStream(workflow, budget, deadline, options)


class EventStream:
    """A run's events; an async context manager over them (see :func:`stream`). An error that ends the run
    is raised when the ``async with`` is left, after every event before it has been delivered."""

    def __init__(self, workflow: WorkflowLike, budget: float, deadline: float, options: RunOptions) -> None:
        self._workflow, self._budget, self._deadline = workflow, budget, deadline
        self._options = options
        self._stack: AsyncExitStack | None = None
        self._entered = False
        self._error: Exception | None = None

    def __aiter__(self) -> EventStream:
        raise UsageError("iterate a run's events inside `async with runtime.stream(...) as events:`")

    async def __aenter__(self) -> MemoryObjectReceiveStream[Event]:
        if self._entered:
            raise UsageError("a stream is read once; call runtime.stream again for another run")
        self._entered = True
        user = self._options.get("on_event")
        send, receive = anyio.create_memory_object_stream[Event](math.inf)

        def deliver(event: Event) -> None:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):  # the consumer has left
                send.send_nowait(event)
            if user is not None:  # after the stream has it: an error here must not take the event from it
                user(event)

        async with AsyncExitStack() as stack:
            stack.enter_context(single_error())
            stack.enter_context(send)
            stack.enter_context(receive)
            options: RunOptions = {**self._options, "on_event": deliver}
            r = await stack.enter_async_context(open_run(self._workflow, self._budget, self._deadline, **options))
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)  # leaving early stops the run

            async def produce() -> None:
                with send:
                    try:
                        await r.execute()
                    except Exception as exc:  # raised on leaving, once the consumer has every event
                        self._error = exc

            tg.start_soon(produce)
            self._stack = stack.pop_all()
        return receive

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self._stack is None:
            raise UsageError("a stream is left only after it was entered")
        stack, self._stack = self._stack, None
        suppressed = bool(await stack.__aexit__(exc_type, exc, tb))
        if self._error is not None and exc is None:
            raise self._error
        return suppressed
