"""Search-agent baselines, run under the same hard audit as VOI (VOI paper, Section 5.1).

- ``free`` (Search-o1 style): no injected action and no budget in the prompt; the model decides when to
  search and when to answer, with whatever tokens are left.
- ``budget-tracker`` (BATS style): the same free-running model, with the budget shown in its prompt.
- ``value-tree`` (BAVT style): a value-guided widen-or-deepen rule: answer once the critic's value (the
  candidate's support in the evidence) is high; deepen (a Decompose turn, aimed at the bridge) after a
  search that found something new on a compositional question; otherwise widen (another Search).
- ``search-then-answer``: one search with the question, then answer.
"""

from __future__ import annotations

from planners.voi import allowance, feasible_retrieval, features
from runtime.types import Action, Directive, QABudget, QAController, Trace

__all__ = ["BudgetTracker", "FreeRunning", "SearchThenAnswer", "ValueTree"]


class FreeRunning(QAController):
    name = "free"

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        return Directive(None, budget.tokens_left, show_budget=False)


class BudgetTracker(QAController):
    name = "budget-tracker"

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        return Directive(None, budget.tokens_left, show_budget=True)


class ValueTree(QAController):
    """Args: threshold: the critic value at which it answers."""

    name = "value-tree"

    def __init__(self, threshold: float = 0.67) -> None:
        self.threshold = threshold

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        if not feasible_retrieval(budget):
            return Directive(Action.BACKSTOP, allowance(Action.BACKSTOP, budget), show_budget=True)
        f = features(trace)
        if f.searches and f.closure >= self.threshold:
            action = Action.ANSWER
        elif f.bridge_open:
            action = Action.DECOMPOSE
        else:
            action = Action.SEARCH
        return Directive(action, allowance(action, budget), show_budget=True)


class SearchThenAnswer(QAController):
    name = "search-then-answer"

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        if trace.searches == 0 and feasible_retrieval(budget):
            return Directive(Action.SEARCH, allowance(Action.SEARCH, budget))
        return Directive(Action.BACKSTOP, allowance(Action.BACKSTOP, budget))
