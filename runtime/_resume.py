"""Resume a run from its journal after its process died (``kill -9`` included).

What the journal guarantees (:class:`runtime._sinks.JournalSink`): every event is one line handed to the
operating system as it happens, and a batch's reservation is on file before its request is sent. A killed
process therefore loses at most the line it was writing (a torn last line, which :func:`read_journal` drops
with a warning); a power cut can lose what the OS had not written yet (the journal is fsynced only at the
end of a run). From the journal, a resumed run:

- keeps every subtask a ``subtask_completed`` event records, with its output (never run again);
- charges what the crashed run spent (its settlements) and, for samples still in flight at the crash, their
  whole reservation: their requests may have been answered and billed after the last line was written;
- gets the rest of the budget and the rest of the time: the original deadline stands (on the real clock it
  counts from the crashed run's start in wall time, times the ``speed`` option; on the virtual clock, from
  the crashed run's last event);
- keeps to what is left of an output-token cap, charged the same way (settled tokens, and held ones in full);
- carries on each subtask's batch count and the models of its failed batches (a repair loop's invocations
  and a history-dependent subtask's evidence), but not a repair's failed answer, which the journal does not
  hold: a loop's next invocation starts afresh;
- writes a journal of its own, whose ``run_started`` names the run it resumes and what that run had
  charged (``resumed_from``, ``spent_before_pusd``), so a resumed run can itself be resumed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Unpack, cast

import anyio

from runtime._api import RunSetup, open_setup, refuse_inside_event_loop
from runtime._executor import Resumed
from runtime._sinks import read_journal, replay_ledger
from runtime.types import PUSD_PER_USD, UsageError
from runtime.types._money import to_pusd

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from os import PathLike

    from runtime._api import RunOptions, WorkflowLike
    from runtime._result import RunResult

__all__ = ["ResumePoint", "aresume", "resume", "resume_point"]


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """What a journal says about a run that stopped before its end (money in pico-dollars, times in seconds)."""

    run_id: str
    spec: str | None  # the spec file the run loaded, if it recorded one
    budget_pusd: int  # the run's budget (what earlier crashes charged excluded)
    deadline_s: float
    spent_before_pusd: int  # what the runs it resumed had charged
    spent_pusd: int  # settled
    held_pusd: int  # still reserved at the crash: charged in full
    elapsed_s: float  # of the deadline, gone by now
    planner: str
    seed: int
    clock: str  # the clock's class name: "VirtualClock", "RealClock", ...
    cancel_siblings: bool
    rounds: bool
    output_token_cap: int | None  # the run's cap on output tokens, if any
    output_tokens_charged: int  # settled, and still reserved at the crash
    completed: Mapping[str, tuple[str, str | None]]  # subtask id -> (model, output)
    batches: Mapping[str, int]  # subtask id -> batches launched
    failed: Mapping[str, Sequence[str]]  # subtask id -> the models of its failed batches, in order

    @property
    def budget_left_pusd(self) -> int:
        return self.budget_pusd - self.spent_pusd - self.held_pusd

    @property
    def deadline_left_s(self) -> float:
        return self.deadline_s - self.elapsed_s


def resume_point(journal: str | PathLike[str], *, now: float | None = None, speed: float = 1.0) -> ResumePoint:
    """Read where the run of ``journal`` stopped. For a run on the real clock, the time gone is the wall time
    from its start to ``now`` (Unix seconds; default the current time), times ``speed`` (clock seconds per
    wall second, as the run's option).

    Raises:
        UsageError: the journal cannot be read, holds no run start, or its run finished (nothing to resume).
    """
    events = read_journal(journal)
    try:
        return _point(str(journal), events, time.time() if now is None else now, speed)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # events with fields missing or of odd types
        raise UsageError(f"{journal}: not a run's journal ({type(exc).__name__}: {exc})") from None


def _point(journal: str, events: list[dict[str, Any]], now: float, speed: float) -> ResumePoint:
    """:func:`resume_point` of a journal's events; a field missing or of an odd type raises (KeyError, ...)."""
    start = next((e for e in events if e["event"] == "run_started"), None)
    if start is None:
        raise UsageError(f"{journal}: no run_started event, so no run to resume")
    if any(e["event"] == "run_finished" for e in events):
        raise UsageError(f"{journal}: the run finished; there is nothing to resume")
    ledger = replay_ledger(events)
    completed: dict[str, tuple[str, str | None]] = {}
    batches: dict[str, int] = {}
    failed: dict[str, list[str]] = {}
    tokens = 0  # output tokens reserved, less those given back: settled ones and those still held
    for e in events:
        if e["event"] == "budget_reserved":
            tokens += int(e["output_tokens"])
        elif e["event"] == "budget_settled":
            tokens -= int(e["released_output_tokens"])
        elif e["event"] == "subtask_completed":
            output = e.get("output")
            completed[str(e["subtask"])] = (str(e["model"]), None if output is None else str(output))
        elif e["event"] == "batch_launched":
            sid = str(e["subtask"])
            batches[sid] = batches.get(sid, 0) + 1
        elif e["event"] == "batch_failed":
            failed.setdefault(str(e["subtask"]), []).append(str(e["model"]))
    last = max(float(e["t"]) for e in events)
    started_at = start.get("started_at")
    elapsed = last
    if start["clock"] != "VirtualClock" and started_at is not None:  # wall time went on after the crash
        elapsed = max(last, (now - float(started_at)) * speed)
    return ResumePoint(
        run_id=str(start["run_id"]),
        spec=None if start.get("spec") is None else str(start["spec"]),
        budget_pusd=int(start["budget_pusd"]),
        deadline_s=float(start["deadline_s"]),
        spent_before_pusd=int(start.get("spent_before_pusd", 0)),
        spent_pusd=ledger.spent_pusd,
        held_pusd=ledger.reserved_pusd,
        elapsed_s=elapsed,
        planner=str(start["planner"]),
        seed=int(start["seed"]),
        clock=str(start["clock"]),
        output_token_cap=None if start.get("output_token_cap") is None else int(start["output_token_cap"]),
        output_tokens_charged=tokens,
        cancel_siblings=bool(start["cancel_siblings"]),
        rounds=bool(start.get("rounds", False)),
        completed=completed,
        batches=batches,
        failed=failed,
    )


async def aresume(
    journal: str | PathLike[str], workflow: WorkflowLike | None = None, /, **options: Unpack[RunOptions]
) -> RunResult:
    """Continue the run of ``journal`` (its process died) in a new run: the same workflow, what is left of
    its budget and deadline, every subtask it completed kept with its output (module docstring: what is
    charged and kept). Returns the new run's result: its ``subtasks`` include the kept ones, its ``cost``
    is the new run's spending; the two runs together spent at most the original budget.

    Args:
        journal: the crashed run's journal (never written to).
        workflow: the workflow it ran (default: the spec file its journal names).
        options: :func:`runtime.open_run`'s; ``planner``, ``seed``, ``cancel_siblings``, ``rounds`` and a
            real clock default to the crashed run's. Pass ``journal`` for the new run's own journal.

    Raises:
        UsageError: nothing to resume (see :func:`resume_point`), no workflow, a workflow that is not the
            journal's, or no money or time left; before anything is spent.
    """
    speed = options.get("speed", 1.0)
    point = resume_point(journal, speed=speed if isinstance(speed, int | float) else 1.0)  # RunSetup checks it
    if workflow is None:
        if point.spec is None:
            raise UsageError(f"{journal}: the journal names no spec file; pass the workflow")
        workflow = point.spec
    if point.budget_left_pusd <= 0:
        raise UsageError(f"{journal}: no money left to resume with (the crash left nothing of the budget)")
    if point.deadline_left_s <= 0:
        raise UsageError(f"{journal}: no time left to resume with (the deadline has passed)")
    kept = {"planner": point.planner, "seed": point.seed, "cancel_siblings": point.cancel_siblings}
    if point.clock == "RealClock":  # a simulated workflow played in real time goes on in real time
        kept["clock"] = "real"
    if point.output_token_cap is not None:  # what is left of it: settled and held tokens charged, as dollars are
        left = point.output_token_cap - point.output_tokens_charged
        if left <= 0:
            raise UsageError(f"{journal}: no output tokens left to resume with (the crash left nothing of the cap)")
        kept["output_token_cap"] = left
    merged = cast("RunOptions", {**kept, "rounds": point.rounds, **options})
    setup = RunSetup(workflow, _dollars_within(point.budget_left_pusd), point.deadline_left_s, merged)
    resumed = _resumed(point, setup)
    async with open_setup(setup, resumed) as run:
        return await run.execute()


def resume(
    journal: str | PathLike[str], workflow: WorkflowLike | None = None, /, **options: Unpack[RunOptions]
) -> RunResult:
    """Synchronous :func:`aresume`."""
    refuse_inside_event_loop("runtime.resume()", "await runtime.aresume(...)")
    return anyio.run(partial(aresume, journal, workflow, **options))


def _dollars_within(pusd: int) -> float:
    """A dollar amount whose pico-dollars (:func:`to_pusd`) are ``pusd`` exactly wherever a float can say so
    (below about $280), and never more: a resumed run gets what the crash left, not one pico-dollar less.

    Aiming half a pico-dollar up puts the product back on ``pusd`` despite the float's rounding, which can
    otherwise land just under it (and :func:`to_pusd` rounds down); stepping down keeps the bound."""
    usd = (pusd + 0.5) / PUSD_PER_USD
    while to_pusd(usd) > pusd:
        usd = math.nextafter(usd, 0.0)
    return usd


def _resumed(point: ResumePoint, setup: RunSetup) -> Resumed:
    """The executor's start from ``point``, checked against the workflow."""
    table = setup.table
    ids = {sid: i for i, sid in enumerate(table.subtask_ids)}
    models = {name: j for j, name in enumerate(table.model_names)}
    named: Any = [*point.completed, *point.batches, *point.failed]
    unknown = sorted({s for s in named if s not in ids})
    strange = sorted({m for m, _ in point.completed.values()} | {m for ms in point.failed.values() for m in ms})
    if unknown or any(m not in models for m in strange):
        raise UsageError(
            f"the workflow {setup.workflow.name!r} is not the journal's: subtasks {unknown or 'all known'}, "
            f"models {[m for m in strange if m not in models] or 'all known'}"
        )
    return Resumed(
        run_id=point.run_id,
        completed={ids[s]: done for s, done in point.completed.items()},
        batches=[point.batches.get(sid, 0) for sid in table.subtask_ids],
        history=[[models[m] for m in point.failed.get(sid, ())] for sid in table.subtask_ids],
        spent_before_pusd=point.spent_before_pusd + point.spent_pusd + point.held_pusd,
    )
