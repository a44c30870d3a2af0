"""BAVT (Li, Deng, Li, Li 2026, "Spend less, reason better: budget-aware value tree search for LLM agents"): a tree
search over partial trajectories, guided by a value critic, whose every turn the agent charges to the same two caps.

- **Critic (residual value).** The model's own stated confidence c (``Confidence: c`` in its thought), read as its
  change from the parent node: r(n) = c(n) - c(parent) and V(n) = clip(V(parent) + r(n), 0, 1); a step that states
  no confidence keeps its parent's. A step that added no new evidence (a stall, a search that found nothing new, or
  one that repeats a sibling's query) earns no credit for a rise in confidence and is pruned: the paper's guard
  against the model's overconfidence, and its pruning of uninformative or redundant tool calls.
- **Budget-conditioned selection.** Among the open nodes (not pruned, fewer than :data:`MAX_CHILDREN` children),
  node n is drawn with probability proportional to (V(n) + :data:`FLOOR`) ** (1 / ratio), where ratio is the budget
  left, min(b_tool / B_tool, b_tok / B_tok): proportional to value (explore) with the whole budget, greedy (exploit)
  as it runs out. The paper's exponent has no parameter; FLOOR keeps a node of value 0 (the question) drawable.
- **Widen or deepen.** If the drawn node's best child made progress (r > 0), deepen: a Decompose turn from that
  child, aimed at the bridge it opened; otherwise widen: another Search from the drawn node (a new branch).
- **Answer** from the best node (highest value, then most evidence, then latest) once its value reaches
  :data:`THRESHOLD` after a search, or when no retrieval fits in the budget or no node is open (a Backstop); an
  answer turn that did not answer is extended, not repeated.

Still missing versus the paper: its critic is a separate call that scores each new node after its observation;
here the confidence comes from the generating turn's own thought, so it lags one step (it rates the evidence the turn
read, not what its search found). Selection draws from a generator seeded by (seed, question, tree size), so a run
is reproducible.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from planners.voi import allowance, feasible_retrieval
from runtime.types import Action, Directive, Node, QABudget, QAController, Trace

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["BAVT", "FLOOR", "MAX_CHILDREN", "THRESHOLD", "selection_weights"]

THRESHOLD = 0.7  # a calibrated model's "likely right"
MAX_CHILDREN = 2  # caps of at most a few tool calls cannot follow up more siblings than that
FLOOR = 0.05  # the smallest weight base, so the question's node (value 0) can still be widened
MIN_RATIO = 0.05  # the exponent 1 / ratio stops at 20 (already greedy) rather than overflow


class _Critic:
    """Values, residuals and prunes of one tree, each node's computed once from its parent's."""

    def __init__(self, tree: Sequence[Node]) -> None:
        self.conf: dict[int, float] = {0: 0.0}
        self.value: dict[int, float] = {0: 0.0}
        self.residual: dict[int, float] = {0: 0.0}
        self.pruned: set[int] = set()
        for n in tree[1:]:  # parents come before their children
            assert n.parent is not None
            p, step = n.parent, n.trace.steps[-1]
            self.conf[n.id] = self.conf[p.id] if step.confidence is None else step.confidence
            r = self.conf[n.id] - self.conf[p.id]
            if not _informative(n):
                r = min(r, 0.0)
                self.pruned.add(n.id)
            self.residual[n.id] = r
            self.value[n.id] = min(1.0, max(0.0, self.value[p.id] + r))

    def best(self, tree: Sequence[Node]) -> Node:
        kept = [n for n in tree if n.id not in self.pruned]
        return max(kept, key=lambda n: (self.value[n.id], len(n.trace.evidence), n.id))


def _informative(n: Node) -> bool:
    """Whether the node's step searched and found something new, with a query none of its elder siblings used."""
    assert n.parent is not None
    step = n.trace.steps[-1]
    if step.action not in (Action.SEARCH, Action.DECOMPOSE) or not step.hits:
        return False
    elder = {s.trace.steps[-1].query for s in n.parent.children if s.id < n.id}
    return step.query not in elder and any(h.id not in n.parent.trace.evidence for h in step.hits)


def selection_weights(values: Sequence[float], budget: QABudget) -> list[float]:
    """The probability of drawing each open node from its value: sharper as the budget left shrinks."""
    exponent = 1.0 / max(MIN_RATIO, 1.0 - budget.pressure)
    raw = [(v + FLOOR) ** exponent for v in values]
    total = sum(raw)
    return [w / total for w in raw]


class BAVT(QAController):
    """Args: threshold: the value at which it answers; seed: seeds the node draws."""

    name = "bavt"

    def __init__(self, threshold: float = THRESHOLD, seed: int = 0) -> None:
        self.threshold = threshold
        self.seed = seed

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        """One trajectory is a tree of one branch: the directive for extending it."""
        return self.expand(_chain(trace), budget)[1]

    def best(self, tree: Sequence[Node]) -> Node:
        return _Critic(tree).best(tree)

    def expand(self, tree: Sequence[Node], budget: QABudget) -> tuple[Node, Directive]:
        critic = _Critic(tree)
        best = critic.best(tree)
        if best.trace.searches and critic.value[best.id] >= self.threshold:
            return _answer_from(best), Directive(Action.ANSWER, allowance(Action.ANSWER, budget), show_budget=True)
        open_ = [n for n in tree if n.id not in critic.pruned and len(n.children) < MAX_CHILDREN]
        if not open_ or not feasible_retrieval(budget):
            return _answer_from(best), Directive(Action.BACKSTOP, allowance(Action.BACKSTOP, budget), show_budget=True)
        rng = random.Random(f"{self.seed}:{tree[0].trace.question}:{len(tree)}")
        weights = selection_weights([critic.value[n.id] for n in open_], budget)
        node = rng.choices(open_, weights)[0]
        kept = [c for c in node.children if c.id not in critic.pruned]
        child = max(kept, key=lambda c: (critic.value[c.id], c.id), default=None)
        if (
            child is not None and critic.residual[child.id] > 0 and len(child.children) < MAX_CHILDREN
        ):  # deepen the line that made progress
            deepen = Directive(Action.DECOMPOSE, allowance(Action.DECOMPOSE, budget), show_budget=True,
                               sample=len(child.children))  # fmt: skip
            return child, deepen
        widen = Directive(Action.SEARCH, allowance(Action.SEARCH, budget), show_budget=True, sample=len(node.children))
        return node, widen  # a new branch: another sample of the node's prompt


def _answer_from(node: Node) -> Node:
    """The node an answer turn extends: past the earlier answer turns from it that did not answer, so that the model
    sees them (as on one branch) and a deterministic model is not sent the same prompt again."""
    while tried := [c for c in node.children if c.trace.steps[-1].directive in (Action.ANSWER, Action.BACKSTOP)]:
        node = tried[-1]
    return node


def _chain(trace: Trace) -> list[Node]:
    """The one-branch tree of a trajectory: a node per step prefix."""
    nodes = [Node(0, None, Trace(trace.question))]
    for k in range(1, len(trace.steps) + 1):
        prefix = Trace(trace.question, trace.steps[:k])
        prefix.evidence = {h.id: h for s in prefix.steps for h in s.hits}
        nodes.append(Node(k, nodes[-1], prefix))
        nodes[-2].children.append(nodes[-1])
    return nodes
