"""The search agent: a model answers a multi-hop question with a retrieval tool under two hard caps.

Each turn the controller picks a directive (the action to inject and the turn's token allowance), the model answers
with ``<thought>``, then ``<tool_call>`` or ``<answer>``, and the agent executes the call. Every turn's output tokens
(at most what is left) and every tool call are reserved on the ledger before they are spent, and the model is asked
for at most that allowance (``max_tokens``); a model that wants a search with no tool call left is not given one.
The cap is audited, not assumed: a turn's output is recorded as the model reported it, and a turn over its allowance
(an endpoint that ignores ``max_tokens``) ends the run at once with reason ``over_allowance``, before it can take
more; ``evaluate_qa`` scores such a run 0 and counts it as a cap violation, like a run whose totals exceed either cap.
A turn whose endpoint fails is charged its whole allowance (what it produced is unknown). A malformed turn
(no closing tag) is a stall; if the controller asked for retrieval, the agent searches the question's key words itself
(the VOI paper's guardrail). A Verify or Reason turn is thought only: it searches nothing, not even a tool call the
model wrote in it. The controller picks which node of the search tree each turn extends (a linear controller: the
latest, so the run is one branch; BAVT: any), and every branch is charged to the same caps under the same audit. Then
the finalizer (if on) picks the base or a refined answer, without a call, from the answering node's trajectory (or,
if none answered, the one the controller rates best).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio

from planners import finalizer
from runtime._executor import GIVE_UP_AFTER
from runtime._ledger import Ledger, Usage
from runtime.types import (
    DEFAULT_TOP_K,
    Action,
    AgentFinished,
    AgentStarted,
    AgentStep,
    LimitError,
    Node,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    QABudget,
    RateLimitedError,
    RealClock,
    Step,
    StopReason,
    Trace,
    check_limit,
    content_tokens,
    parse_turn,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from planners.finalizer import Finalization
    from runtime.types import AgentModel, Clock, Directive, Event, Hit, Parsed, QAController, SearchTool

__all__ = ["QAResult", "run_agent"]


@dataclass(frozen=True, slots=True)
class QAResult:
    """How one question went. ``answer`` is final (after the finalizer, if it ran); ``detail`` is the last
    endpoint error when the agent stopped because its model could not be reached."""

    question: str
    answer: str
    base_answer: str
    tool_calls: int
    output_tokens: int
    reason: StopReason
    controller: str
    trace: Trace = field(repr=False)
    finalization: Finalization | None = field(default=None, repr=False)
    detail: str | None = None

    @property
    def refined(self) -> str | None:
        """The finalizer's refined candidate (None if it did not run or had none)."""
        return None if self.finalization is None else self.finalization.refined

    @property
    def finalized(self) -> bool:
        """Whether the finalizer replaced the base answer."""
        return self.finalization is not None and self.finalization.accepted


async def run_agent(
    question: str,
    *,
    model: AgentModel,
    search: SearchTool,
    controller: QAController,
    tool_calls: int,
    tokens: int,
    finalize: bool = True,
    top_k: int = DEFAULT_TOP_K,
    deadline_s: float | None = None,
    clock: Clock | None = None,
    on_step: Callable[[Step, QABudget], None] | None = None,
    emit: Callable[[Event], None] | None = None,
) -> QAResult:
    """Answer ``question`` within ``tool_calls`` searches and ``tokens`` output tokens (and ``deadline_s``
    on ``clock``, by default the real one).

    ``on_step`` sees every step with the budget left after it; ``emit`` gets the typed events
    (``AgentStarted``, one ``AgentStep`` per turn, ``AgentFinished``). The deadline bounds model turns and
    searches alike; a search that fails is a spent tool call and a stalled step, not the end of the answer.

    Raises:
        LimitError: bad caps or deadline.
        ProviderRejectedError: the model's or the search's endpoint refused the key, the permission or the model.
    """
    if isinstance(tool_calls, bool) or not isinstance(tool_calls, int) or tool_calls < 0:
        raise LimitError(f"tool_calls must be a non-negative integer, not {tool_calls!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise LimitError(f"tokens must be a positive integer, not {tokens!r}")
    if deadline_s is not None:
        check_limit("deadline", deadline_s)
    ledger = Ledger(2**62, output_token_cap=tokens, tool_call_cap=tool_calls)
    clock = clock or RealClock()
    t0 = clock.now()
    end = None if deadline_s is None else t0 + deadline_s
    wall_end = None if end is None else clock.wall_time_of(end)

    def time_left() -> float:
        return math.inf if wall_end is None else max(0.0, wall_end - time.monotonic())

    if emit is not None:
        emit(AgentStarted(t=0.0, question=question, controller=controller.name, tool_calls=tool_calls, tokens=tokens))

    def record(node: Node) -> None:
        step, after = node.trace.steps[-1], turns.budget()
        if on_step is not None:
            on_step(step, after)
        if emit is not None:
            assert node.parent is not None
            emit(AgentStep(t=clock.now() - t0, step=node.id, parent=node.parent.id, directive=step.directive,
                           action=step.action, output_tokens=step.output_tokens, query=step.query,
                           hits=tuple(h.title for h in step.hits), answer=step.answer,
                           tool_calls_left=after.tool_calls_left, tokens_left=after.tokens_left))  # fmt: skip

    turns = _Turns(model, search, ledger, tool_calls, tokens, top_k, time_left)
    tree = [Node(0, None, Trace(question))]
    reason = StopReason.TURNS
    for _ in range(4 * tool_calls + 6):
        budget = turns.budget()
        if budget.tokens_left < 1:
            reason = StopReason.BUDGET
            break
        if end is not None and clock.now() >= end:
            reason = StopReason.DEADLINE
            break
        node, d = controller.expand(tree, budget)
        branch = node.trace.branch()
        stop = await turns.take(branch, d, budget)
        if len(branch.steps) > len(node.trace.steps):  # the turn made a step: a new node under the one it extended
            child = Node(len(tree), node, branch)
            node.children.append(child)
            tree.append(child)
            record(child)
        if stop is not None:
            reason = stop
            break
    trace = (tree[-1] if reason is StopReason.ANSWERED else controller.best(tree)).trace
    detail = turns.detail
    spent = replace(ledger.spent, output_tokens=ledger.spent.output_tokens + turns.overrun)  # as reported
    base = trace.answer or trace.candidate or ""
    fin = finalizer.finalize(trace, base) if finalize else None
    answer = base if fin is None else fin.answer
    if emit is not None:
        emit(AgentFinished(t=clock.now() - t0, answer=answer, base_answer=base, finalized=bool(fin and fin.accepted),
                           tool_calls=spent.tool_calls, output_tokens=spent.output_tokens, reason=reason))  # fmt: skip
    return QAResult(
        question=question,
        answer=answer,
        base_answer=base,
        tool_calls=spent.tool_calls,
        output_tokens=spent.output_tokens,
        reason=reason,
        controller=controller.name,
        trace=trace,
        detail=detail,
        finalization=fin,
    )


@dataclass(slots=True)
class _Turns:
    """One turn under the audit (reserve, call, settle, audit, search), shared by every branch of a run so that
    all of them are charged to the same two caps."""

    model: AgentModel
    search: SearchTool
    ledger: Ledger
    tool_calls: int
    tokens: int
    top_k: int
    time_left: Callable[[], float]
    failing: int = 0  # turns in a row whose endpoint was out of reach
    overrun: int = 0  # output tokens reported beyond the allowance (the audit's evidence)
    detail: str | None = None

    def budget(self) -> QABudget:
        left = self.ledger.available
        return QABudget(self.tool_calls, self.tokens, left.tool_calls, left.output_tokens)

    async def take(self, trace: Trace, d: Directive, budget: QABudget) -> StopReason | None:
        """Run one turn that extends ``trace`` and append its step (its hits to the evidence); why to stop, if so."""
        allowance = min(d.max_tokens, budget.tokens_left)
        if allowance < 1:
            return StopReason.BUDGET
        held = self.ledger.reserve(Usage(0, allowance))
        assert held is not None  # allowance <= what is left
        try:
            with anyio.move_on_after(self.time_left()) as scope:
                turn = await self.model.turn(trace, replace(d, max_tokens=allowance), budget)
        except ProviderError as exc:  # the endpoint failed mid-turn: we cannot know what it produced, so charge
            self.ledger.settle(held, Usage(0, allowance), Usage(0, allowance))  # the whole allowance, and go on
            if isinstance(exc, ProviderRejectedError) and exc.fatal:  # every later turn would be refused too
                raise
            trace.steps.append(Step(Action.STALL, d.action, allowance, f"model error: {exc}"))
            out_of_reach = isinstance(exc, ProviderUnavailableError) and not isinstance(exc, RateLimitedError)
            self.failing = self.failing + 1 if out_of_reach else 0
            if self.failing >= GIVE_UP_AFTER:  # the endpoint is out of reach: stop spending the caps on it
                self.detail = f"the last {self.failing} turns failed; last: {exc}"
                return StopReason.UNREACHABLE
            return None
        self.failing = 0
        if scope.cancelled_caught:
            self.ledger.settle(held, Usage(0, allowance), Usage(0, allowance))  # cut off mid-turn: charge it all
            return StopReason.DEADLINE
        used = max(0, turn.output_tokens)  # as reported: the audit below, not a clamp, keeps it honest
        self.ledger.settle(held, Usage(0, min(used, allowance)), Usage(0, allowance))
        p = parse_turn(turn.text)
        if used > allowance:  # the endpoint ignored max_tokens: stop before it can break the cap
            self.overrun += used - allowance
            trace.steps.append(
                Step(Action.STALL, d.action, used, f"{used} output tokens against an allowance of {allowance}")
            )
            return StopReason.OVER_ALLOWANCE
        if p.answer is not None:
            trace.steps.append(_step(Action.ANSWER, d, used, p, answer=p.answer))
            return StopReason.ANSWERED
        if d.action in (Action.VERIFY, Action.REASON):  # a turn of thought: a tool call in it is not executed
            action = d.action if p.thought else Action.STALL  # no closed thought: malformed
            trace.steps.append(_step(action, d, used, p, truncated=used >= allowance and not p.thought))
            return None
        return await self._search(trace, d, p, used, allowance)

    async def _search(self, trace: Trace, d: Directive, p: Parsed, used: int, allowance: int) -> StopReason | None:
        query = p.query
        action = Action.DECOMPOSE if d.action == Action.DECOMPOSE and query else Action.SEARCH
        if query is None and d.action in (Action.SEARCH, Action.DECOMPOSE):  # guardrail: the search it paid for
            query = " ".join(content_tokens(trace.question)) or trace.question
        hits: tuple[Hit, ...] = ()
        thought = p.thought
        if query is not None and self.ledger.available.tool_calls >= 1:
            call = self.ledger.reserve(Usage(0, 0, 1))
            assert call is not None
            try:  # a search is bounded by the deadline too, and a failed one is a spent call, not the end
                with anyio.move_on_after(self.time_left()) as scope:
                    hits = tuple(await self.search.search(query, self.top_k))
            except ProviderError as exc:
                if isinstance(exc, ProviderRejectedError) and exc.fatal:
                    raise
                action, thought = Action.STALL, f"search failed: {exc}"
            finally:
                self.ledger.settle(call, Usage(0, 0, 1), Usage(0, 0, 1))
            if scope.cancelled_caught:  # the call is spent: the step says so, though it found nothing
                trace.steps.append(_step(Action.STALL, d, used, p, query=query))
                return StopReason.DEADLINE
            for h in hits:
                trace.evidence.setdefault(h.id, h)
        else:
            action, query = Action.STALL, None  # malformed, or a search it has no tool call left for
        step = _step(action, d, used, p, query=query, hits=hits, truncated=used >= allowance and p.query is None)
        trace.steps.append(replace(step, thought=thought))
        return None


def _step(action: Action, d: Directive, used: int, p: Parsed, **outcome: Any) -> Step:
    """A turn's step: what the model said (thought, candidate, confidence, verdict) and what came of it."""
    return Step(action, d.action, used, p.thought, candidate=p.candidate, confidence=p.confidence, verdict=p.verdict,
                **outcome)  # fmt: skip
