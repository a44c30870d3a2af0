"""The executor: runs one workflow under a budget and a deadline, driven by a planner (DESIGN.md).

A batch runs as one task on the run's clock, through its model's adapter, which reports each sample's end.
Success is decided here, in one place: a sample cut off at ``max_tokens`` fails, a simulated one carries
its draw, any other output is checked by its subtask's verifier. The executor reads time only from its clock.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import numpy as np
from anyio.lowlevel import RunVar

from planners.baselines import MAX_BATCH
from runtime._ledger import Ledger, Reservation, Usage
from runtime._prompts import render, repair
from runtime._result import RunResult, SubtaskOutcome
from runtime.types import (
    Batch,
    BatchFailed,
    BatchLaunched,
    BudgetReserved,
    BudgetSettled,
    DeadlineHit,
    Decision,
    DecisionMade,
    FailedBatch,
    Finish,
    InFlight,
    InvariantError,
    Launch,
    LaunchRejected,
    OntimeError,
    PlannerError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
    Reason,
    RunFinished,
    RunStarted,
    SampleEnd,
    SampleFinished,
    SampleStatus,
    SinkError,
    Snapshot,
    SubtaskCompleted,
    to_usd,
)
from runtime.types._clock import Clock, Inbox, TaskHandle, single_error

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runtime.types import Adapter, Event, Message, Planner, ProfileTable, Report, Verifier, Workflow

__all__ = ["GIVE_UP_AFTER", "Executor", "ExecutorOptions", "Resumed", "check_end", "planner_threads", "run_adapter",
           "run_result", "sink_failure", "spec_path", "usable_cpus"]  # fmt: skip

# Requests in a row that must fail before the run stops sending them to a model whose endpoint has stopped
# answering (transport errors). A request the endpoint refused (malformed, too large) is not sent again.
GIVE_UP_AFTER = 3

_PLANNER_THREADS: RunVar[anyio.CapacityLimiter] = RunVar("ontime_planner_threads")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover (macOS, Windows)
        return os.cpu_count() or 1


def spec_path(workflow: Workflow) -> str | None:
    """The absolute path of the spec file ``workflow`` was loaded from, if any (what ``ontime resume`` reloads)."""
    if workflow.source is None:
        return None
    path = Path(workflow.source)
    return str(path.resolve()) if path.is_file() else None


def _count(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool) and bool(x >= 0)


def planner_threads() -> anyio.CapacityLimiter:
    """The worker threads planners decide in, one per usable CPU, shared by the runs of one event loop."""
    limiter = _PLANNER_THREADS.get(None)
    if limiter is None:
        limiter = anyio.CapacityLimiter(usable_cpus())
        _PLANNER_THREADS.set(limiter)
    return limiter


@dataclass(frozen=True, slots=True)
class ExecutorOptions:
    """The options of :class:`runtime.PlanOptions` the executor itself follows (``open_run`` says what each does)."""

    cancel_siblings: bool = True
    charge_planner_time: bool = False
    output_token_cap: int | None = None
    rounds: bool = False


@dataclass(frozen=True, slots=True)
class Resumed:
    """Where a resumed run (:func:`runtime.resume`) starts: the subtasks the crashed run completed (index ->
    model and output), its batches and failed models per subtask (a repair loop's budget of invocations and
    a history-dependent subtask's evidence), and what it spent or held, which this run's budget excludes."""

    run_id: str
    completed: Mapping[int, tuple[str, str | None]]
    batches: Sequence[int]
    history: Sequence[Sequence[int]]
    spent_before_pusd: int


@dataclass(slots=True, eq=False)
class _Batch:
    id: int
    subtask: int
    model: int
    k: int
    started_at: float
    reservation: Reservation
    share: Usage  # what one sample may use at most; the reservation holds k of these
    input_tokens: int  # the input tokens reserved for each sample's prompt
    check_pusd: int  # what checking one output may cost at most (an LLM judge)
    open: int  # samples whose end has not been settled yet
    done: bool = False  # its subtask completed
    cancelled: bool = False
    answered: bool = False  # a sample ended by itself (an answer, right or wrong): the batch was an invocation
    handle: TaskHandle | None = None


@dataclass(frozen=True, slots=True)
class _Prompt:
    """A ready subtask's prompt and, per model, what one sample of it reserves: the planner is shown the same."""

    messages: tuple[Message, ...] | None
    input_tokens: tuple[int, ...]  # reserved for the prompt, per model (0 where the model cannot run it)
    check_pusd: tuple[int, ...]  # the most checking one output may cost, per model
    worst_pusd: tuple[int, ...]  # one sample's whole reservation, per model


@dataclass(frozen=True, slots=True)
class _Ended:
    batch: _Batch
    end: SampleEnd
    status: SampleStatus
    check_pusd: int
    detail: str = ""  # why a failed sample failed (its verdict's detail), for a repair's prompt


class Executor:
    """Runs one workflow once; built and owned by :func:`runtime.open_run`. Build a fresh executor per run."""

    def __init__(
        self,
        *,
        workflow: Workflow,
        table: ProfileTable,
        planner: Planner,
        adapters: Sequence[Adapter],
        verifiers: Sequence[Verifier | None],
        clock: Clock,
        budget_pusd: int,
        deadline_s: float,
        seed: int,
        run_id: str,
        emit: Callable[[Event], None],
        options: ExecutorOptions = ExecutorOptions(),
        replanner: Callable[[ProfileTable], Planner] | None = None,
        resumed: Resumed | None = None,
    ) -> None:
        self.workflow = workflow
        self.table = table
        self.planner = planner
        self._replanner = replanner  # a fresh planner for a table without what went out of reach
        self._plan_table = table  # what the planner plans with: the table less what is out of reach
        self.adapters = adapters  # per model
        self.verifiers = verifiers  # per subtask; None: an output that ended by itself passes
        self.clock = clock
        self.deadline_s = deadline_s
        self.seed = seed
        self.run_id = run_id
        self.options = options
        self._sinks = emit
        self.ledger = Ledger(budget_pusd, output_token_cap=options.output_token_cap)
        n, m = table.n_subtasks, table.n_models
        self._inbox: Inbox[_Ended] = clock.inbox()
        self._complete: set[int] = set()  # the subtasks completed
        self._deps_left = [len(table.deps(i)) for i in range(n)]
        self._ready = {i for i in range(n) if self._deps_left[i] == 0}  # deps done, not complete, none in flight
        self._in_flight: dict[int, _Batch] = {}
        self._failed: list[FailedBatch] = []
        self._open = 0  # samples in flight
        self._next_batch = 0
        self._samples_launched = [0] * n
        self._batches = [0] * n
        self._history: list[list[int]] = [[] for _ in range(n)]  # per subtask, the models of its failed batches
        self._cost = [0] * n
        self._model_done: list[str | None] = [None] * n
        self._completed_at: list[float | None] = [None] * n
        self._output: list[str | None] = [None] * n
        # Per loop subtask, its last failed answer and why it failed: what its next invocation's prompt repairs.
        self._repair_of: dict[int, tuple[str, str]] = {}
        self._planner_ms: list[float] = []
        self._reason: Reason | None = None
        self._detail: str | None = None
        self._planner_reason: Reason | None = None
        self._rejected: set[Reason] = set()  # why launches of the last decision were refused
        self._fatal: ProviderRejectedError | None = None  # an endpoint refused us for good
        self._bug: BaseException | None = None  # a plug-in raised: the run stops and the exception goes on
        self._answered = [False] * m  # the model's endpoint has answered a request
        self._failing = [0] * m  # samples in a row whose endpoint could not be reached
        # No longer launched on, with why: a model (unreachable) or a (subtask, model) (refused).
        self._down: dict[int | tuple[int, int], tuple[Reason, str]] = {}
        self._masked = 0  # how many of ``_down`` the planner's table leaves out
        self._stranded: tuple[Reason, str] | None = None  # why a subtask left can run nowhere any more
        self._t0 = 0.0
        self._deadline = 0.0
        # What one sample of (subtask, model) reserves, as planners are shown it. The spec's figures until a
        # subtask's real prompt is known; then the prompt's bound and its check's cost (real models only).
        self._exact_shares = not all(a.simulated for a in adapters)
        self._worst = table.worst_cost
        self._prompts: dict[int, _Prompt] = {}
        endpoints = [workflow.models[name].endpoint for name in table.model_names]
        self._max_k = [MAX_BATCH if e is None or e.max_batch is None else e.max_batch for e in endpoints]
        self._interrupted = False
        self._drive_scope: anyio.CancelScope | None = None
        self._stopped_at: float | None = None  # when the drive stopped, before what still ran was cancelled
        self.resumed = resumed
        if resumed is not None:
            self._start_from(resumed)

    def _start_from(self, resumed: Resumed) -> None:
        """Take over what a crashed run did: its completed subtasks (with their outputs), batch counts and
        failure histories."""
        t = self.table
        for i, (model, output) in resumed.completed.items():
            self._complete.add(i)
            self._model_done[i], self._output[i], self._completed_at[i] = model, output, 0.0
            for c in t.children(i).tolist():
                self._deps_left[c] -= 1
        self._ready = {i for i in range(t.n_subtasks) if self._deps_left[i] == 0 and i not in self._complete}
        self._batches = list(resumed.batches)
        self._history = [list(h) for h in resumed.history]

    async def run(self) -> RunResult:
        """Run to success, the deadline, or until nothing feasible is left; never raises for those.

        Cancelling the run (from outside) stops every sample, settles what each used and emits
        ``RunFinished`` before the cancellation goes on; so does an error, which is then re-raised.

        Raises:
            ProviderRejectedError: an endpoint refused the key, the permission or the model (HTTP 401, 403, 404).
            PlannerError: the planner returned a decision the executor cannot carry out.
        """
        t = self.table
        self._t0 = self.clock.now()
        self._deadline = self._t0 + self.deadline_s
        self._emit(
            RunStarted(
                t=0.0,
                run_id=self.run_id,
                workflow=self.workflow.name,
                subtasks=t.n_subtasks,
                models=t.model_names,
                budget_pusd=self.ledger.budget_pusd,
                deadline_s=self.deadline_s,
                planner=self.planner.name,
                seed=self.seed,
                clock=type(self.clock).__name__,
                cancel_siblings=self.options.cancel_siblings,
                rounds=self.options.rounds,
                started_at=time.time(),
                spec=spec_path(self.workflow),
                resumed_from=None if self.resumed is None else self.resumed.run_id,
                spent_before_pusd=0 if self.resumed is None else self.resumed.spent_before_pusd,
                output_token_cap=self.options.output_token_cap,
                subtask_ids=t.subtask_ids,
            )
        )
        error: BaseException | None = None
        with self.clock.participate():
            try:
                with single_error():
                    async with anyio.create_task_group() as tg:
                        self._drive_scope = tg.cancel_scope
                        try:
                            if not self._interrupted:
                                await self._drive(tg)
                        finally:
                            tg.cancel_scope.cancel()
                if self._bug is not None:  # a sink raised: the drive stopped at its next step
                    raise self._bug
            except BaseException as exc:
                error = exc
            # Every task of the run has ended and reported. Settle what they used while this task still takes
            # part in the clock: a virtual clock moves on to the next timer as soon as it stops.
            if isinstance(error, anyio.get_cancelled_exc_class() | KeyboardInterrupt):
                self._settle_the_rest(Reason.INTERRUPTED if self._interrupted else Reason.CANCELLED)
            elif error is not None:
                self._settle_the_rest(Reason.ERROR, f"{type(error).__name__}: {error}")
            elif self._interrupted:
                self._settle_the_rest(Reason.INTERRUPTED)
            finished = self._finished()
        self._emit(finished)
        if error is not None:
            raise error
        if self._bug is not None:  # a sink raised at the last event
            raise self._bug
        if self._fatal is not None:
            raise self._fatal
        return run_result(
            finished,
            budget_pusd=self.ledger.budget_pusd,
            deadline_s=self.deadline_s,
            seed=self.seed,
            planner=self.planner.name,
            subtasks={
                sid: SubtaskOutcome(
                    id=sid,
                    completed=i in self._complete,
                    model=self._model_done[i],
                    completed_at=self._completed_at[i],
                    batches=self._batches[i],
                    samples=self._samples_launched[i],
                    cost=to_usd(self._cost[i]),
                    output=self._output[i],
                )
                for i, sid in enumerate(t.subtask_ids)
            },
            planner_ms=tuple(self._planner_ms),
            run_id=self.run_id,
        )

    def interrupt(self) -> None:
        """Stop the run now (a signal, a shutdown): cancel every sample, settle what each used and end with
        reason ``interrupted``; nothing launches after it. :meth:`run` then returns its result. Call it from a
        task of the run's event loop (not from a ``signal.signal`` handler), at any time, more than once."""
        self._interrupted = True
        if self._drive_scope is not None:
            self._drive_scope.cancel()

    def _settle_the_rest(self, reason: Reason, detail: str | None = None) -> None:
        """Settle what the stopped tasks reported. ``reason`` is why the run ended, unless the drive had already
        ended by itself (it was only cancelling leftover samples); an error is always the reason."""
        while len(self._inbox):
            self._on_sample_ended(self._inbox.take(), stopped=True)
        if reason is Reason.ERROR or self._stopped_at is None:
            self._reason, self._detail = reason, detail
        if self._stopped_at is None:
            self._stopped_at = self._elapsed()

    def _emit(self, event: Event) -> None:
        """Send an event to the run's sinks; one that raises stops the run, like a plug-in's bug."""
        try:
            self._sinks(event)
        except BaseException as exc:  # a sink is called synchronously: no cancellation can come from it
            self._bug = self._bug or sink_failure(exc)

    def _finished(self) -> RunFinished:
        spent, success = self.ledger.spent.pusd, len(self._complete) == self.table.n_subtasks
        # The true time the run's work stopped: past the deadline if something held the event loop (a blocking
        # plug-in), never clamped. Cancelling what still ran after that is not work and is not counted.
        elapsed = self._elapsed() if self._stopped_at is None else self._stopped_at
        if success:  # leftover siblings may be cancelled a moment later; the run was done at the last completion
            elapsed = max(c for c in self._completed_at if c is not None)
        return RunFinished(
            t=self._elapsed(),
            success=success,
            reason=self._reason,
            spent_pusd=spent,
            cost_usd=to_usd(spent),
            elapsed_s=elapsed,
            completed=len(self._complete),
            subtasks=self.table.n_subtasks,
            detail=self._detail,
        )

    def _elapsed(self) -> float:
        return self.clock.now() - self._t0

    async def _drive(self, tg: anyio.abc.TaskGroup) -> None:
        rounds = self.options.rounds
        await self._plan(tg)
        replan = False
        while len(self._complete) < self.table.n_subtasks and self._bug is None and not self._interrupted:
            # Not while cancelled samples are still settling; in rounds, not until nothing is in flight.
            if replan and not (rounds and self._open) and not any(b.cancelled for b in self._in_flight.values()):
                replan = False
                await self._plan(tg)
            if self._stranded is not None:  # a subtask nothing within reach can run: the run cannot succeed
                self._reason, self._detail = self._stranded
                break
            if self._open == 0:
                self._reason = self._why_stuck()
                break
            msg = await self._inbox.get(until=self._deadline)
            if msg is None:
                self._reason = Reason.DEADLINE
                self._hit_deadline()
                break
            replan |= self._on_sample_ended(msg)
            if self._fatal is not None:
                self._reason, self._detail = Reason.PROVIDER_REJECTED, str(self._fatal)
                break
        if self._interrupted:  # run() settles what was in flight, and says why
            return
        if self._stopped_at is None:
            if self.clock.now() >= self._deadline and len(self._complete) < self.table.n_subtasks:
                self._hit_deadline()  # noticed at or after the deadline (held past it, or a last end at it)
            else:
                self._stopped_at = self._elapsed()
        # Stop what still runs (on success too: with cancel_siblings off, siblings may still be running).
        for b in list(self._in_flight.values()):
            self._cancel_batch(b)
        while self._open:
            msg = await self._inbox.get()
            if msg is not None:
                self._on_sample_ended(msg)

    def _hit_deadline(self) -> None:
        # On time (a virtual clock's timer fires at the deadline exactly) it is the deadline itself; late, the truth.
        self._stopped_at = self.deadline_s if self.clock.now() <= self._deadline else self._elapsed()
        self._emit(DeadlineHit(t=self._elapsed(), cancelled_samples=self._open))

    def _cancel_batch(self, b: _Batch) -> None:
        if not b.cancelled and b.handle is not None:
            b.cancelled = True
            b.handle.cancel()

    # -- planning -------------------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        now = self._elapsed()
        avail = self.ledger.available
        return Snapshot(
            table=self._plan_table,
            now=now,
            time_left=self.deadline_s - now,
            budget_pusd=self.ledger.budget_pusd,
            budget_left_pusd=avail.pusd,
            output_tokens_left=None if self.options.output_token_cap is None else avail.output_tokens,
            completed=frozenset(self._complete),
            ready=tuple(sorted(self._ready)),
            in_flight=tuple(
                InFlight(b.id, b.subtask, b.model, b.k, b.started_at - self._t0, b.open, b.done)
                for b in self._in_flight.values()
            ),
            failed=tuple(self._failed),
            samples_launched=tuple(self._samples_launched),
            cancel_siblings=self.options.cancel_siblings,
            rounds=self.options.rounds,
            worst_pusd=self._worst if self._exact_shares else None,
        )

    async def _plan(self, tg: anyio.abc.TaskGroup) -> None:
        if not self._ready or self.clock.now() >= self._deadline or self._bug is not None or self._interrupted:
            return
        if self._masked < len(self._down):
            await self._leave_out_what_is_down()
            if self._stranded is not None or self._interrupted:
                return
        if self._exact_shares:  # show the planner what the ledger will reserve for the prompts now known
            rows = {i: self._prompt(i).worst_pusd for i in self._ready}
            changed = {i: w for i, w in rows.items() if w != tuple(self._worst[i].tolist())}
            if changed:
                self._worst = self._worst.copy()  # copy on write: snapshots handed out keep their figures
                for i, w in changed.items():
                    self._worst[i] = w
        snap = self._snapshot()
        start = time.perf_counter()
        if self.planner.in_thread:
            decision = await anyio.to_thread.run_sync(self.planner.decide, snap, limiter=planner_threads())
        else:
            decision = self.planner.decide(snap)
        ms = (time.perf_counter() - start) * 1000.0
        self._planner_ms.append(ms)
        if self._interrupted:  # while the planner decided in its thread: launch nothing
            return
        launches = self._checked(decision, snap)
        self._planner_reason = decision.reason
        self._rejected.clear()
        self._emit(
            DecisionMade(
                t=self._elapsed(),
                launches=tuple((self.table.subtask_ids[i], self.table.model_names[a.model], a.k) for i, a in launches),
                planner_ms=ms,
            )
        )
        if self.options.charge_planner_time:
            await self.clock.sleep_until(self.clock.now() + ms / 1000.0)
        if self._bug is not None or self._interrupted:  # a sink refused the decision, or interrupted the run
            return
        for i, launch in launches:
            self._launch(tg, i, launch)

    async def _leave_out_what_is_down(self) -> None:
        """Plan on without the models (and subtask-model pairs) out of reach: a fresh planner for a planner
        given as a spec; one given as an instance keeps planning, and its launches there are refused."""
        t = self.table
        unusable = np.zeros((t.n_subtasks, t.n_models), np.bool_)
        for key in self._down:
            unusable[key if isinstance(key, tuple) else (slice(None), key)] = True
        self._masked = len(self._down)
        self._plan_table = t.without(unusable)
        stranded = [i for i in range(t.n_subtasks) if i not in self._complete and (self._plan_table.kind[i] < 0).all()]
        if stranded:
            i = stranded[0]
            why = [
                e for key, e in self._down.items() if (key[0] == i if isinstance(key, tuple) else t.kind[i, key] >= 0)
            ]
            detail = "; ".join(w for _, w in why) + f"; nothing else can run subtask {t.subtask_ids[i]!r}"
            self._stranded = (why[0][0] if why else Reason.UNREACHABLE, detail)
            return
        if self._replanner is not None:
            self.planner = await anyio.to_thread.run_sync(self._replanner, self._plan_table, limiter=planner_threads())

    def _checked(self, decision: Decision, snap: Snapshot) -> list[tuple[int, Launch]]:
        t, who = self.table, f"planner {self.planner.name!r}"
        if not isinstance(decision, Decision) or not isinstance(decision.launches, Mapping):
            raise PlannerError(f"{who} returned {decision!r}, not a Decision with a mapping of launches")
        out = []
        for i, a in decision.launches.items():
            if i not in snap.ready:
                raise PlannerError(f"{who} launched subtask {i!r}, which is not ready")
            # Counts may be numpy integers (planners compute in arrays), never bools or floats.
            if not (isinstance(a, Launch) and _count(a.k) and a.k >= 1 and _count(a.model) and a.model < t.n_models):
                raise PlannerError(f"{who} returned an invalid launch {a!r}")
            if t.kind[i, a.model] < 0:
                where = f"subtask {t.subtask_ids[i]!r} on model {t.model_names[a.model]!r}"
                raise PlannerError(f"{who} put {where}, which cannot run it")
            out.append((int(i), Launch(int(a.model), int(a.k))))
        return out

    def _reject(self, i: int, j: int, k: int, reason: Reason) -> None:
        self._rejected.add(reason)
        sid, model = self.table.subtask_ids[i], self.table.model_names[j]
        self._emit(LaunchRejected(t=self._elapsed(), subtask=sid, model=model, k=k, reason=reason))

    def _launch(self, tg: anyio.abc.TaskGroup, i: int, a: Launch) -> None:
        t = self.table
        j, k = a.model, a.k
        now = self.clock.now()
        if i not in self._ready:  # the subtask's state changed while the planner was being charged
            return
        if now + float(t.min_latency[i, j]) > self._deadline:
            return self._reject(i, j, k, Reason.DEADLINE)
        down = self._down.get(j) or self._down.get((i, j))
        if down is not None:
            return self._reject(i, j, k, down[0])
        max_tokens = int(t.max_tokens[j])
        adapter, prompt = self.adapters[j], self._prompt(i)
        messages, input_tokens, check_pusd = prompt.messages, prompt.input_tokens[j], prompt.check_pusd[j]
        verifier = None if adapter.simulated else self.verifiers[i]
        worst = prompt.worst_pusd[j]
        share = Usage(worst, max_tokens)
        k = min(k, self._max_k[j])  # the model's cap, at most MAX_BATCH: a custom planner's k is not bounded
        res = self.ledger.reserve(share * k)
        if res is None:  # a planner that ignored the snapshot's worst case: launch what fits
            left = self.ledger.available
            k = min(k, left.pusd // worst if worst else k, left.output_tokens // max_tokens)
            res = self.ledger.reserve(share * k) if k >= 1 else None
            if res is None:
                return self._reject(i, j, a.k, Reason.BUDGET)
        self._next_batch += 1
        b = _Batch(self._next_batch, i, j, k, now, res, share, input_tokens, check_pusd, open=k)
        sid, rel = t.subtask_ids[i], now - self._t0
        self._emit(
            BudgetReserved(
                t=rel, reservation=res.id, batch=b.id, pusd=res.held.pusd, output_tokens=res.held.output_tokens
            )
        )
        self._emit(BatchLaunched(t=rel, batch=b.id, subtask=sid, model=t.model_names[j], k=k, max_tokens=max_tokens))
        self._ready.discard(i)
        self._in_flight[b.id] = b
        self._open += k
        self._samples_launched[i] += k
        self._batches[i] += 1
        batch = Batch(
            id=b.id,
            subtask=i,
            tag=sid,
            model=j,
            k=k,
            max_tokens=max_tokens,
            input_tokens=input_tokens,
            messages=messages,
            deadline=self.clock.wall_time_of(self._deadline),
            history=tuple(self._history[i]),
            history_names=tuple(t.model_names[h] for h in self._history[i]),
            run=self.run_id,
        )
        b.handle = self.clock.spawn(tg, partial(self._run_batch, adapter, verifier, b, batch), name=f"{sid}#{b.id}")

    def _prompt(self, i: int) -> _Prompt:
        """Subtask ``i``'s prompt (its dependencies are complete) and what a sample of it reserves on each model."""
        prompt = self._prompts.get(i)
        if prompt is not None:
            return prompt
        t, subtask = self.table, self.workflow.subtasks[i]
        messages = None  # simulated workflows have no prompt to render
        if subtask.prompt is not None:
            messages = render(subtask, {t.subtask_ids[d]: self._output[d] for d in t.deps(i).tolist()})
        failure = self._repair_of.get(i)
        if messages is not None and failure is not None:  # a repair: its prompt shows what failed, and why
            messages = repair(messages, *failure)
        inputs, checks, worst = [0] * t.n_models, [0] * t.n_models, [0] * t.n_models
        for j in np.flatnonzero(t.kind[i] >= 0).tolist():
            adapter, max_tokens = self.adapters[j], int(t.max_tokens[j])
            n = adapter.input_tokens(int(t.input_tokens[i]), messages)
            if not (isinstance(n, int) and n >= 0):
                raise InvariantError(f"{type(adapter).__name__}.input_tokens gave {n!r}, not a count")
            verifier = None if adapter.simulated else self.verifiers[i]
            inputs[j] = n
            checks[j] = 0 if verifier is None else verifier.worst_pusd(max_tokens)
            worst[j] = n * int(t.in_price[j]) + max_tokens * int(t.out_price[j]) + checks[j] + int(t.tool_pusd[i])
        prompt = self._prompts[i] = _Prompt(messages, tuple(inputs), tuple(checks), tuple(worst))
        return prompt

    # -- a batch in flight ----------------------------------------------------------------------------

    async def _run_batch(self, adapter: Adapter, verifier: Verifier | None, b: _Batch, batch: Batch) -> None:
        """Run one batch through its adapter; every sample's end goes to the inbox exactly once."""
        reported = [False] * b.k
        if verifier is None:  # nothing to check (a simulated backend, or a subtask without a verifier)
            await self._ends(adapter, b, batch, reported, partial(self._report, adapter, b, reported, None))
            return
        with single_error():
            async with anyio.create_task_group() as checks:

                def check(end: SampleEnd) -> None:
                    self.clock.spawn(checks, partial(self._check, verifier, b, end), name=f"check#{b.id}.{end.index}")

                await self._ends(adapter, b, batch, reported, partial(self._report, adapter, b, reported, check))

    async def _ends(self, adapter: Adapter, b: _Batch, batch: Batch, reported: list[bool], report: Report) -> None:
        try:
            await run_adapter(adapter, batch, reported, report)
        except Exception as exc:
            self._bug = exc  # the drive loop stops before it acts on what is reported
            raise

    def _report(self, adapter: Adapter, b: _Batch, reported: list[bool], check: Report | None, end: SampleEnd) -> None:
        """What an adapter calls when a sample ends: decide its success, or start the check that will."""
        check_end(adapter, b.id, b.k, b.input_tokens, b.share.output_tokens, reported, end)
        if check is not None and end.finish == Finish.COMPLETE and end.passed is None:
            return check(end)
        ok = end.finish == Finish.COMPLETE and (end.passed is None or bool(end.passed))
        status = _STATUS.get(end.finish, SampleStatus.SUCCEEDED if ok else SampleStatus.FAILED)
        detail = f"it was cut off at {b.share.output_tokens} output tokens" if end.finish is Finish.CUT_OFF else ""
        self._inbox.put(_Ended(b, end, status, 0, detail), (b.id, end.index))

    async def _check(self, verifier: Verifier, b: _Batch, end: SampleEnd) -> None:
        status, cost = SampleStatus.CANCELLED, b.check_pusd  # cancelled while checking: charge its worst case
        detail = ""
        try:
            verdict = await verifier.check(end.output or "", b.check_pusd)
            status = SampleStatus.SUCCEEDED if verdict.ok else SampleStatus.FAILED
            cost, detail = min(verdict.cost_pusd, b.check_pusd), str(verdict.detail)
        except OntimeError as exc:  # a check that cannot decide says no (and may have spent its worst case)
            status, detail = SampleStatus.FAILED, f"the check could not decide ({type(exc).__name__})"
        except Exception as exc:
            self._bug = exc
            raise
        finally:
            self._inbox.put(_Ended(b, end, status, cost, detail), (b.id, end.index))

    # -- events ---------------------------------------------------------------------------------------

    def _on_sample_ended(self, msg: _Ended, *, stopped: bool = False) -> bool:
        """Settle one sample; return True if what is possible changed (so the planner must be asked).

        Once the run is ``stopped`` (cancelled, or a plug-in raised), a sample is settled but completes nothing.
        """
        stopped = stopped or self._bug is not None
        t = self.table
        b, end = msg.batch, msg.end
        i, j = b.subtask, b.model
        now = self.clock.now()
        rel = now - self._t0
        inp, out = end.input_tokens, end.output_tokens
        cost = int(inp * t.in_price[j] + out * t.out_price[j]) + msg.check_pusd
        if end.finish is Finish.COMPLETE or end.finish is Finish.CUT_OFF:
            cost += int(t.tool_pusd[i])  # the loop's tool stage ran on its output
            b.answered = True
        released = self.ledger.settle(b.reservation, Usage(cost, out), b.share)
        sid, model = t.subtask_ids[i], t.model_names[j]
        error = None if end.error is None else f"{type(end.error).__name__}: {end.error}"
        self._emit(
            SampleFinished(
                t=rel,
                batch=b.id,
                sample=end.index,
                subtask=sid,
                model=model,
                status=msg.status,
                input_tokens=inp,
                output_tokens=out,
                latency_s=now - b.started_at,
                error=error,
            )
        )
        self._emit(
            BudgetSettled(
                t=rel,
                reservation=b.reservation.id,
                batch=b.id,
                sample=end.index,
                pusd=cost,
                output_tokens=out,
                released_pusd=released.pusd,
                released_output_tokens=released.output_tokens,
            )
        )
        self._track_endpoint(i, j, end)
        if msg.status is SampleStatus.FAILED and end.output is not None and int(t.horizon[i]) >= 0:
            self._repair_of[i] = (end.output, msg.detail)  # the last failed answer is the one a repair shows
        self._cost[i] += cost
        self._open -= 1
        b.open -= 1
        changed = False
        if msg.status is SampleStatus.SUCCEEDED and i not in self._complete and now <= self._deadline and not stopped:
            self._complete_subtask(b, end.output, rel)
            changed = True
            if self.options.cancel_siblings:
                self._cancel_batch(b)
        if b.open == 0:
            del self._in_flight[b.id]
            if not b.done:
                self._failed.append(FailedBatch(i, j, b.k, b.started_at - self._t0, rel, b.answered))
                self._emit(BatchFailed(t=rel, batch=b.id, subtask=sid, model=model))
                if b.answered:  # a batch that only met endpoint errors was no invocation: the loop has it again
                    self._history[i].append(j)
                if i in self._repair_of:  # its next prompt is a repair: render it afresh (and reserve for it)
                    self._prompts.pop(i, None)
                horizon = int(t.horizon[i])
                if 0 <= horizon <= len(self._history[i]) and i not in self._complete:
                    why = f"subtask {sid!r} failed all {horizon} invocations its loop allows"
                    self._stranded = self._stranded or (Reason.EXHAUSTED, why)
                else:
                    self._ready.add(i)
            changed = True  # a batch ended: its reservation is free again
        return changed

    def _track_endpoint(self, i: int, j: int, end: SampleEnd) -> None:
        """Stop a run on a refused key; stop sending requests that keep failing (see :data:`GIVE_UP_AFTER`)."""
        error, name = end.error, self.table.model_names[j]
        if isinstance(error, ProviderRejectedError) and error.fatal and self._fatal is None:
            self._fatal = error
        if end.finish is Finish.COMPLETE or end.finish is Finish.CUT_OFF:
            self._answered[j], self._failing[j] = True, 0
        elif isinstance(error, ProviderRejectedError):  # the same request would be refused again
            why = f"model {name!r} refused subtask {self.table.subtask_ids[i]!r}, not sent again: {error}"
            self._down.setdefault((i, j), (Reason.PROVIDER_REJECTED, why))
        elif isinstance(error, ProviderUnavailableError) and not isinstance(error, RateLimitedError):
            n = self._failing[j] = self._failing[j] + 1
            if n >= GIVE_UP_AFTER:
                endpoint = self.workflow.models[name].endpoint
                where = f" at {endpoint.base_url}" if endpoint is not None and endpoint.base_url else ""
                never = "" if self._answered[j] else " (none was ever answered)"
                why = f"model {name!r}{where}: the last {n} requests failed{never}; last: {error}"
                self._down.setdefault(j, (Reason.UNREACHABLE, why))

    def _complete_subtask(self, b: _Batch, output: str | None, rel: float) -> None:
        t, i = self.table, b.subtask
        b.done = True
        self._complete.add(i)
        self._prompts.pop(i, None)  # it runs no more
        self._model_done[i] = model = t.model_names[b.model]
        self._completed_at[i] = rel
        self._output[i] = output
        self._emit(SubtaskCompleted(t=rel, subtask=t.subtask_ids[i], batch=b.id, model=model, output=output))
        for c in t.children(i).tolist():
            self._deps_left[c] -= 1
            if self._deps_left[c] == 0:
                self._ready.add(c)

    def _why_stuck(self) -> Reason:
        """Nothing is in flight and nothing was launched: say why the run cannot go on."""
        t = self.table
        if self.clock.now() >= self._deadline:
            return Reason.DEADLINE
        for reason in (Reason.UNREACHABLE, Reason.PROVIDER_REJECTED):
            if reason in self._rejected:
                self._detail = "; ".join(why for r, why in self._down.values() if r is reason)
                return reason
        avail = self.ledger.available
        time_left = self._deadline - self.clock.now()
        affordable = timely = False
        for i in self._ready:
            for j in range(t.n_models):
                if t.kind[i, j] >= 0 and Usage(int(self._worst[i, j]), int(t.max_tokens[j])).fits_in(avail):
                    affordable = True
                    timely |= float(t.min_latency[i, j]) <= time_left
        if not affordable:
            return Reason.BUDGET
        if not timely or Reason.DEADLINE in self._rejected:
            return Reason.DEADLINE
        if Reason.BUDGET in self._rejected:
            return Reason.BUDGET
        if self._planner_reason in (Reason.BUDGET, Reason.DEADLINE):
            return self._planner_reason
        return Reason.PLANNER_GAVE_UP


_STATUS = {Finish.CANCELLED: SampleStatus.CANCELLED, Finish.ERROR: SampleStatus.ERROR}


# -- shared with a program's run (runtime._program_run) ---------------------------------------------------------


def sink_failure(exc: BaseException) -> BaseException:
    """What stops a run whose sink raised ``exc``: a :class:`SinkError` for a journal or log that cannot be written
    (the record would have a gap), else ``exc`` itself (a bug in the sink)."""
    if not isinstance(exc, OSError):
        return exc
    error = SinkError(f"cannot record the run's events: {exc.strerror or exc}")
    error.__cause__ = exc
    return error


def run_result(
    finished: RunFinished,
    *,
    budget_pusd: int,
    deadline_s: float,
    seed: int,
    planner: str,
    subtasks: Mapping[str, SubtaskOutcome],
    planner_ms: tuple[float, ...],
    run_id: str,
    answer: str | None = None,
) -> RunResult:
    """The result a run returns, from the :class:`RunFinished` it emitted and what that event does not hold."""
    return RunResult(
        success=finished.success,
        reason=finished.reason,
        detail=finished.detail,
        cost=finished.cost_usd,
        cost_pusd=finished.spent_pusd,
        elapsed=finished.elapsed_s,
        budget=to_usd(budget_pusd),
        deadline=deadline_s,
        seed=seed,
        planner=planner,
        subtasks=subtasks,
        planner_ms=planner_ms,
        run_id=run_id,
        answer=answer,
        base_answer=answer,
    )


async def run_adapter(adapter: Adapter, batch: Batch, reported: list[bool], report: Report) -> None:
    """Run ``batch`` through ``adapter`` so that ``report`` sees every sample's end exactly once, as the
    :class:`runtime.Adapter` contract says: a ``ProviderError`` raised ends the samples not yet reported in it,
    a cancellation (from outside) ends them cancelled.

    Raises:
        InvariantError: the adapter cancelled itself, or returned without reporting every sample.
    """
    try:
        try:
            await adapter.run(batch, report)
        except ProviderError as exc:  # the batch's request failed before it produced anything
            _report_rest(reported, report, Finish.ERROR, exc)
        except anyio.get_cancelled_exc_class():
            if anyio.current_effective_deadline() != -math.inf:  # nobody cancelled it: the adapter's own doing
                raise InvariantError(f"{type(adapter).__name__} raised a cancellation nobody asked for") from None
            raise
        if not all(reported):
            raise InvariantError(f"{type(adapter).__name__} returned without reporting every sample")
    finally:  # cancelled before the adapter could report them
        _report_rest(reported, report, Finish.CANCELLED)


def _report_rest(reported: list[bool], report: Report, finish: Finish, error: ProviderError | None = None) -> None:
    for idx, done in enumerate(reported):
        if not done:
            report(SampleEnd(index=idx, finish=finish, input_tokens=0, output_tokens=0, error=error))


def check_end(
    adapter: Adapter, batch: int, k: int, input_tokens: int, max_tokens: int, reported: list[bool], end: SampleEnd
) -> None:
    """Mark ``end`` reported, or raise :class:`InvariantError` if it is malformed, reported twice, or uses more
    than batch ``batch`` (of ``k`` samples) reserved for one sample."""
    name = type(adapter).__name__
    if not (
        type(end) is SampleEnd
        and type(end.index) is type(end.input_tokens) is type(end.output_tokens) is int
        and type(end.finish) is Finish
        and (end.error is None or isinstance(end.error, ProviderError))
    ):
        raise InvariantError(f"{name} reported a malformed sample end (int counts, a Finish, a ProviderError): {end!r}")
    if not 0 <= end.index < k or reported[end.index]:
        raise InvariantError(f"{name} reported sample {end.index} of batch {batch} twice, or of k={k}")
    if not (0 <= end.input_tokens <= input_tokens and 0 <= end.output_tokens <= max_tokens):
        raise InvariantError(
            f"{name} reported {end.input_tokens} input and {end.output_tokens} output tokens for a sample of "
            f"batch {batch}, outside the {input_tokens} and {max_tokens} reserved for it"
        )
    reported[end.index] = True
