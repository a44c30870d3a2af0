"""Running a :class:`runtime.Program`: every ``call_llm`` is one gathered batch under the run's ledger and clock.

A call reserves its worst case (n x (input tokens x input price + max_tokens x output price)) before it launches,
or raises :class:`OverBudgetError` inside the program, which may catch it and answer with what it has; each
sample settles what it used when it ends and releases the rest of its share. After the deadline a call raises
:class:`PastDeadlineError`; at the deadline the program is cancelled, and so is every sample in flight, each
charged what it used. The run, not the caller, owns each call's samples: whatever the program leaves running when
it ends is cancelled and settled the same way before ``RunFinished``, and a call after that is refused. The events
are the DAG executor's (``RunStarted`` ... ``RunFinished``; a call's ``subtask`` is its tag, or ``call-<n>``), so
the journal, the log and :func:`runtime.replay_ledger` work alike.

How a program's run keeps virtual time honest: :mod:`runtime._program_clock`.
"""

from __future__ import annotations

import math
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from adapters.chat import input_token_bound
from adapters.chat_adapter import ChatAdapter
from runtime._api import RunBasics, check_option_names, check_run_options, make_clock, open_backends
from runtime._executor import check_end, run_adapter, run_result, sink_failure
from runtime._ledger import Ledger, Usage
from runtime._program import _CURRENT, Program, parse_models
from runtime._program_clock import Hold, Quiet
from runtime._result import SubtaskOutcome
from runtime._sinks import user_sinks
from runtime.types import (
    Adapter,
    Batch,
    BatchLaunched,
    BudgetReserved,
    BudgetSettled,
    CallRefusedError,
    CallResult,
    DeadlineHit,
    Finish,
    InvariantError,
    LaunchRejected,
    LLMCall,
    Message,
    OverBudgetError,
    PastDeadlineError,
    Reason,
    RunFinished,
    RunStarted,
    SampleEnd,
    SampleFinished,
    SampleStatus,
    UsageError,
    check_budget,
    check_limit,
    price_per_token_pusd,
    to_usd,
)
from runtime.types._clock import _leaves, single_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from anyio.abc import TaskGroup

    from adapters.chat import ChatBackend
    from runtime._program import ProgramFn
    from runtime._result import RunResult
    from runtime.types import Clock, Event, ModelSpec
    from runtime.types._clock import Inbox
    from tools.program_sandbox import ProgramOutcome
    from tools.sandbox import Limits

__all__ = ["ProgramOptions", "ProgramRun", "execute_program"]


class ProgramOptions(RunBasics, total=False):
    """How a program runs; every key is optional (:func:`runtime.run` documents each one)."""

    input: str
    tests: str | None
    models: Mapping[str, Any]
    output_token_cap: int | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How the program ended: its answer, or why it has none."""

    value: str | None
    reason: Reason | None = None
    detail: str | None = None


_REASONS = {
    "OverBudgetError": Reason.BUDGET,
    "PastDeadlineError": Reason.DEADLINE,
    "ProviderRejectedError": Reason.PROVIDER_REJECTED,
    "ProviderUnavailableError": Reason.UNREACHABLE,
}


def _failed(names: Iterable[str], detail: str) -> _Outcome:
    """A program that raised: the reason its error's class (or a base of it) names, else ``error``."""
    return _Outcome(None, next((_REASONS[n] for n in names if n in _REASONS), Reason.ERROR), detail)


def _raised(exc: BaseException) -> _Outcome:
    """A program that raised (errors of its task groups: the reason they all share, else ``error``)."""
    leaves = _leaves(exc)
    reasons = {_failed([c.__name__ for c in type(leaf).__mro__], "").reason for leaf in leaves}
    detail = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
    return _Outcome(None, reasons.pop() if len(reasons) == 1 else Reason.ERROR, detail)


class ProgramRun:
    """One program's run: what :func:`runtime.current_run` returns inside it. Built by :func:`runtime.run`."""

    def __init__(
        self,
        *,
        name: str,
        models: Mapping[str, ModelSpec],
        default_model: str | None,
        adapters: Mapping[str, Adapter],
        backends: Mapping[str, ChatBackend],
        clock: Clock,
        budget_pusd: int,
        deadline_s: float,
        seed: int,
        run_id: str,
        emit: Callable[[Event], None],
        tests: str | None = None,
        output_token_cap: int | None = None,
    ) -> None:
        self.name = name
        self.models = models
        self.default_model = default_model
        self.clock = clock
        self.deadline_s = deadline_s
        self.seed = seed
        self.run_id = run_id
        self.tests = tests
        self.ledger = Ledger(budget_pusd, output_token_cap=output_token_cap)
        self._adapters = adapters
        self._backends = backends
        self._sinks = emit
        self._columns = {m: j for j, m in enumerate(models)}
        self._calls = self._batches = self._samples = self._open = 0
        self._used: dict[str, None] = {}  # the models launched on, in order
        self._t0 = self._deadline = 0.0
        self._stopped = False  # the deadline passed, or the run is ending: nothing more starts
        self._over = False  # the program has returned (or the run is ending): a call now is refused, unrecorded
        self._bug: BaseException | None = None  # ontime, an adapter or a sink failed: the run stops, this goes on
        self._tg: TaskGroup | None = None  # the run's tasks, the launches of every call among them
        self._ends: Inbox[Callable[[], None]] = clock.inbox()  # the settlements of samples that ended
        self._quiet = Quiet(clock)
        self._freed = anyio.Event()  # set (and replaced) whenever a settlement releases part of a reservation

    # -- what a program calls -----------------------------------------------------------------------------

    def remaining(self) -> tuple[float, float]:
        """What is left: US dollars not spent or held for calls in flight, and seconds to the deadline."""
        return to_usd(self.ledger.available.pusd), max(0.0, self._deadline - self.clock.now())

    def _may_fit(self, amount: Usage) -> bool:
        """Whether ``amount`` fits once the calls in flight have settled (it fits in what is not spent)."""
        return self.ledger.reserved != Usage() and amount.fits_in(self.ledger.available + self.ledger.reserved)

    async def call(self, request: LLMCall, *, wait: bool = False) -> CallResult:
        """Run one ``call_llm`` request as a batch of ``request.n`` samples, all of them awaited (a gathered
        batch); :func:`runtime.call_llm` documents what it returns and raises. A request's ``max_tokens`` is
        capped at its model's ``max_output_tokens``; its temperature reaches chat endpoints (an adapter given to
        the run sees only the :class:`runtime.Batch`, which has none).

        With ``wait``, a call whose worst case does not fit now but would once the calls in flight have settled
        waits for them rather than being refused (many concurrent callers sharing one budget, as a search's
        evaluations do); it is refused only when it cannot fit in what is not spent.

        A refused call does not hold the virtual clock (it did nothing), so time moves on under a program that
        retries a refused call in a loop until the calls in flight free the money; such a program should rather
        use ``wait=True``, which sleeps until a settlement frees money instead of spinning."""
        await anyio.lowlevel.checkpoint_if_cancelled()  # a call in a cancelled scope neither launches nor costs
        if not isinstance(request, LLMCall):
            raise UsageError(f"call takes a runtime.types.LLMCall, not {type(request).__name__}")
        name = request.model or self.default_model
        if name is None:
            raise UsageError(f"call_llm: name a model (the program has no DEFAULT_MODEL); models: {self._names()}")
        spec = self.models.get(name)
        if spec is None:
            raise UsageError(f"call_llm: unknown model {name!r}; models: {self._names()}")
        self._calls += 1
        n, tag = request.n, request.tag or f"call-{self._calls}"
        max_tokens = min(request.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
        self._check_open(f"call_llm ({tag})", LaunchRejected(t=self._elapsed(), subtask=tag, model=name, k=n,
                                                              reason=Reason.DEADLINE))  # fmt: skip
        system = (Message("system", request.system),) if request.system else ()
        messages = (*system, Message("user", request.prompt))
        adapter = self._adapter(name, request.temperature)
        input_tokens = adapter.input_tokens(input_token_bound(messages), messages)
        if not (isinstance(input_tokens, int) and input_tokens >= 0):
            raise InvariantError(f"{type(adapter).__name__}.input_tokens gave {input_tokens!r}, not a count")
        in_price = price_per_token_pusd(spec.input_price_per_mtok)
        out_price = price_per_token_pusd(spec.output_price_per_mtok)
        share = Usage(input_tokens * in_price + max_tokens * out_price, max_tokens)
        res = self.ledger.reserve(share * n)
        while res is None and wait and self._may_fit(share * n):
            await self._freed.wait()
            self._check_open(f"call_llm ({tag})", LaunchRejected(t=self._elapsed(), subtask=tag, model=name, k=n,
                                                                  reason=Reason.DEADLINE))  # fmt: skip
            res = self.ledger.reserve(share * n)
        if res is None:
            self._emit(LaunchRejected(t=self._elapsed(), subtask=tag, model=name, k=n, reason=Reason.BUDGET))
            left = self.ledger.available
            why = f"cost ${to_usd(share.pusd * n):.6f}; ${to_usd(left.pusd):.6f} is left"
            if share.pusd * n <= left.pusd:  # the output-token cap, not the money, is what it would break
                why = f"use them all; {left.output_tokens} are left under the output_token_cap"
            raise OverBudgetError(f"call_llm ({tag}): {n} x {max_tokens} output tokens on {name!r} may {why}")
        self._quiet.touch()  # the program acted: hold the clock until it is quiet again (a refusal holds nothing)
        self._batches += 1
        self._samples += n
        self._used.setdefault(name)
        self._open += n
        rel = self._elapsed()
        self._emit(BudgetReserved(t=rel, reservation=res.id, batch=self._batches, pusd=res.held.pusd,
                                  output_tokens=res.held.output_tokens))  # fmt: skip
        self._emit(BatchLaunched(t=rel, batch=self._batches, subtask=tag, model=name, k=n, max_tokens=max_tokens))
        batch = Batch(id=self._batches, subtask=0, tag=tag, model=self._columns[name], k=n, max_tokens=max_tokens,
                      input_tokens=input_tokens, messages=messages, deadline=self.clock.wall_time_of(self._deadline),
                      run=self.run_id)  # fmt: skip
        started = self.clock.now()
        ends: list[SampleEnd | None] = [None] * n
        reported = [False] * n

        settled = anyio.Event()
        unsettled = [n]

        def report(end: SampleEnd) -> None:
            check_end(adapter, batch.id, n, input_tokens, max_tokens, reported, end)
            ends[end.index] = end
            # Settled in (batch, sample) order among the ends of one instant, not in the order the scheduler woke
            # their tasks (samples a task group cancels at once): the same seed gives the same events.
            self._ends.put(partial(settle, end), (batch.id, end.index))

        def settle(end: SampleEnd) -> None:
            self._open -= 1
            unsettled[0] -= 1
            if not unsettled[0]:
                settled.set()
            cost = end.input_tokens * in_price + end.output_tokens * out_price
            released = self.ledger.settle(res, Usage(cost, end.output_tokens), share)
            freed, self._freed = self._freed, anyio.Event()
            freed.set()
            t = self._elapsed()
            error = None if end.error is None else f"{type(end.error).__name__}: {end.error}"
            self._emit(SampleFinished(t=t, batch=batch.id, sample=end.index, subtask=tag, model=name,
                                      status=_STATUS[end.finish], input_tokens=end.input_tokens,
                                      output_tokens=end.output_tokens, latency_s=self.clock.now() - started,
                                      error=error))  # fmt: skip
            self._emit(BudgetSettled(t=t, reservation=res.id, batch=batch.id, sample=end.index, pusd=cost,
                                     output_tokens=end.output_tokens, released_pusd=released.pusd,
                                     released_output_tokens=released.output_tokens))  # fmt: skip

        ended = anyio.Event()

        async def launch() -> None:
            try:
                await run_adapter(adapter, batch, reported, report)
            except Exception as exc:  # a bug in an adapter, or a sample end the ledger refused: the run stops
                self._fail(exc)
                raise
            finally:  # the program acts on the answers at this instant: hold the clock before this task leaves it
                self._quiet.touch()
                ended.set()

        # The run owns the launch, not the caller: a call the program leaves running when it ends is cancelled
        # and settled with the run's other work, before RunFinished.
        assert self._tg is not None  # a call reaches here only while the run's task group is open
        handle = self.clock.spawn(self._tg, launch, name=f"{tag}#{batch.id}")
        try:
            await settled.wait()
        except BaseException:  # the caller was cancelled: so are its samples, each reported with what it used
            handle.cancel()
            with anyio.CancelScope(shield=True):
                await ended.wait()
            raise
        done = [e for e in ends if e is not None]
        outputs = tuple(e.output or "" for e in done if e.finish in (Finish.COMPLETE, Finish.CUT_OFF))
        errors = [e.error for e in done if e.error is not None]
        if not outputs and errors:
            raise errors[0]
        return CallResult(
            outputs,
            sum(e.input_tokens * in_price + e.output_tokens * out_price for e in done),
            sum(e.input_tokens for e in done),
            sum(e.output_tokens for e in done),
        )

    async def exec_code(self, solution: str, tests: str | None = None) -> str | list[dict[str, Any]] | dict[str, str]:
        """Run ``solution`` against ``tests`` (default: the run's ``tests``) in the code sandbox, as
        :func:`runtime.exec_code` documents; the virtual clock stands still while it runs, the deadline stops it."""
        from tools.sandbox import arun_tests

        tests = self.tests if tests is None else tests
        if tests is None:
            raise UsageError("exec_code: give the tests (this run was given none: runtime.run(..., tests=...))")
        if not isinstance(solution, str) or not isinstance(tests, str):
            raise UsageError("exec_code: the solution and the tests are code (strings)")
        self._check_open("exec_code")
        self._quiet.touch()  # after the checks: a refusal holds no virtual time
        with self.clock.participate():
            try:
                result = await arun_tests(solution, tests)
            finally:
                self._quiet.touch()
        return result.to_exec_code()

    async def run_source(
        self,
        source: str,
        inputs: Sequence[str],
        *,
        tests: Sequence[str | None] | None = None,
        wait: bool = False,
        on_call: Callable[[int, CallResult | CallRefusedError], None] | None = None,
        limits: Limits | None = None,
    ) -> list[ProgramOutcome]:
        """Run model-written program text on each of ``inputs`` in the sandbox, its ``call_llm`` and ``exec_code``
        requests carried out by this run (its ledger, clock and events); one outcome per input, in order.

        Args:
            source: the program (the format of :meth:`runtime.Program.from_source`; its ``MODELS`` are not used:
                calls are priced by this run's models, and its ``DEFAULT_MODEL`` is used if this run has it).
            inputs: the problems to call its ``workflow`` with.
            tests: per input, the public tests its ``exec_code`` defaults to (default: the run's ``tests``).
            wait: its calls wait for money held by calls in flight rather than being refused (:meth:`call`).
            on_call: told, per input, what each of its calls cost, or the refusal it met (to account per problem).
            limits: the child's (:class:`tools.sandbox.Limits`; its wall time includes the calls it waits on);
                default the sandbox's, with wall time up to the deadline on a clock that follows the wall.

        A source that is not a program is an error outcome for every input, and nothing runs. Cancelling this
        (the deadline) kills the child and everything it started. On the virtual clock, time stands still while
        the child computes with no call outstanding: its wall limit, not the deadline, stops one that never
        calls again.
        """
        from tools.program_sandbox import ProgramOutcome, arun_program
        from tools.sandbox import Limits

        if tests is not None and len(tests) != len(inputs):
            raise UsageError(f"run_source: {len(tests)} tests for {len(inputs)} inputs")
        try:
            default = Program.from_source(source).default_model
        except UsageError as exc:
            return [ProgramOutcome(None, f"{type(exc).__name__}: {exc}", 0.0) for _ in inputs]

        async def handle(i: int, op: str, payload: Mapping[str, Any]) -> Any:
            if op == "call_llm":
                request = LLMCall.from_json(payload)
                if request.model is None and default in self.models:
                    request = replace(request, model=default)
                try:
                    result = await self.call(request, wait=wait)
                except CallRefusedError as exc:
                    if on_call is not None:
                        on_call(i, exc)
                    raise
                if on_call is not None:
                    on_call(i, result)
                return list(result.outputs)
            if op == "exec_code":
                given = payload.get("tests")
                solution = payload.get("solution", "")
                return await self.exec_code(solution, tests[i] if given is None and tests else given)
            raise UsageError(f"unknown request {op!r} from a sandboxed program")

        computing = Hold(self.clock)  # held while none of the child's requests is outstanding
        outstanding = 0

        async def counted(i: int, op: str, payload: Mapping[str, Any]) -> Any:
            nonlocal outstanding
            outstanding += 1
            self._quiet.touch()  # before the child's share is given back: time must not move on in between
            computing.give()
            try:
                return await handle(i, op, payload)
            finally:
                outstanding -= 1
                if not outstanding:
                    computing.take()

        if limits is None:
            limits = Limits()
            if self.clock.wall_time_of(0.0) is not None:  # the deadline, not the sandbox, says when to stop
                limits = replace(limits, wall_s=max(limits.wall_s, self.remaining()[1] + 1.0))
        computing.take()
        try:
            return await arun_program(source, list(inputs), handler=counted, limits=limits)
        finally:
            self._quiet.touch()
            computing.give()

    # -- the run ------------------------------------------------------------------------------------------

    async def execute(self, program: Program, problem: str) -> RunResult:
        """Run the program on ``problem`` to its answer, its failure or the deadline; never raises for those.

        Raises:
            RunError: ontime, an adapter or a sink failed (after ``RunFinished`` says so); a cancellation goes on
                once every sample is settled.
        """
        self._t0 = self.clock.now()
        self._deadline = self._t0 + self.deadline_s
        self._emit(RunStarted(t=0.0, run_id=self.run_id, workflow=self.name, subtasks=1, models=tuple(self.models),
                              budget_pusd=self.ledger.budget_pusd, deadline_s=self.deadline_s, planner="program",
                              seed=self.seed, clock=type(self.clock).__name__, cancel_siblings=False))  # fmt: skip
        outcome: _Outcome | None = None
        stopped_at: float | None = None
        error: BaseException | None = None
        with self.clock.participate():
            try:
                with single_error():
                    async with anyio.create_task_group() as tg:
                        self._tg = tg
                        tg.start_soon(self._quiet.serve)
                        self.clock.spawn(tg, self._settle, name="settle")
                        box: Inbox[_Outcome] = self.clock.inbox()
                        self._quiet.touch()
                        tg.start_soon(self._program, program, problem, box.put)
                        try:
                            outcome = await box.get(until=self._deadline)
                        finally:
                            self._stopped = self._over = True
                        stopped_at = self._elapsed()
                        if outcome is None:
                            now = self.clock.now()
                            stopped_at = self.deadline_s if now <= self._deadline else stopped_at
                            self._emit(DeadlineHit(t=self._elapsed(), cancelled_samples=self._open))
                        tg.cancel_scope.cancel()  # the program at its deadline; the quiet keeper in any case
                if self._bug is not None:
                    raise self._bug
            except BaseException as exc:
                error = exc
            while len(self._ends):  # what the stopped tasks reported, in order
                self._ends.take()()
            finished = self._finished(outcome, stopped_at, error)
        if self.ledger.reserved != Usage():  # a call in flight that was never settled: its record would lie
            raise InvariantError(f"the run would finish with {self.ledger.reserved} still reserved") from error
        self._emit(finished)
        if error is not None:
            raise error
        if self._bug is not None:  # a sink raised at the last event
            raise self._bug
        value = outcome.value if outcome is not None else None
        return run_result(
            finished,
            budget_pusd=self.ledger.budget_pusd,
            deadline_s=self.deadline_s,
            seed=self.seed,
            planner="program",
            subtasks={
                "answer": SubtaskOutcome(
                    id="answer",
                    completed=finished.success,
                    model=", ".join(self._used) or None,
                    completed_at=finished.elapsed_s if finished.success else None,
                    batches=self._batches,
                    samples=self._samples,
                    cost=finished.cost_usd,
                    output=value,
                )
            },
            planner_ms=(),
            run_id=self.run_id,
            answer=value,
        )

    async def _settle(self) -> None:
        """Settle each sample's end as it comes; runs until the run stops (which settles the rest itself)."""
        while True:
            settle = await self._ends.get()
            if settle is not None:
                settle()

    async def _program(self, program: Program, problem: str, put: Callable[[_Outcome], None]) -> None:
        """The program's task: its calls reach this run through the context variable its tasks inherit."""
        _CURRENT.set(self)
        if program.source is not None:
            [got] = await self.run_source(program.source, [problem])
            outcome = _Outcome(got.value) if got.error is None else _failed([_error_class(got.error)], got.error)
        else:
            assert program.fn is not None
            try:
                value = await program.fn(problem)
            except BaseException as exc:  # the program's own failure is its run's result, whatever it raised
                if _stops_the_run(exc):
                    raise
                outcome = _raised(exc)
            else:
                not_text = f"the program returned {type(value).__name__}, not text"
                outcome = _Outcome(value) if isinstance(value, str) else _failed((), not_text)
        self._quiet.touch()
        put(outcome)

    def _finished(self, outcome: _Outcome | None, stopped_at: float | None, error: BaseException | None) -> RunFinished:
        spent = self.ledger.spent.pusd
        reason, detail = (Reason.DEADLINE, None) if outcome is None else (outcome.reason, outcome.detail)
        if error is not None:
            cancelled = isinstance(error, anyio.get_cancelled_exc_class() | KeyboardInterrupt)
            reason = Reason.CANCELLED if cancelled else Reason.ERROR
            detail = None if cancelled else f"{type(error).__name__}: {error}"
        elapsed = self._elapsed() if stopped_at is None else stopped_at
        success = error is None and outcome is not None and outcome.reason is None and elapsed <= self.deadline_s
        if outcome is not None and outcome.reason is None and not success and error is None:
            reason = Reason.DEADLINE  # it answered, but the event loop was held past the deadline
        return RunFinished(t=self._elapsed(), success=success, reason=None if success else reason, spent_pusd=spent,
                           cost_usd=to_usd(spent), elapsed_s=elapsed, completed=int(success), subtasks=1,
                           detail=detail)  # fmt: skip

    # -- helpers ------------------------------------------------------------------------------------------

    def _adapter(self, name: str, temperature: float) -> Adapter:
        given = self._adapters.get(name)
        if given is not None:
            return given
        endpoint = self.models[name].endpoint
        assert endpoint is not None  # a simulated model without an adapter is refused before the run
        return ChatAdapter(self._backends[name], endpoint.model, temperature=temperature)

    def _names(self) -> str:
        return ", ".join(self.models)

    def _elapsed(self) -> float:
        return self.clock.now() - self._t0

    def _fail(self, exc: BaseException) -> None:
        """Stop the run for a failure that is not the program's: it is raised once everything is settled."""
        self._bug = self._bug or exc
        self._stopped = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _check_open(self, what: str, rejected: LaunchRejected | None = None) -> None:
        """Refuse new work once the deadline has passed (``rejected`` says so in the events) or the program has
        returned: a task it left running gets an error and the run, finished or finishing, records nothing."""
        late = self.clock.now() >= self._deadline
        if self._over and not late:
            raise UsageError(f"{what}: the program has returned; a task it left running may start nothing more")
        if self._stopped or late:
            if rejected is not None and not self._over:
                self._emit(rejected)
            raise PastDeadlineError(f"{what}: the deadline of {self.deadline_s:g}s has passed")

    def _emit(self, event: Event) -> None:
        """Send an event to the sinks; one that raises stops the run (a journal that cannot be written would
        leave a gap in the record)."""
        try:
            self._sinks(event)
        except BaseException as exc:  # a sink is called synchronously: no cancellation can come from it
            self._fail(sink_failure(exc))


_STATUS = {
    Finish.COMPLETE: SampleStatus.SUCCEEDED,
    Finish.CUT_OFF: SampleStatus.FAILED,
    Finish.CANCELLED: SampleStatus.CANCELLED,
    Finish.ERROR: SampleStatus.ERROR,
}


def _stops_the_run(exc: BaseException) -> bool:
    """Whether what a program raised stops the run rather than being the program's failure: a cancellation
    from a scope around the program (the deadline, the run's own end, its caller), or a Ctrl-C. A cancellation
    the program raised itself (no scope around it was cancelled), ``SystemExit`` and the like are its errors."""
    leaves = _leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return True
    cancelled = anyio.get_cancelled_exc_class()
    return anyio.current_effective_deadline() == -math.inf and all(isinstance(leaf, cancelled) for leaf in leaves)


def _error_class(error: str) -> str:
    """The class of a sandboxed program's error: the text before the first colon of its first line, as the
    sandbox reports it (``"OverBudgetError: <message>"``, then the program's frames). Only that: the message and
    the frames are the program's to write, and a line in them must not set the run's reason."""
    return error.split("\n", 1)[0].split(":", 1)[0].strip()


async def execute_program(
    program: Program | ProgramFn, budget: float, deadline: float, options: ProgramOptions
) -> RunResult:
    """Check a program run's inputs, open what it needs (backends, the journal), run it and close all of it;
    :func:`runtime.arun` for a program."""
    check_option_names(options, ProgramOptions.__annotations__)
    if not isinstance(program, Program):
        program = Program(program)
    budget_pusd = check_budget(budget)
    check_limit("deadline", deadline)
    seed = check_run_options(options)
    problem = options.get("input", program.example)
    if not isinstance(problem, str):
        raise UsageError(f"a program's input must be text (input=...; the program has no EXAMPLE), not {problem!r}")
    tests = options.get("tests")
    if tests is not None and not isinstance(tests, str):
        raise UsageError(f"tests must be code (a string), not {type(tests).__name__}")
    given = options.get("models")
    models = parse_models(given, "models") if given is not None else program.models
    if models is None:
        raise UsageError(f"program {program.name!r} declares no MODELS: give models=... to run it")
    default = program.default_model or (next(iter(models)) if len(models) == 1 else None)
    if default is not None and default not in models:
        raise UsageError(f"the default model {default!r} is not among the models ({', '.join(models)})")
    adapters = options.get("adapters", {})
    unknown = [m for m in adapters if m not in models]
    if unknown:
        raise UsageError(f"adapters: {unknown[0]!r} is not a model of program {program.name!r}")
    missing = [m for m, spec in models.items() if spec.endpoint is None and m not in adapters]
    if missing:
        raise UsageError(
            f"model {missing[0]!r} is simulated, which gives no text: a program needs an adapter for it (adapters=)"
        )
    run_id = options.get("run_id") or uuid.uuid4().hex[:12]
    async with AsyncExitStack() as stack:
        clock = make_clock(options, models)
        backends = open_backends(stack, models, adapters)
        emit, close_journal = user_sinks(run_id, options.get("log", False), options.get("on_event"),
                                         options.get("journal"))  # fmt: skip
        stack.callback(close_journal)
        run = ProgramRun(name=program.name, models=models, default_model=default, adapters=adapters,
                         backends=backends, clock=clock, budget_pusd=budget_pusd, deadline_s=float(deadline),
                         seed=seed, run_id=run_id, emit=emit, tests=tests,
                         output_token_cap=options.get("output_token_cap"))  # fmt: skip
        return await run.execute(program, problem)
