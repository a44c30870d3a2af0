"""Search-agent baselines, run under the same hard audit as VOI (VOI paper, Section 5.1).

- ``bats`` (Liu et al. 2025, BATS): the budget tracker in every prompt, the plan in the first thought, and
  self-verification: once the model states a candidate, a Verify turn checks it against the evidence; a supported
  candidate is answered, an unsupported one sends the agent on (another search, where it may pivot) while the budget
  allows, else it answers anyway.
- ``search-o1`` (Li et al. 2025, Search-o1): free-running (the model decides when to search and when to answer, with
  no budget shown and no stop from the controller), and a Reason-in-Documents turn after every search that condenses
  the documents it returned.
- ``bavt`` (Li, Deng, Li, Li 2026, BAVT): see :mod:`planners.bavt`.
- ``search-then-answer``: one search with the question, then answer.

Still missing versus the papers: BATS's exploring turns are injected Search, not free-running, because the agent
ends a run at the first ``<answer>``, so a free-running turn could answer unverified (BATS verifies every proposed
answer); its verifier is the same model in a separate turn, with no separate constraint list. Search-o1's Reason-in-
Documents sees the whole trajectory (the paper gives it the previous reasoning, the query and the documents only),
and retrieval is our BM25 tool, not a web search.
"""

from __future__ import annotations

from planners.voi import MIN_ANSWER_TOKENS, allowance, feasible_retrieval
from runtime.types import Action, Directive, QABudget, QAController, Trace

__all__ = ["BATS", "VERIFY_TOKENS", "SearchO1", "SearchThenAnswer"]

VERIFY_TOKENS = 60  # a verdict with its reasons: as long as a search turn may be (planners.voi.ALLOWANCE)


class BATS(QAController):
    name = "bats"

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        last = trace.steps[-1] if trace.steps else None
        if last is not None and last.directive is Action.VERIFY and last.verdict:
            return Directive(Action.ANSWER, allowance(Action.ANSWER, budget), show_budget=True)
        if _unverified(trace) and budget.tokens_left >= VERIFY_TOKENS + MIN_ANSWER_TOKENS:
            return Directive(Action.VERIFY, VERIFY_TOKENS, show_budget=True)
        if feasible_retrieval(budget):  # nothing to verify, or it did not hold: dig deeper or pivot
            return Directive(Action.SEARCH, allowance(Action.SEARCH, budget), show_budget=True)
        return Directive(Action.BACKSTOP, allowance(Action.BACKSTOP, budget), show_budget=True)


def _unverified(trace: Trace) -> bool:
    """Whether the model stated a candidate (after a search) since the last verification."""
    for s in reversed(trace.steps):
        if s.directive is Action.VERIFY:
            return False
        if s.candidate and trace.searches:
            return True
    return False


class SearchO1(QAController):
    name = "search-o1"

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        last = trace.steps[-1] if trace.steps else None
        if last is not None and last.query is not None and last.hits:
            return Directive(Action.REASON, budget.tokens_left)  # not budget-aware: whatever the notes take
        return Directive(None, budget.tokens_left)


class SearchThenAnswer(QAController):
    name = "search-then-answer"

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        if trace.searches == 0 and feasible_retrieval(budget):
            return Directive(Action.SEARCH, allowance(Action.SEARCH, budget))
        return Directive(Action.BACKSTOP, allowance(Action.BACKSTOP, budget))
