"""The executor: runs one workflow under a budget and a deadline, driven by a planner.

It follows the execution model of DESIGN.md. A decision is asked for at the start and whenever what is
possible changes (a subtask completes, a batch ends), or, with ``rounds``, only once nothing is in flight
(synchronized rounds, as the MCP paper executes); each launch is re-checked against the ledger and the
clock; a batch's samples run as tasks on the run's clock; the first success completes the subtask and, with
``cancel_siblings``, cancels the rest of its batch (charged for what they produced). At the deadline
every sample in flight is cancelled at once. The executor reads time only from its clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from adapters.base import Adapter, SampleOutcome, SampleProgress, SampleRequest
from runtime._clock import Clock, Inbox, TaskHandle, single_error
from runtime._errors import PlannerError, ProviderRejectedError
from runtime._events import (
    BatchFailed,
    BatchLaunched,
    BudgetReserved,
    BudgetSettled,
    DeadlineHit,
    DecisionMade,
    Event,
    LaunchRejected,
    RunFinished,
    RunStarted,
    SampleFinished,
    SubtaskCompleted,
)
from runtime._ledger import Ledger, Reservation, Usage
from runtime._money import to_usd
from runtime._prompts import render
from runtime._result import RunResult, SubtaskOutcome
from runtime._snapshot import Decision, FailedBatch, InFlight, Launch, Snapshot

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from adapters.chat import Message
    from planners.base import Planner
    from runtime._profiles import ProfileTable
    from runtime._workflow import Subtask

__all__ = ["ExecutorOptions", "Executor"]

DEADLINE, BUDGET, GAVE_UP, REJECTED = "deadline", "budget", "planner_gave_up", "provider_rejected"

# One planner thread per core is all a 2-core machine can use; more would only queue.
_PLANNER_THREADS = anyio.CapacityLimiter(2)


@dataclass(frozen=True, slots=True)
class ExecutorOptions:
    """Per-run options.

    Attributes:
        cancel_siblings: when a sample succeeds, cancel the rest of its batch (charged for the tokens
            they produced so far) rather than let them finish.
        charge_planner_time: advance the run's clock by the planner's wall time before launching what it
            decided, so benchmarks pay for planning. Off by default: wall time would make virtual-time
            runs depend on machine speed.
        output_token_cap: a cap on total output tokens across the run, reserved like dollars.
        rounds: synchronized rounds, as the MCP paper executes: ask the planner only once nothing is in
            flight any more, so what it launches starts together at the start of a round and a round lasts
            as long as its slowest batch (siblings left to finish included). Off: ask after every event that
            changes what is possible.
    """

    cancel_siblings: bool = True
    charge_planner_time: bool = False
    output_token_cap: int | None = None
    rounds: bool = False


class _Batch:
    __slots__ = ("done", "handles", "id", "k", "model", "open", "reservation", "share", "started_at", "subtask")

    def __init__(
        self, bid: int, subtask: int, model: int, k: int, started_at: float, res: Reservation, share: Usage
    ) -> None:
        self.id = bid
        self.subtask = subtask
        self.model = model
        self.k = k
        self.started_at = started_at
        self.reservation = res
        self.share = share  # what one sample may use at most; the reservation holds k of these
        self.open = k
        self.done = False  # its subtask completed
        self.handles: list[TaskHandle | None] = []


@dataclass(slots=True)
class _SampleEnded:
    batch: _Batch
    index: int
    outcome: SampleOutcome | None
    progress: SampleProgress
    cancelled: bool
    error: str | None
    fatal: ProviderRejectedError | None = None


class Executor:
    """Runs one workflow once. Build a fresh executor per run."""

    def __init__(
        self,
        *,
        table: ProfileTable,
        workflow_name: str,
        planner: Planner,
        adapters: Sequence[Adapter],
        clock: Clock,
        budget_pusd: int,
        deadline_s: float,
        seed: int,
        run_id: str,
        emit: Callable[[Event], None],
        options: ExecutorOptions = ExecutorOptions(),
        subtasks: Sequence[Subtask] | None = None,
    ) -> None:
        self.table = table
        self.workflow_name = workflow_name
        self.planner = planner
        self.adapters = adapters
        self.clock = clock
        self.deadline_s = deadline_s
        self.seed = seed
        self.run_id = run_id
        self.options = options
        self.subtasks = subtasks  # the workflow's subtasks in table order, for their prompts
        self._emit = emit
        self.ledger = Ledger(budget_pusd, output_token_cap=options.output_token_cap)
        n = table.n_subtasks
        self._inbox: Inbox[_SampleEnded] = clock.inbox()
        self._complete = [False] * n
        self._n_complete = 0
        self._deps_left = [len(table.deps(i)) for i in range(n)]
        self._ready = {i for i in range(n) if self._deps_left[i] == 0}  # deps done, not complete, none in flight
        self._in_flight: dict[int, _Batch] = {}
        self._failed: list[FailedBatch] = []
        self._open = 0  # samples in flight
        self._cancelling = 0  # samples cancelled whose report has not arrived yet
        self._next_batch = 0
        self._samples_launched = [0] * n
        self._batches = [0] * n
        self._cost = [0] * n
        self._model_done: list[int | None] = [None] * n
        self._completed_at: list[float | None] = [None] * n
        self._output: list[str | None] = [None] * n
        self._planner_ms: list[float] = []
        self._reason: str | None = None
        self._planner_reason: str | None = None
        self._rejected: set[str] = set()  # why launches of the last decision were refused
        self._fatal: ProviderRejectedError | None = None  # an endpoint refused us for good
        self._t0 = 0.0
        self._deadline = 0.0

    async def run(self) -> RunResult:
        """Run to success, the deadline, or until nothing feasible is left; never raises for those.

        Raises:
            ProviderRejectedError: an endpoint refused the key, the permission or the model (HTTP 401, 403,
                404); the run is stopped first, everything in flight settled and ``RunFinished`` emitted.
        """
        t = self.table
        self._t0 = self.clock.now()
        self._deadline = self._t0 + self.deadline_s
        self._emit(
            RunStarted(
                t=0.0,
                run_id=self.run_id,
                workflow=self.workflow_name,
                subtasks=t.n_subtasks,
                models=t.model_names,
                budget_pusd=self.ledger.budget_pusd,
                deadline_s=self.deadline_s,
                planner=self.planner.name,
                seed=self.seed,
                clock=type(self.clock).__name__,
                cancel_siblings=self.options.cancel_siblings,
                rounds=self.options.rounds,
            )
        )
        with self.clock.participate(), single_error():
            async with anyio.create_task_group() as tg:
                try:
                    await self._drive(tg)
                finally:
                    tg.cancel_scope.cancel()
        success = self._n_complete == t.n_subtasks
        if success:  # leftover siblings may be cancelled a moment later; the run was done at the last completion
            elapsed = max(c for c in self._completed_at if c is not None)
        else:
            elapsed = min(self._elapsed(), self.deadline_s)
        spent = self.ledger.spent.pusd
        self._emit(
            RunFinished(
                t=self._elapsed(),
                success=success,
                reason=self._reason,
                spent_pusd=spent,
                cost_usd=to_usd(spent),
                elapsed_s=elapsed,
                completed=self._n_complete,
                subtasks=t.n_subtasks,
            )
        )
        if self._fatal is not None:
            raise self._fatal
        return RunResult(
            success=success,
            reason=self._reason,
            cost=to_usd(spent),
            cost_pusd=spent,
            elapsed=elapsed,
            budget=to_usd(self.ledger.budget_pusd),
            deadline=self.deadline_s,
            seed=self.seed,
            planner=self.planner.name,
            subtasks={
                sid: SubtaskOutcome(
                    id=sid,
                    completed=self._complete[i],
                    model=self._model_name(self._model_done[i]),
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

    def _model_name(self, j: int | None) -> str | None:
        return None if j is None else self.table.model_names[j]

    def _elapsed(self) -> float:
        return self.clock.now() - self._t0

    async def _drive(self, tg: anyio.abc.TaskGroup) -> None:
        n = self.table.n_subtasks
        rounds = self.options.rounds
        await self._plan(tg)
        replan = False
        while self._n_complete < n:
            # In rounds, a change waits (replan stays set) until the last sample in flight has ended.
            if replan and self._cancelling == 0 and not (rounds and self._open):
                replan = False
                await self._plan(tg)
            if self._open == 0:
                self._reason = self._why_stuck()
                return
            msg = await self._inbox.get(until=self._deadline)
            if msg is None:
                self._reason = DEADLINE
                self._emit(DeadlineHit(t=self._elapsed(), cancelled_samples=self._open))
                await self._cancel_all_and_drain()
                return
            replan |= self._on_sample_ended(msg)
            if self._fatal is not None:
                self._reason = REJECTED
                await self._cancel_all_and_drain()
                return
        # Success. With cancel_siblings off, samples of completed subtasks may still be running: stop them.
        await self._cancel_all_and_drain()

    async def _cancel_all_and_drain(self) -> None:
        for b in self._in_flight.values():
            self._cancel_batch(b)
        while self._open:
            msg = await self._inbox.get()
            if msg is not None:
                self._on_sample_ended(msg)

    def _cancel_batch(self, b: _Batch) -> None:
        for idx, h in enumerate(b.handles):
            if h is not None:
                b.handles[idx] = None
                self._cancelling += 1
                h.cancel()

    # -- planning -------------------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        now = self._elapsed()
        avail = self.ledger.available
        return Snapshot(
            table=self.table,
            now=now,
            time_left=self.deadline_s - now,
            budget_pusd=self.ledger.budget_pusd,
            budget_left_pusd=avail.pusd,
            output_tokens_left=None if self.options.output_token_cap is None else avail.output_tokens,
            completed=frozenset(i for i, c in enumerate(self._complete) if c),
            ready=tuple(sorted(self._ready)),
            in_flight=tuple(
                InFlight(b.id, b.subtask, b.model, b.k, b.started_at - self._t0, b.open, b.done)
                for b in self._in_flight.values()
            ),
            failed=tuple(self._failed),
            samples_launched=tuple(self._samples_launched),
            cancel_siblings=self.options.cancel_siblings,
            rounds=self.options.rounds,
        )

    async def _plan(self, tg: anyio.abc.TaskGroup) -> None:
        if not self._ready or self.clock.now() >= self._deadline:
            return
        snap = self._snapshot()
        start = time.perf_counter()
        if self.planner.in_thread:
            decision = await anyio.to_thread.run_sync(self.planner.decide, snap, limiter=_PLANNER_THREADS)
        else:
            decision = self.planner.decide(snap)
        ms = (time.perf_counter() - start) * 1000.0
        self._planner_ms.append(ms)
        names = self.table.model_names
        launches = self._checked(decision, snap)
        self._planner_reason = decision.reason
        self._rejected.clear()
        self._emit(
            DecisionMade(
                t=self._elapsed(),
                launches=tuple((self.table.subtask_ids[i], names[a.model], a.k) for i, a in launches),
                planner_ms=ms,
            )
        )
        if self.options.charge_planner_time:
            await self.clock.sleep_until(self.clock.now() + ms / 1000.0)
        for i, launch in launches:
            self._launch(tg, i, launch)

    def _checked(self, decision: Decision, snap: Snapshot) -> list[tuple[int, Launch]]:
        if not isinstance(decision, Decision):
            raise PlannerError(f"planner {self.planner.name!r} returned {type(decision).__name__}, not a Decision")
        ready = set(snap.ready)
        out = []
        for i, a in decision.launches.items():
            if i not in ready:
                raise PlannerError(f"planner {self.planner.name!r} launched subtask {i}, which is not ready")
            if not (isinstance(a.k, int) and a.k >= 1) or not 0 <= a.model < self.table.n_models:
                raise PlannerError(f"planner {self.planner.name!r} returned an invalid launch {a}")
            if self.table.kind[i, a.model] < 0:
                raise PlannerError(
                    f"planner {self.planner.name!r} put subtask {self.table.subtask_ids[i]!r} on model "
                    f"{self.table.model_names[a.model]!r}, which cannot run it"
                )
            out.append((int(i), a))
        return out

    def _launch(self, tg: anyio.abc.TaskGroup, i: int, a: Launch) -> None:
        t = self.table
        j, k = a.model, a.k
        now = self.clock.now()
        sid, model = t.subtask_ids[i], t.model_names[j]
        if i not in self._ready:  # the subtask's state changed while the planner was being charged
            return
        if now + float(t.min_latency[i, j]) > self._deadline:
            self._rejected.add(DEADLINE)
            self._emit(LaunchRejected(t=now - self._t0, subtask=sid, model=model, k=k, reason=DEADLINE))
            return
        max_tokens = int(t.max_tokens[j])
        adapter = self.adapters[j]
        messages = self._messages(i)
        input_tokens = adapter.input_tokens(int(t.input_tokens[i]), messages)
        check_pusd = adapter.check_pusd(i, max_tokens)
        worst = input_tokens * int(t.in_price[j]) + max_tokens * int(t.out_price[j]) + check_pusd
        share = Usage(worst, max_tokens)
        res = self.ledger.reserve(share * k)
        if res is None:
            self._rejected.add(BUDGET)
            self._emit(LaunchRejected(t=now - self._t0, subtask=sid, model=model, k=k, reason=BUDGET))
            return
        self._next_batch += 1
        b = _Batch(self._next_batch, i, j, k, now, res, share)
        self._emit(
            BudgetReserved(
                t=now - self._t0,
                reservation=res.id,
                batch=b.id,
                pusd=res.held.pusd,
                output_tokens=res.held.output_tokens,
            )
        )
        self._emit(BatchLaunched(t=now - self._t0, batch=b.id, subtask=sid, model=model, k=k, max_tokens=max_tokens))
        self._ready.discard(i)
        self._in_flight[b.id] = b
        self._open += k
        self._samples_launched[i] += k
        self._batches[i] += 1
        deadline = self.clock.wall_time_of(self._deadline)
        for idx in range(k):
            req = SampleRequest(
                i, sid, j, model, input_tokens, max_tokens, (b.id, idx), k, messages, deadline, check_pusd
            )
            b.handles.append(
                self.clock.spawn(tg, self._sample_runner(adapter, req, b, idx), name=f"{sid}#{b.id}.{idx}")
            )

    def _messages(self, i: int) -> tuple[Message, ...] | None:
        if self.subtasks is None or self.subtasks[i].prompt is None:  # simulated workflows: nothing to render
            return None
        outputs = {self.table.subtask_ids[d]: self._output[d] for d in self.table.deps(i).tolist()}
        return render(self.subtasks[i], outputs)

    def _sample_runner(
        self, adapter: Adapter, req: SampleRequest, b: _Batch, idx: int
    ) -> Callable[[], Awaitable[None]]:
        async def run_sample() -> None:
            progress = SampleProgress()
            outcome: SampleOutcome | None = None
            error: str | None = None
            fatal: ProviderRejectedError | None = None
            try:
                outcome = await adapter.sample(req, progress)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # an adapter failure is a failed sample, never a crashed run
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, ProviderRejectedError) and exc.fatal:
                    fatal = exc
            finally:
                # No await here: this must run even while the task is being cancelled.
                ended = _SampleEnded(b, idx, outcome, progress, outcome is None and error is None, error, fatal)
                self._inbox.put(ended, (b.id, idx))

        return run_sample

    # -- events ---------------------------------------------------------------------------------------

    def _on_sample_ended(self, msg: _SampleEnded) -> bool:
        """Settle one sample; return True if what is possible changed (so the planner must be asked)."""
        t = self.table
        b = msg.batch
        i, j = b.subtask, b.model
        now = self.clock.now()
        rel = now - self._t0
        if msg.cancelled:
            self._cancelling -= 1
        elif b.handles[msg.index] is None:
            self._cancelling -= 1  # cancelled, but it had finished before the cancellation reached it
        b.handles[msg.index] = None
        if msg.outcome is not None:
            inp, out, check = msg.outcome.input_tokens, msg.outcome.output_tokens, msg.outcome.check_pusd
            status = "succeeded" if msg.outcome.success else "failed"
        else:
            inp, out, check = msg.progress.input_tokens, msg.progress.output_tokens, msg.progress.check_pusd
            status = "cancelled" if msg.cancelled else "error"
        cost = int(inp * t.in_price[j] + out * t.out_price[j]) + check
        released = self.ledger.settle(b.reservation, Usage(cost, out), b.share)
        sid, model = t.subtask_ids[i], t.model_names[j]
        self._emit(
            SampleFinished(
                t=rel,
                batch=b.id,
                sample=msg.index,
                subtask=sid,
                model=model,
                status=status,
                input_tokens=inp,
                output_tokens=out,
                latency_s=now - b.started_at,
                error=msg.error,
            )
        )
        self._emit(
            BudgetSettled(
                t=rel,
                reservation=b.reservation.id,
                batch=b.id,
                sample=msg.index,
                pusd=cost,
                output_tokens=out,
                released_pusd=released.pusd,
                released_output_tokens=released.output_tokens,
            )
        )
        if msg.fatal is not None and self._fatal is None:
            self._fatal = msg.fatal
        self._cost[i] += cost
        self._open -= 1
        b.open -= 1
        changed = False
        if status == "succeeded" and not self._complete[i] and now <= self._deadline:
            self._complete_subtask(b, msg, rel)
            changed = True
            if self.options.cancel_siblings:
                self._cancel_batch(b)
        if b.open == 0:
            del self._in_flight[b.id]
            if not b.done:
                self._failed.append(FailedBatch(i, j, b.k, b.started_at - self._t0, rel))
                self._emit(BatchFailed(t=rel, batch=b.id, subtask=sid, model=model))
                self._ready.add(i)
            changed = True  # a batch ended: its reservation is free again
        return changed

    def _complete_subtask(self, b: _Batch, msg: _SampleEnded, rel: float) -> None:
        i = b.subtask
        b.done = True
        self._complete[i] = True
        self._n_complete += 1
        self._model_done[i] = b.model
        self._completed_at[i] = rel
        self._output[i] = msg.outcome.output if msg.outcome is not None else None
        self._emit(
            SubtaskCompleted(
                t=rel, subtask=self.table.subtask_ids[i], batch=b.id, model=self.table.model_names[b.model]
            )
        )
        for c in self.table.children(i).tolist():
            self._deps_left[c] -= 1
            if self._deps_left[c] == 0:
                self._ready.add(c)

    def _why_stuck(self) -> str:
        """Nothing is in flight and nothing was launched: say why the run cannot go on."""
        t = self.table
        if self.clock.now() >= self._deadline:
            return DEADLINE
        avail = self.ledger.available
        time_left = self._deadline - self.clock.now()
        affordable = timely = False
        for i in self._ready:
            for j in range(t.n_models):
                if t.kind[i, j] < 0:
                    continue
                if Usage(int(t.worst_cost[i, j]), int(t.max_tokens[j])).fits_in(avail):
                    affordable = True
                    timely |= float(t.min_latency[i, j]) <= time_left
        if not affordable:
            return BUDGET
        if not timely or DEADLINE in self._rejected:
            return DEADLINE
        if BUDGET in self._rejected:
            return BUDGET
        if self._planner_reason in (BUDGET, DEADLINE):
            return self._planner_reason
        return GAVE_UP
