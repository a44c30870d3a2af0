"""A simulated search-agent LLM: how a model behaves on a multi-hop question, seeded and documented.

The environment is the data set's annotation of which paragraphs support the answer, in hop order;
retrieval is real (BM25 over the real corpus), so whether a query finds a paragraph is decided by the
index, not by the simulator. Per backbone (:data:`BACKBONES`, every parameter in one place):

- **Queries.** A search turn targets the next supporting fact not yet read with probability
  ``p_good_query`` (``p_bridge_query`` on a Decompose turn); its query is then that paragraph's title plus
  the question's key words. A later hop can only be targeted once the hop before it was read (the bridge
  entity is learnt from it), unless the question names both entities (comparisons). Otherwise the query
  is the question with a word dropped.
- **Reading.** A supporting paragraph that was retrieved is understood with probability ``p_read``
  (decided once per paragraph).
- **Answering.** With every supporting fact read the belief is right with probability ``p_correct``;
  each missing fact multiplies that by ``p_partial``. A wrong belief is another retrieved title (the other
  option, or the opposite polarity, where the question has a form). The belief is stated in the thought
  as ``Candidate: ...``, after ``Confidence: c``: the chance that the belief is right, plus Gaussian noise
  of standard deviation ``calibration_noise`` (the self-assessment a critic would give), clipped to [0, 1].
- **Answer-form slips.** With probability ``p_slip`` the ``<answer>`` tag carries a form error of the
  belief: extra words, a truncated alias, a year for a full date, a sentence for a binary choice, a
  flipped polarity.
- **Instructions.** An injected action is obeyed with probability ``p_obey``; otherwise the model
  answers when told to search, or searches when told to answer. Left to itself (free-running) it answers
  once it has every fact, or earlier with probability ``p_overconfident`` after its first search.
- **Length.** Output tokens per turn are lognormal with the backbone's mean and spread per turn kind;
  free-running turns are longer, and a prompt that shows the budget makes the model 15% more concise. A
  turn longer than its ``max_tokens`` is cut off and loses its closing tag (a malformed turn).

Every draw comes from a generator keyed by (seed, question, what is drawn), so a question's run is a
deterministic function of the seed and the controller's choices. Questions the simulator has no
annotation for are answered generically (search the question, answer with the best hit's title).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.types import Action, AgentModel, LogNormalTokens, ModelTurn, UsageError, content_tokens
from runtime.types.answers import CHOICE, DATE, ENTITY, YESNO, choice_options, question_form, years_in

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from runtime.types import Directive, QABudget, Trace
    from tools.qa_data import QAExample

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Backbone", "SimAgentModel"]


@dataclass(frozen=True, slots=True)
class Backbone:
    """How one simulated backbone behaves (see the module docstring for each parameter)."""

    name: str
    p_good_query: float
    p_bridge_query: float
    p_read: float
    p_correct: float
    p_partial: float
    p_slip: float
    p_obey: float
    p_overconfident: float
    calibration_noise: float
    tokens: Mapping[str, tuple[float, float]]  # turn kind -> (mean, std) of output tokens


_TOKENS = {
    Action.SEARCH: (38.0, 12.0),
    Action.DECOMPOSE: (50.0, 15.0),
    Action.ANSWER: (24.0, 8.0),
    "free": (75.0, 30.0),
}
BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("qwen3-32b", 0.55, 0.75, 0.85, 0.85, 0.35, 0.15, 0.90, 0.40, 0.20, _TOKENS),
        Backbone("gpt-5.4-mini", 0.65, 0.80, 0.92, 0.90, 0.40, 0.10, 0.95, 0.30, 0.15,
                 {k: (m * 0.85, s * 0.85) for k, (m, s) in _TOKENS.items()}),
        Backbone("qwen3.5-122b", 0.62, 0.78, 0.90, 0.88, 0.38, 0.12, 0.85, 0.35, 0.18,
                 {k: (m * 1.15, s) for k, (m, s) in _TOKENS.items()}),
    )
}  # fmt: skip
DEFAULT_BACKBONE = "qwen3-32b"


class SimAgentModel(AgentModel):
    """The simulated model for a set of annotated questions.

    Args:
        examples: the annotated questions it may be asked (matched by question text).
        backbone: a name in :data:`BACKBONES` or a :class:`Backbone`.
        seed: seeds every draw.
    """

    def __init__(self, examples: Sequence[QAExample], backbone: str | Backbone = DEFAULT_BACKBONE, seed: int = 0):
        if isinstance(backbone, str) and backbone not in BACKBONES:
            raise UsageError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
        self.backbone = BACKBONES[backbone] if isinstance(backbone, str) else backbone
        self.seed = seed
        self._by_question = {ex.question.strip(): ex for ex in examples}

    def _rng(self, trace: Trace, *what: object) -> random.Random:
        return random.Random(f"{self.seed}:{trace.question}:" + ":".join(map(str, what)))

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        ex = self._by_question.get(trace.question.strip())
        t = len(trace.steps)
        read = self._read(trace, ex)
        missing = [] if ex is None else [p for p in ex.supporting if p not in read]
        action = self._choose(trace, directive, budget, ex, missing, t)
        belief, chance = self._belief(trace, ex, read, missing)
        kind = Action.ANSWER if action in (Action.ANSWER, Action.BACKSTOP) else action
        mean, std = self.backbone.tokens["free" if directive.action is None else kind]
        if directive.show_budget:
            mean, std = mean * 0.85, std * 0.85
        mu, sigma = LogNormalTokens(mean, std).mu_sigma
        tokens = max(1, round(math.exp(mu + sigma * self._rng(trace, t, "len").gauss())))
        thought = self._thought(trace, missing, belief, chance, len(read))
        if action in (Action.SEARCH, Action.DECOMPOSE):
            body = f"<thought>{thought}</thought>\n<tool_call>{self._query(trace, ex, read, action, t)}</tool_call>"
        else:
            body = f"<thought>{thought}</thought>\n<answer>{self._slip(trace, belief, t)}</answer>"
        return ModelTurn(body, tokens).cut(directive.max_tokens)

    # -- the model's state, from the trace ----------------------------------------------------------

    def _read(self, trace: Trace, ex: QAExample | None) -> set[str]:
        if ex is None:
            return set()
        p_read = self.backbone.p_read
        return {p for p in ex.supporting if p in trace.evidence and self._rng(trace, "read", p).random() < p_read}

    def _choose(
        self, trace: Trace, d: Directive, budget: QABudget, ex: QAExample | None, missing: list[str], t: int
    ) -> str:
        rng = self._rng(trace, t, "act")
        if d.action is None:  # free-running: its own judgement
            if d.show_budget and (
                budget.tool_calls_left == 0 or budget.tokens_left < 2 * self.backbone.tokens[Action.ANSWER][0]
            ):
                return Action.ANSWER
            if trace.searches == 0:
                return Action.SEARCH
            if ex is not None and not missing:
                return Action.ANSWER
            return Action.ANSWER if rng.random() < self.backbone.p_overconfident else Action.SEARCH
        if rng.random() < self.backbone.p_obey:
            return d.action
        return Action.ANSWER if d.action in (Action.SEARCH, Action.DECOMPOSE) else Action.SEARCH  # drift

    def _belief(self, trace: Trace, ex: QAExample | None, read: set[str], missing: list[str]) -> tuple[str, float]:
        """The model's current answer and the chance that it is right."""
        if ex is None:
            best = max(trace.evidence.values(), key=lambda h: h.score, default=None)
            return (best.title if best is not None else "unknown"), 0.5
        gold = ex.answers[0] if ex.answers else "unknown"
        p = self.backbone.p_correct * self.backbone.p_partial ** len(missing)
        rng = self._rng(trace, "belief", len(read))
        if rng.random() < p:
            return gold, p
        form = question_form(ex.question)
        if form == YESNO:
            return ("no" if gold.lower() == "yes" else "yes"), p
        options = choice_options(ex.question)
        if form == CHOICE and options is not None:
            return (options[1] if options[0].lower() == gold.lower() else options[0]), p
        titles = [h.title for h in trace.evidence.values() if h.id not in ex.supporting and h.title != gold]
        return (rng.choice(titles) if titles else "unknown"), p

    def _thought(self, trace: Trace, missing: list[str], belief: str, chance: float, n_read: int) -> str:
        gap = "the remaining bridge fact" if missing else "nothing; the evidence covers every hop"
        text = f"Still missing: {gap}."
        if not trace.steps:
            text = "Plan: find the facts that link the question's entities, one hop at a time.\n" + text
        if trace.evidence:
            noise = self._rng(trace, "confidence", n_read).gauss() * self.backbone.calibration_noise
            text += f" Confidence: {min(1.0, max(0.0, chance + noise)):.2f}. Candidate: {belief}"
        return text

    def _query(self, trace: Trace, ex: QAExample | None, read: set[str], action: str, t: int) -> str:
        rng = self._rng(trace, t, "query")
        words = content_tokens(trace.question)
        if ex is not None:
            p = self.backbone.p_bridge_query if action == Action.DECOMPOSE else self.backbone.p_good_query
            target = self._target(ex, read)
            if target is not None and rng.random() < p:
                title = next(para.title for para in ex.paragraphs if para.id == target)
                return " ".join([title, *words[:3]])
        if len(words) > 2:
            words.pop(rng.randrange(len(words)))
        return " ".join(words) or trace.question

    @staticmethod
    def _target(ex: QAExample, read: set[str]) -> str | None:
        """The next supporting fact the model can aim a query at (a bridge hop needs the hop before it)."""
        named = question_form(ex.question) == CHOICE or len(ex.supporting) <= 1
        for k, pid in enumerate(ex.supporting):
            if pid not in read:
                return pid if k == 0 or named or ex.supporting[k - 1] in read else None
        return None

    def _slip(self, trace: Trace, belief: str, t: int) -> str:
        rng = self._rng(trace, t, "slip")
        if rng.random() >= self.backbone.p_slip:
            return belief
        form = question_form(trace.question)
        if form == YESNO:
            return rng.choice([f"{belief.capitalize()}, based on the evidence", "no" if belief == "yes" else "yes"])
        if form == CHOICE:
            return f"{belief} is the one"
        if form == DATE and years_in(belief) and len(belief.split()) > 1:
            return years_in(belief)[-1]
        words = belief.split()
        if form == ENTITY and len(words) > 1 and rng.random() < 0.5:
            return words[-1]  # a truncated alias
        return f"The answer is {belief}"
