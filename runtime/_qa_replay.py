"""Recording a real model's search-agent turns once, so that every controller can be compared on them offline.

The recorder explores with :func:`runtime._qa.run_agent` itself, so a recorded trajectory is one the agent really
takes: a scripted controller plays a fixed sequence of directives, and a recording wrapper around the model calls the
endpoint only for a model-visible state it has not seen (at all the tokens left, cut to the turn's allowance before
the agent sees it), so replaying a prefix costs nothing. Per question and budget, the sequences grow breadth-first:
every prefix is extended by every directive kind (each action the chat prompt can inject, and free-running, with and
without the budget shown) until the run ends by itself; children that leave the same visible trace and budget are
explored once. Then each named controller is run too, so that turns it asks for with a smaller allowance (cut short,
a state the exploration at full allowance never reaches) are recorded as well. The file format is in
:mod:`adapters.replay_agent`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from adapters.chat_agent import INSTRUCTIONS
from adapters.replay_agent import FORMAT, VERSION, Recorded, turn_key
from planners import make_controller
from runtime._qa import run_agent
from runtime.types import Action, AgentModel, Directive, ProviderError, QAController, SinkError, UsageError
from tools.qa_data import pool_corpus
from tools.retrieval import BM25Search

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from runtime.types import ModelTurn, QABudget, SearchTool, Trace
    from tools.qa_data import QAExample

__all__ = ["Kind", "RecordSummary", "directive_kinds", "record_qa"]

Kind = tuple[Action | None, bool]  # a directive's action (None: free-running) and whether it shows the budget


def directive_kinds(show_budget: bool) -> list[Kind]:
    """Every directive of one prompt style: free-running, or each action the chat prompt can inject."""
    return [(a, show_budget) for a in (None, *(a for a in Action if a is not Action.STALL and a in INSTRUCTIONS))]


class _Recorder(AgentModel):
    """The endpoint's model behind a cache keyed by what the model sees; ``write`` gets every new turn.

    A failed call is kept in ``failed`` and no later call is made: the agent records the failure as a stalled step,
    a state no replay reaches, so nothing after it may be recorded.
    """

    def __init__(self, inner: AgentModel, write: Callable[[Recorded], None]) -> None:
        self.inner = inner
        self.write = write
        self.turns: dict[str, Recorded] = {}
        self.calls = 0
        self.failed: ProviderError | None = None

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        if self.failed is not None:
            raise self.failed
        key = turn_key(trace, directive, budget)
        rec = self.turns.get(key)
        if rec is None or not rec.covers(directive.max_tokens):
            asked = replace(directive, max_tokens=budget.tokens_left)
            start = time.perf_counter()
            try:
                got = await self.inner.turn(trace, asked, budget)
            except ProviderError as exc:
                self.failed = exc
                raise
            rec = Recorded.of(trace, asked, budget, got, time.perf_counter() - start)
            self.turns[key] = rec
            self.calls += 1
            self.write(rec)
        return rec.replay(directive.max_tokens)


class _Script(QAController):
    """Plays ``kinds`` with all the tokens left, then stops the run (an allowance of 0)."""

    name = "script"

    def __init__(self, kinds: Sequence[Kind]) -> None:
        self.kinds = kinds
        self.played = 0

    @property
    def ended(self) -> bool:
        """Whether the run was stopped by the script, not by itself."""
        return self.played > len(self.kinds)

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        self.played += 1
        if self.played > len(self.kinds):
            return Directive(None, 0)
        action, show = self.kinds[self.played - 1]
        return Directive(action, budget.tokens_left, show)


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What a recording cost: endpoint calls per question (in data set order) and the runs it took."""

    calls: list[int]
    runs: int

    @property
    def total(self) -> int:
        return sum(self.calls)


async def _explore(question: str, rec: _Recorder, search: SearchTool, budget: tuple[int, int],
                   controllers: Sequence[QAController], explore: bool) -> int:  # fmt: skip
    """Record every turn of ``question`` reachable at ``budget``; returns the runs it took."""

    async def play(ctl: QAController) -> str:
        """Run ``ctl``; the state it ends in: the visible trace and what is left of the budget."""
        r = await run_agent(question, model=rec, search=search, controller=ctl, tool_calls=budget[0],
                            tokens=budget[1], finalize=False)  # fmt: skip
        if rec.failed is not None:
            raise rec.failed
        steps = [[s.thought, s.query, [h.id for h in s.hits]] for s in r.trace.steps]
        return json.dumps([steps, r.tool_calls, r.output_tokens])

    runs = 0
    # Every controller keeps one prompt style for a run (the budget shown or not), so styles are not mixed within a
    # sequence: mixing them would double the branching at every turn for runs no controller makes.
    for kinds in (directive_kinds(False), directive_kinds(True)) if explore else ():
        seen: set[str] = set()
        frontier: list[tuple[Kind, ...]] = [()]
        while frontier:
            grown = []
            for prefix in frontier:
                for kind in kinds:
                    script = _Script((*prefix, kind))
                    state = await play(script)
                    runs += 1
                    if script.ended and state not in seen:
                        seen.add(state)
                        grown.append((*prefix, kind))
            frontier = grown
    for ctl in controllers:
        await play(ctl)
    return runs + len(controllers)


async def record_qa(
    examples: Sequence[QAExample],
    *,
    model: AgentModel,
    out: Path,
    model_id: str,
    dataset: str,
    ladder: Sequence[tuple[int, int]],
    controllers: Sequence[str],
    explore: bool = True,
    search: SearchTool | None = None,
    progress: Callable[[int], None] | None = None,
) -> RecordSummary:
    """Record ``model``'s turns for every question of ``examples`` at every budget of ``ladder`` into ``out``.

    ``explore`` records every directive sequence (any controller can then be replayed; this costs thousands of calls
    a question at the larger budgets); without it only the runs of ``controllers`` are recorded. ``progress`` is
    called once per (question, budget) done. The caller owns ``model`` (and closes it).

    Raises:
        UsageError: ``out`` exists, no questions or budgets, or an unknown controller.
        SinkError: ``out`` cannot be written.
        ProviderError: the endpoint failed (after its retries): the file keeps what was recorded until then.
    """
    if not examples or not ladder:
        raise UsageError("record at least one question at one budget")
    ctls = [make_controller(c) for c in controllers]
    search = search or BM25Search(pool_corpus(examples))
    header = {"row": "header", "format": FORMAT, "version": VERSION, "model": model_id, "dataset": dataset,
              "questions": [ex.id for ex in examples], "budgets": [list(b) for b in ladder],
              "actions": [a for a, _ in directive_kinds(False)] if explore else [],
              "created": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    try:
        f = out.open("x", encoding="utf-8", buffering=1)  # line-buffered: an interrupted recording keeps its turns
    except FileExistsError:
        raise UsageError(f"{out} exists: record into a new file") from None
    except OSError as exc:
        raise SinkError(f"cannot write the recording {out}: {exc.strerror or exc}") from None

    def write(row: dict[str, Any]) -> None:
        try:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise SinkError(f"cannot write the recording {out}: {exc.strerror or exc}") from None

    calls, runs = [], 0
    with f:
        write(header)
        for ex in examples:
            rec = _Recorder(model, lambda r: write(r.to_row()))
            for budget in ladder:
                runs += await _explore(ex.question, rec, search, budget, ctls, explore)
                if progress is not None:
                    progress(1)
            write({"row": "question", "question": ex.question, "budgets": [list(b) for b in ladder],
                   "calls": rec.calls})  # fmt: skip
            calls.append(rec.calls)
    return RecordSummary(calls, runs)
