"""The VOI controller (VOI paper, Section 4.1, Appendices A and D): task-level value of information per budget.

For each feasible action k in {Search, Decompose, Answer} it forms

    u(k) = Delta(k) + Psi(k) - Pi(k; b)        progress + structural signals - budget penalty   (Eq. 2)
    r(k) = [u(k)]+ / (d(k; b) + eps)           value per unit of budget                          (Eq. 3)
    J(k) = G(k; r, s, b)                       deterministic guards                              (Eq. 4)

and injects the argmax. Every feature is read from the trace: whether a candidate answer exists, the
model's stated confidence in it (the critic signal) capped by how much of it one retrieved paragraph
supports (closure), whether the last search added anything (stagnation), whether a compositional question
has an open bridge (its last retrieval found something new, so the next hop can be aimed at the bridge
entity), how repetitive the queries are (loop pressure), how compositional the question's wording is,
and the budget pressure rho = 1 - min(b_tool / B_tool, b_tok / B_tok). As in the paper's Table 3, an open
bridge or stagnation after search makes Decompose more valuable than ordinary Search. The fixed
coefficients are the paper's: cost-penalty scale 0.7, decomposition bonus 0.14, early-answer penalty 0.18.
The guards enforce a minimum search (one search, two on compositional questions), suppress decomposition
on factoid-like questions and repeated decomposition after stagnation, suppress premature answers under
weak support, and backstop to Answer when another retrieval step no longer fits in the budget.

The ablation switches (``penalty``, ``normalize``, ``structure``, ``guards``) remove exactly one component
each, as in the paper's Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.types import Action, Directive, QABudget, QAController, Trace, content_tokens
from runtime.types.answers import CHOICE, compositionality, question_form

__all__ = ["ALLOWANCE", "MIN_ANSWER_TOKENS", "SWITCHES", "VOIController", "allowance", "feasible_retrieval", "features"]

COST_PENALTY, DECOMPOSE_BONUS, EARLY_ANSWER_PENALTY = 0.7, 0.14, 0.18
EPS = 1e-6
# Output tokens a turn of each kind may use (capped by what is left), and what an answer needs at least.
ALLOWANCE = {Action.SEARCH: 60, Action.DECOMPOSE: 72, Action.ANSWER: 40}
MIN_ANSWER_TOKENS, MIN_SEARCH_TOKENS = 30, 40


# The ablation switches (the paper's Table 1), by the short name an ablated controller's name carries.
SWITCHES = {"penalty": "penalty", "norm": "normalize", "struct": "structure", "guards": "guards"}


def feasible_retrieval(budget: QABudget) -> bool:
    """Whether one more retrieval turn fits and still leaves room to answer."""
    return budget.tool_calls_left >= 1 and budget.tokens_left >= MIN_SEARCH_TOKENS + MIN_ANSWER_TOKENS


def allowance(action: Action, budget: QABudget) -> int:
    """The turn's token allowance: its default, less what the answer after it will need."""
    keep = MIN_ANSWER_TOKENS if action in (Action.SEARCH, Action.DECOMPOSE) else 0
    return max(1, min(ALLOWANCE[Action.ANSWER if action == Action.BACKSTOP else action], budget.tokens_left - keep))


@dataclass(frozen=True, slots=True)
class Features:
    searches: int
    closure: float  # readiness: the model's stated confidence in its candidate, else the candidate's support
    has_candidate: bool
    stagnation: float  # 1 if the last search added nothing new
    loop: float  # share of the last query's words already used by earlier queries
    compositional: float
    factoid: bool
    last_decomposed: bool
    bridge_open: float  # 1 on a compositional question whose last retrieval found something new


def features(trace: Trace) -> Features:
    queries = [s.query for s in trace.steps if s.query]
    loop = 0.0
    if len(queries) >= 2:
        last = set(content_tokens(queries[-1]))
        before = {w for q in queries[:-1] for w in content_tokens(q)}
        loop = len(last & before) / len(last) if last else 1.0
    cand = trace.candidate
    comp = compositionality(trace.question)
    stated = trace.confidence
    support = trace.support(cand) if cand else 0.0
    return Features(
        searches=trace.searches,
        closure=0.0 if not cand else (min(stated, support) if stated is not None else support),
        has_candidate=bool(cand),
        stagnation=1.0 if trace.searches and trace.new_hits_last() == 0 else 0.0,
        loop=loop,
        compositional=comp,
        factoid=comp < 0.3 and question_form(trace.question) != CHOICE,
        last_decomposed=bool(trace.steps) and trace.steps[-1].action == Action.DECOMPOSE,
        bridge_open=float(comp >= 0.5 and trace.searches > 0 and trace.new_hits_last() > 0),
    )


class VOIController(QAController):
    """Args: ``penalty``, ``normalize``, ``structure``, ``guards``: keep that component (all on: full VOI)."""

    def __init__(self, *, penalty: bool = True, normalize: bool = True, structure: bool = True, guards: bool = True):
        self.penalty = penalty
        self.normalize = normalize
        self.structure = structure
        self.guards = guards
        self.name = "voi" + "".join(f"-no-{short}" for short, arg in SWITCHES.items() if not getattr(self, arg))

    @classmethod
    def without(cls, short: str) -> VOIController:
        """Full VOI less one component, by the short name its ablation carries (``voi-no-norm``)."""
        return cls(**{SWITCHES[short]: False})

    def scores(self, trace: Trace, budget: QABudget) -> dict[Action, float]:
        """The executable score J(k) of every feasible action (Eqs. 2-4); empty means backstop."""
        if not feasible_retrieval(budget):
            return {}
        f = features(trace)
        rho = budget.pressure
        unresolved = 1.0 - f.closure
        progress = {
            Action.SEARCH: unresolved * (1.0 - 0.5 * max(f.stagnation, f.bridge_open)),
            Action.DECOMPOSE: unresolved * max(f.compositional * (0.5 + 0.5 * f.stagnation), f.bridge_open),
            Action.ANSWER: f.closure,
        }
        structure = {
            Action.SEARCH: 0.1 - 0.2 * f.loop,
            Action.DECOMPOSE: DECOMPOSE_BONUS * f.compositional * (1.0 if f.searches else 0.5),
            Action.ANSWER: 0.1 * f.has_candidate
            - EARLY_ANSWER_PENALTY * f.compositional * max(0.0, 1.0 - f.searches / 2),
        }
        tok_left, tool_left = max(1, budget.tokens_left), max(1, budget.tool_calls_left)
        charge = {k: ALLOWANCE[k] / tok_left + (1.0 / tool_left if k != Action.ANSWER else 0.0) for k in ALLOWANCE}
        penalty = {k: COST_PENALTY * rho * charge[k] / 2 for k in (Action.SEARCH, Action.DECOMPOSE)}
        penalty[Action.ANSWER] = -COST_PENALTY * rho * f.closure / 2  # signed: tight budgets favour a supported answer
        scale = {k: 0.5 + charge[k] / 2 for k in ALLOWANCE}
        out: dict[Action, float] = {}
        for k in (Action.SEARCH, Action.DECOMPOSE, Action.ANSWER):
            u = progress[k] + (structure[k] if self.structure else 0.0) - (penalty[k] if self.penalty else 0.0)
            out[k] = max(0.0, u) / (scale[k] + EPS) if self.normalize else max(0.0, u)
        if self.guards:
            min_searches = 2 if f.compositional >= 0.5 and budget.tool_calls >= 2 else 1
            if f.searches < min_searches:
                out[Action.ANSWER] = 0.0  # minimum search
            if f.factoid:
                out[Action.DECOMPOSE] = 0.0  # no decomposition of factoid-like questions
            if f.last_decomposed and f.stagnation:
                out[Action.DECOMPOSE] *= 0.5  # repeated decomposition after stagnation
            if not f.has_candidate or f.closure < 0.34:
                out[Action.ANSWER] *= 0.25  # premature answer under weak support
        return out

    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        scores = self.scores(trace, budget)
        if not scores:
            return Directive(Action.BACKSTOP, allowance(Action.BACKSTOP, budget), show_budget=True)
        best = max(scores, key=lambda k: (scores[k], k == Action.SEARCH))
        if scores[best] <= 0.0:
            best = Action.SEARCH
        return Directive(best, allowance(best, budget), show_budget=True)
