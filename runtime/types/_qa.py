"""The search agent's data and the three parts it is made of (:class:`QAController`, :class:`AgentModel`,
:class:`SearchTool`).

The search agent (``runtime.answer``) asks its controller for a :class:`Directive` before every model turn.
Controllers read only the :class:`Trace` and the :class:`QABudget`; they never see gold labels.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_TOP_K",
    "Action",
    "AgentModel",
    "Directive",
    "Hit",
    "ModelTurn",
    "Node",
    "Parsed",
    "QABudget",
    "QAController",
    "SearchTool",
    "Step",
    "StopReason",
    "Trace",
    "content_tokens",
    "parse_turn",
]

DEFAULT_TOP_K = 5  # paragraphs a search returns


class Action(StrEnum):
    """What a turn does (a step's action) or is told to do (a directive's)."""

    SEARCH = "search"
    DECOMPOSE = "decompose"  # a search aimed at the missing bridge entity of a compositional question
    ANSWER = "answer"
    BACKSTOP = "backstop"  # answer now: too little budget is left for another retrieval (directives only)
    VERIFY = "verify"  # check the current candidate against the evidence; no tool call, no answer (BATS)
    REASON = "reason"  # condense the last documents to what the question needs (Search-o1 Reason-in-Documents)
    STALL = "stall"  # the turn was malformed or asked for a search it had no tool call left for (steps only)


class StopReason(StrEnum):
    """Why the agent stopped."""

    ANSWERED = "answered"
    BUDGET = "budget"  # no output tokens left for another turn
    DEADLINE = "deadline"
    TURNS = "turns"  # the most turns the caps allow went by without an answer
    UNREACHABLE = "unreachable"  # the model's endpoint failed several turns in a row
    OVER_ALLOWANCE = "over_allowance"  # a turn reported more output than its allowance (max_tokens ignored)


_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = (
    "a an the of in on at to for from by with and or but is are was were be been being do does did has have had "
    "what which who whom whose when where why how that this these those it its as than then there their they he "
    "she his her him them we you i me my our your not no yes"
)
STOPWORDS = frozenset(_STOPWORDS.split())


def content_tokens(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` without stop words."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


@dataclass(frozen=True, slots=True)
class QABudget:
    """Caps and what is left of them: tool calls and output tokens."""

    tool_calls: int
    tokens: int
    tool_calls_left: int
    tokens_left: int

    @property
    def pressure(self) -> float:
        """rho_t = 1 - min(b_tool / B_tool, b_tok / B_tok), in [0, 1] (VOI paper, Appendix D)."""
        tool = self.tool_calls_left / self.tool_calls if self.tool_calls else 0.0
        tok = self.tokens_left / self.tokens if self.tokens else 0.0
        return min(1.0, max(0.0, 1.0 - min(tool, tok)))


@dataclass(frozen=True, slots=True)
class Step:
    """One model turn and what came of it."""

    action: Action  # what the model did: search, decompose, verify, reason, answer, or stall
    directive: Action | None  # what it was told to do (None: free-running)
    output_tokens: int
    thought: str = ""
    query: str | None = None
    hits: tuple[Hit, ...] = ()
    answer: str | None = None
    candidate: str | None = None  # the hypothesis the model stated in its thought, if any
    truncated: bool = False
    confidence: float | None = None  # the model's own "Confidence: c" for its candidate, if it stated one
    verdict: bool | None = None  # a verify turn's "Verdict: supported" (True) or "unsupported" (False)


@dataclass(slots=True)
class Trace:
    """The search so far: the question, every step, and the evidence retrieved (by paragraph id)."""

    question: str
    steps: list[Step] = field(default_factory=list)
    evidence: dict[str, Hit] = field(default_factory=dict)

    def branch(self) -> Trace:
        """A copy to extend: a tree search grows several trajectories from one prefix."""
        return Trace(self.question, list(self.steps), dict(self.evidence))

    @property
    def searches(self) -> int:
        return sum(1 for s in self.steps if s.query is not None)

    @property
    def decompositions(self) -> int:
        return sum(1 for s in self.steps if s.action is Action.DECOMPOSE)

    @property
    def candidate(self) -> str | None:
        """The latest hypothesis the model stated (or its latest answer)."""
        return next((s.answer or s.candidate for s in reversed(self.steps) if s.answer or s.candidate), None)

    @property
    def plan(self) -> str | None:
        """The high-level plan the model wrote in its first thought ("Plan: ..."), kept in later prompts."""
        first = self.steps[0].thought if self.steps else ""
        i = first.find("Plan:")
        return first[i:].split("\n")[0].strip() if i >= 0 else None

    @property
    def confidence(self) -> float | None:
        """The model's latest stated confidence in its candidate (the critic signal), if any."""
        return next((s.confidence for s in reversed(self.steps) if s.confidence is not None), None)

    @property
    def answer(self) -> str | None:
        return next((s.answer for s in reversed(self.steps) if s.answer is not None), None)

    def new_hits_last(self) -> int:
        """How many paragraphs the last search added to the evidence."""
        for i, s in reversed(list(enumerate(self.steps))):
            if s.query is not None:
                seen = {h.id for t in self.steps[:i] for h in t.hits}
                return sum(1 for h in s.hits if h.id not in seen)
        return 0

    def support(self, answer: str | None) -> float:
        """The largest share of ``answer``'s content words found in one retrieved paragraph (0 to 1)."""
        words = set(content_tokens(answer or ""))
        if not words:
            return 0.0
        shares = (len(words & set(content_tokens(f"{h.title} {h.text}"))) / len(words) for h in self.evidence.values())
        return max(shares, default=0.0)


@dataclass(frozen=True, slots=True)
class Directive:
    """The next turn: the action to inject (None: the model decides), its token allowance, the prompt style, and
    which sample of the same prompt it is (a tree search asks one prompt again for a new branch: a model sampling
    at a temperature answers differently, and the simulated model draws afresh)."""

    action: Action | None
    max_tokens: int
    show_budget: bool = False
    sample: int = 0


_TAG = {
    name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL | re.IGNORECASE)
    for name in ("thought", "tool_call", "answer")
}
_CANDIDATE = re.compile(r"Candidate:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_CONFIDENCE = re.compile(r"Confidence:\s*([01](?:\.\d+)?)", re.IGNORECASE)
_VERDICT = re.compile(r"Verdict:\s*(un)?supported\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Parsed:
    thought: str
    query: str | None
    answer: str | None
    candidate: str | None
    confidence: float | None = None
    verdict: bool | None = None


def _group(pattern: re.Pattern[str], text: str) -> str | None:
    m = pattern.search(text)
    return m.group(1).strip() if m else None


def parse_turn(text: str) -> Parsed:
    """The parts of a model turn; missing or unclosed tags are simply absent (a malformed turn)."""
    t = _group(_TAG["thought"], text) or ""
    ans = _group(_TAG["answer"], text)
    # both an answer and a tool call: the answer wins, as the turn format says
    query = None if ans is not None else _group(_TAG["tool_call"], text)
    conf = _group(_CONFIDENCE, t)
    verdict = _VERDICT.search(t)
    return Parsed(
        t,
        query or None,
        ans,
        _group(_CANDIDATE, t),
        float(conf) if conf else None,
        None if verdict is None else verdict.group(1) is None,
    )


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved paragraph."""

    id: str
    title: str
    text: str
    score: float


class SearchTool(ABC):
    """A retrieval tool. One call is one tool call: the search agent reserves and settles it, never the tool."""

    @abstractmethod
    async def search(self, query: str, top_k: int = DEFAULT_TOP_K) -> list[Hit]:
        """The ``top_k`` best paragraphs for ``query``, best first.

        Raises:
            ProviderUnavailableError: a remote search endpoint failed.
        """

    async def aclose(self) -> None:  # noqa: B027 (optional hook: an in-memory index holds nothing)
        """Close connections."""


@dataclass(frozen=True, slots=True)
class ModelTurn:
    """What the model wrote in one turn, and how many output tokens it took."""

    text: str
    output_tokens: int

    def cut(self, max_tokens: int) -> ModelTurn:
        """This turn as an endpoint that honours ``max_tokens`` returns it: cut off, so its closing tags never come
        (the simulated model and the replay of a recorded turn cut the same way)."""
        if self.output_tokens <= max_tokens:
            return self
        return ModelTurn(self.text[: max(0, len(self.text) * max_tokens // self.output_tokens - 1)], max_tokens)


class AgentModel(ABC):
    """The LLM behind a search agent: one turn from the trace, the directive and the budget."""

    @abstractmethod
    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        """The model's output for this turn (at most ``directive.max_tokens`` output tokens).

        Raises:
            ProviderError: the endpoint failed (the agent charges the turn's whole allowance and goes on).
        """

    async def aclose(self) -> None:  # noqa: B027 (optional hook: the simulated model holds nothing)
        """Close connections; the search agent's owner calls it when the answer is done."""


@dataclass(slots=True, eq=False)
class Node:
    """A partial trajectory of the search: its path from the question (``trace``) and where it hangs in the tree.

    Node ``k`` is the one the agent's ``k``-th turn made (its last step); node 0 is the question alone.
    """

    id: int
    parent: Node | None
    trace: Trace
    children: list[Node] = field(default_factory=list)


class QAController(ABC):
    """Decides the next directive of a search agent from its trace and the budget left."""

    name: str = "controller"

    @abstractmethod
    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        """The next turn's directive. Must not ask for more tokens than ``budget.tokens_left``."""

    def expand(self, tree: Sequence[Node], budget: QABudget) -> tuple[Node, Directive]:
        """The node whose trajectory the next turn extends, and that turn's directive (``tree[k]`` is node ``k``).

        A linear controller extends the latest node, so its run is one branch; a tree search (BAVT) overrides this
        and :meth:`best`.
        """
        return tree[-1], self.decide(tree[-1].trace, budget)

    def best(self, tree: Sequence[Node]) -> Node:
        """The node whose trajectory gives the answer when the run stops without one (one branch: the latest)."""
        return tree[-1]
