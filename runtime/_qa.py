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
(the VOI paper's guardrail). Then the finalizer (if on) picks the base or a refined answer, without a call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

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
    from runtime.types import AgentModel, Clock, Event, Hit, QAController, SearchTool

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
    trace = Trace(question)
    clock = clock or RealClock()
    t0 = clock.now()
    end = None if deadline_s is None else t0 + deadline_s
    wall_end = None if end is None else clock.wall_time_of(end)

    def time_left() -> float:
        return math.inf if wall_end is None else max(0.0, wall_end - time.monotonic())

    if emit is not None:
        emit(AgentStarted(t=0.0, question=question, controller=controller.name, tool_calls=tool_calls, tokens=tokens))

    def record(step: Step) -> None:
        trace.steps.append(step)
        left = ledger.available
        after = QABudget(tool_calls, tokens, left.tool_calls, left.output_tokens)
        if on_step is not None:
            on_step(step, after)
        if emit is not None:
            emit(AgentStep(t=clock.now() - t0, step=len(trace.steps), directive=step.directive,
                           action=step.action, output_tokens=step.output_tokens, query=step.query,
                           hits=tuple(h.title for h in step.hits), answer=step.answer,
                           tool_calls_left=left.tool_calls, tokens_left=left.output_tokens))  # fmt: skip

    reason, failing, detail, overrun = StopReason.TURNS, 0, None, 0
    for _ in range(4 * tool_calls + 6):
        left = ledger.available
        budget = QABudget(tool_calls, tokens, left.tool_calls, left.output_tokens)
        if budget.tokens_left < 1:
            reason = StopReason.BUDGET
            break
        if end is not None and clock.now() >= end:
            reason = StopReason.DEADLINE
            break
        d = controller.decide(trace, budget)
        allowance = min(d.max_tokens, budget.tokens_left)
        if allowance < 1:
            reason = StopReason.BUDGET
            break
        held = ledger.reserve(Usage(0, allowance))
        assert held is not None  # allowance <= what is left
        try:
            with anyio.move_on_after(time_left()) as scope:
                turn = await model.turn(trace, replace(d, max_tokens=allowance), budget)
        except ProviderError as exc:  # the endpoint failed mid-turn: we cannot know what it produced, so charge
            ledger.settle(held, Usage(0, allowance), Usage(0, allowance))  # the whole allowance, and go on
            if isinstance(exc, ProviderRejectedError) and exc.fatal:  # every later turn would be refused too
                raise
            record(Step(Action.STALL, d.action, allowance, f"model error: {exc}"))
            out_of_reach = isinstance(exc, ProviderUnavailableError) and not isinstance(exc, RateLimitedError)
            failing = failing + 1 if out_of_reach else 0
            if failing >= GIVE_UP_AFTER:  # the endpoint is out of reach: stop spending the caps on it
                reason, detail = StopReason.UNREACHABLE, f"the last {failing} turns failed; last: {exc}"
                break
            continue
        failing = 0
        if scope.cancelled_caught:
            ledger.settle(held, Usage(0, allowance), Usage(0, allowance))  # cut off mid-turn: charge it all
            reason = StopReason.DEADLINE
            break
        used = max(0, turn.output_tokens)  # as reported: the audit below, not a clamp, keeps it honest
        ledger.settle(held, Usage(0, min(used, allowance)), Usage(0, allowance))
        parsed = parse_turn(turn.text)
        if used > allowance:  # the endpoint ignored max_tokens: stop before it can break the cap
            overrun += used - allowance
            record(Step(Action.STALL, d.action, used, f"{used} output tokens against an allowance of {allowance}"))
            reason = StopReason.OVER_ALLOWANCE
            break
        if parsed.answer is not None:
            record(Step(Action.ANSWER, d.action, used, parsed.thought, answer=parsed.answer,
                        candidate=parsed.candidate, confidence=parsed.confidence))  # fmt: skip
            reason = StopReason.ANSWERED
            break
        query = parsed.query
        action = Action.DECOMPOSE if d.action == Action.DECOMPOSE and query else Action.SEARCH
        if query is None and d.action in (Action.SEARCH, Action.DECOMPOSE):  # guardrail: the search it paid for
            query = " ".join(content_tokens(question)) or question
        hits: tuple[Hit, ...] = ()
        thought = parsed.thought
        if query is not None and ledger.available.tool_calls >= 1:
            call = ledger.reserve(Usage(0, 0, 1))
            assert call is not None
            try:  # a search is bounded by the deadline too, and a failed one is a spent call, not the end
                with anyio.move_on_after(time_left()) as scope:
                    hits = tuple(await search.search(query, top_k))
            except ProviderError as exc:
                if isinstance(exc, ProviderRejectedError) and exc.fatal:
                    raise
                action, thought = Action.STALL, f"search failed: {exc}"
            finally:
                ledger.settle(call, Usage(0, 0, 1), Usage(0, 0, 1))
            if scope.cancelled_caught:
                reason = StopReason.DEADLINE
                break
            for h in hits:
                trace.evidence.setdefault(h.id, h)
        else:
            action, query = Action.STALL, None  # malformed, or a search it has no tool call left for
        record(Step(action, d.action, used, thought, query=query, hits=hits, candidate=parsed.candidate,
                    confidence=parsed.confidence, truncated=used >= allowance and parsed.query is None))  # fmt: skip
    spent = replace(ledger.spent, output_tokens=ledger.spent.output_tokens + overrun)  # as reported
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
