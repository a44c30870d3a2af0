"""A simulated search-agent LLM that knows only what a model could know: the question and the text it retrieved.

Nothing here reads a gold label: the model is built from a backbone and a seed alone, and every turn is a function
of what its prompt shows (the question, the steps so far with their retrieved paragraphs, the directive and, when
shown, the budget). Retrieval is real (the caller's search tool). How it behaves, per :class:`Backbone`:

- **Reading.** Each retrieved paragraph is understood with probability ``p_read`` (once per paragraph). The
  understood text goes to a plain extractive reader (:mod:`adapters.sim_reader`): candidates from the answer
  form, scored by how much of the question the sentence around them covers. ``distraction`` is the spread of a
  per-paragraph log-normal factor on that relevance: how easily an off-topic passage looks relevant. It is the
  over-search harm: every extra paragraph is another chance for a wrong one to win.
- **Belief.** The model's answer is drawn from the candidates by a softmax over their scores at ``temperature``
  (a sharper reader picks the top one more often); the same evidence gives the same belief.
- **Confidence.** Stated as ``Confidence: c`` before ``Candidate: X``: the candidate's support (the share of
  the question its best sentence covers) times (0.4 + 0.6 x its lead over the runner-up), plus ``confidence_bias``,
  plus Gaussian noise of spread ``calibration_noise``, clipped to [0, 1]. The target is a verbalised confidence
  that ranks answers only moderately well (AUROC about 0.6-0.7) and sits 0.1-0.3 above accuracy, as LLMs' stated
  confidence does (Xiong et al., ICLR 2024, "Can LLMs Express Their Uncertainty?"; Tian et al., EMNLP 2023).
  ``confidence_bias`` 0 was chosen on the development split (+0.15 gave a gap of 0.28-0.39 on HotpotQA, 0 gave
  0.15-0.23); on the held-out split the default backbone's last stated confidence on HotpotQA averages 0.31-0.34
  by controller where 15-16% of its answers are exactly right, AUROC 0.65-0.71 (``calibration.csv`` of
  ``benchmarks/qa_ladder.py``; on 2Wiki it is about calibrated instead).
- **Acting.** A directive is obeyed with probability ``p_obey`` (otherwise the model answers when told to search,
  verify or condense, and searches when told to answer). Left to itself it searches first, then answers once its
  stated confidence reaches ``stop_threshold`` (the same noisy signal it writes down), or when a budget it is
  shown says no search or too few tokens are left.
- **Queries.** Built from the question and the retrieved text, never from labels: the first is the question's
  content words; later ones add the bridge entity (the best name the evidence offers that the question does not
  contain; a tree search's k-th sample of the same prompt takes the k-th best, or drops a word of the first); a
  Decompose query is that entity with the question's relation words (its content words outside the names it
  mentions). With probability ``p_vague_query`` a query is the question's words less one instead. Search
  and Decompose are equally likely to be vague; which is better is left to the retriever.
- **Verify and condense.** A verify turn states ``Verdict: supported`` when the stated confidence is at least
  0.5. A condense turn (Reason-in-Documents) writes ``Notes:`` with the ``notes`` most relevant sentences of the
  last search's paragraphs; from then on the model reads those paragraphs through its notes.
- **Answer-form slips.** With probability ``p_slip`` the ``<answer>`` carries a form error of the belief.
- **Length.** Output tokens per turn are log-normal with the mean and spread of the turn's kind (retrieval,
  answer, verify, condense), the same whether the turn was directed or not, times ``free_length_ratio`` for an
  undirected turn (1 by default: the sensitivity sweep moves it). A turn longer than its ``max_tokens`` is cut
  off and loses its closing tag (:meth:`runtime.types.ModelTurn.cut`).

Every draw comes from a generator keyed by (seed, question, what is drawn), so a run is a deterministic function
of the seed, the retrieval and the controller's choices. The parameters are chosen, not fitted to any model's
transcripts: the backbones differ the way the VOI paper's backbones rank; turn lengths follow the paper's Table 8
(about 40 output tokens per turn for its directed controllers at the low budgets). Limits: the model has no
parametric knowledge (it can answer only from retrieved text) and its reader is far weaker than an LLM's, so
absolute scores sit below the paper's; the ladder compares controllers on the same model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adapters.sim_reader import Reading, read, relevant_sentences, sentences
from runtime.types import Action, AgentModel, Hit, LogNormalTokens, ModelTurn, UsageError, content_tokens
from runtime.types.answers import CHOICE, DATE, ENTITY, YESNO, normalize, question_form, years_in

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.types import Directive, QABudget, Trace

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Backbone", "SimAgentModel"]

RETRIEVE, ANSWER, VERIFY, REASON = "retrieve", "answer", "verify", "reason"
_TOKENS = {RETRIEVE: (40.0, 12.0), ANSWER: (24.0, 8.0), VERIFY: (30.0, 10.0), REASON: (60.0, 20.0)}
_KIND = {Action.SEARCH: RETRIEVE, Action.DECOMPOSE: RETRIEVE, Action.ANSWER: ANSWER, Action.BACKSTOP: ANSWER,
         Action.VERIFY: VERIFY, Action.REASON: REASON}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Backbone:
    """How one simulated backbone behaves (the module docstring says what each parameter does)."""

    name: str
    p_read: float = 0.85
    temperature: float = 0.15
    distraction: float = 0.3
    p_vague_query: float = 0.3
    p_obey: float = 0.9
    confidence_bias: float = 0.0
    calibration_noise: float = 0.2
    stop_threshold: float = 0.6
    p_slip: float = 0.15
    notes: int = 3
    free_length_ratio: float = 1.0
    tokens: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(_TOKENS))


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("qwen3-32b"),
        Backbone("gpt-5.4-mini", p_read=0.92, temperature=0.1, p_vague_query=0.2, p_obey=0.95, confidence_bias=-0.05,
                 calibration_noise=0.15, p_slip=0.1, tokens={k: (m * 0.85, s * 0.85) for k, (m, s) in _TOKENS.items()}),
        Backbone("qwen3.5-122b", p_read=0.9, temperature=0.12, p_vague_query=0.25, p_obey=0.85, confidence_bias=-0.03,
                 calibration_noise=0.18, p_slip=0.12, tokens={k: (m * 1.15, s) for k, (m, s) in _TOKENS.items()}),
    )
}  # fmt: skip
DEFAULT_BACKBONE = "qwen3-32b"


class SimAgentModel(AgentModel):
    """The simulated model.

    Args:
        backbone: a name in :data:`BACKBONES` or a :class:`Backbone`.
        seed: seeds every draw.
    """

    def __init__(self, backbone: str | Backbone = DEFAULT_BACKBONE, seed: int = 0):
        if isinstance(backbone, str) and backbone not in BACKBONES:
            raise UsageError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
        self.backbone = BACKBONES[backbone] if isinstance(backbone, str) else backbone
        self.seed = seed

    def _rng(self, trace: Trace, *what: object) -> random.Random:
        return random.Random(f"{self.seed}:{trace.question}:" + ":".join(map(str, what)))

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        t = len(trace.steps) if not directive.sample else f"{len(trace.steps)}#{directive.sample}"
        hits = self._understood(trace)
        reading = read(trace.question, hits, distraction=self.backbone.distraction, key=f"{self.seed}:{trace.question}")
        belief, chance = self._belief(trace, reading, hits)
        stated = self._stated(trace, t, chance, hits)
        action = self._choose(trace, t, directive, budget, stated)
        mean, std = self.backbone.tokens[_KIND[action]]
        if directive.action is None:
            mean, std = mean * self.backbone.free_length_ratio, std * self.backbone.free_length_ratio
        mu, sigma = LogNormalTokens(mean, std).mu_sigma
        tokens = max(1, round(math.exp(mu + sigma * self._rng(trace, t, "len").gauss())))
        thought = "" if trace.steps else "Plan: find the facts that link the question's entities, one hop at a time.\n"
        if action == Action.VERIFY:
            thought += f"Verdict: {'supported' if stated >= 0.5 else 'unsupported'}. "
        elif action == Action.REASON:
            last = next((s.hits for s in reversed(trace.steps) if s.query is not None), ())
            thought += f"Notes: {' '.join(relevant_sentences(trace.question, last, self.backbone.notes))}\n"
        if hits:
            thought += f"Confidence: {stated:.2f}. Candidate: {belief}"
        if action in (Action.SEARCH, Action.DECOMPOSE):
            query = self._query(trace, action, hits, t, directive.sample)
            body = f"<thought>{thought}</thought>\n<tool_call>{query}</tool_call>"
        elif action in (Action.VERIFY, Action.REASON):
            body = f"<thought>{thought}</thought>"
        else:
            body = f"<thought>{thought}</thought>\n<answer>{self._slip(trace, belief, t)}</answer>"
        return ModelTurn(body, tokens).cut(directive.max_tokens)

    # -- what the model has taken in -----------------------------------------------------------------

    def _understood(self, trace: Trace) -> list[Hit]:
        """The retrieved paragraphs the model understood, condensed ones through its notes."""
        notes: dict[str, str] = {}
        for i, step in enumerate(trace.steps[:-1]):
            after = trace.steps[i + 1].thought
            if step.query is not None and "Notes:" in after:
                noted = after.split("Notes:", 1)[1]
                for h in step.hits:
                    notes.setdefault(h.id, noted)
        out = []
        for h in trace.evidence.values():
            if self._rng(trace, "read", h.id).random() >= self.backbone.p_read:
                continue
            if h.id in notes:
                h = Hit(h.id, h.title, " ".join(s for s in sentences(h) if s in notes[h.id]), h.score)
            out.append(h)
        return out

    def _belief(self, trace: Trace, reading: Reading, hits: list[Hit]) -> tuple[str, float]:
        """The model's answer and the raw strength of its case for it (before the stated confidence's bias)."""
        top = reading.candidates[:5]
        if not top:
            return "unknown", 0.0
        rng = self._rng(trace, "belief", *sorted(h.id for h in hits))
        weights = [math.exp((score - top[0][1]) / self.backbone.temperature) for _, score, _ in top]
        k = rng.choices(range(len(top)), weights)[0]
        answer, _, support = top[k]
        return answer, support * (0.4 + 0.6 * (reading.margin if k == 0 else 0.0))

    def _stated(self, trace: Trace, t: int | str, chance: float, hits: list[Hit]) -> float:
        rng = self._rng(trace, "confidence", t, *sorted(h.id for h in hits))
        b = self.backbone
        return min(1.0, max(0.0, chance + b.confidence_bias + b.calibration_noise * rng.gauss()))

    def _choose(self, trace: Trace, t: int | str, d: Directive, budget: QABudget, stated: float) -> Action:
        if d.action is None:  # free-running: its own judgement, on the confidence it states
            if d.show_budget and (
                budget.tool_calls_left == 0 or budget.tokens_left < 2 * self.backbone.tokens[ANSWER][0]
            ):
                return Action.ANSWER
            if trace.searches == 0:
                return Action.SEARCH
            return Action.ANSWER if stated >= self.backbone.stop_threshold else Action.SEARCH
        if self._rng(trace, t, "obey").random() < self.backbone.p_obey:
            return d.action
        return Action.SEARCH if d.action in (Action.ANSWER, Action.BACKSTOP) else Action.ANSWER  # drift

    def _query(self, trace: Trace, action: Action, hits: list[Hit], t: int | str, sample: int) -> str:
        """The query of a retrieval turn (the ``sample``-th draw of this prompt aims at its ``sample``-th bridge)."""
        rng = self._rng(trace, t, "query")
        words = content_tokens(trace.question)
        asked = {normalize(s.query) for s in trace.steps if s.query}
        if hits and rng.random() >= self.backbone.p_vague_query:
            bridges = read(trace.question, hits, distraction=0.0, key="", form=ENTITY).candidates
            named = {w for h in hits for w in content_tokens(h.title)} & set(words)
            relation = [w for w in words if w not in named] or words
            for bridge, _, _ in bridges[sample : sample + 5]:
                query = " ".join([bridge, *relation] if action == Action.DECOMPOSE else [*words, bridge])
                if normalize(query) not in asked:
                    return query
        if (trace.searches or sample) and len(words) > 2:
            words.pop(rng.randrange(len(words)))
        return " ".join(words) or trace.question

    def _slip(self, trace: Trace, belief: str, t: int | str) -> str:
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
