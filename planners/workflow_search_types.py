"""What BayesFlow, AFlow-style MCTS and random search share: the meta-LLM and scorer they are given, and the result.

The caller binds both to ontime: the meta-LLM to ``call_llm`` on a real or simulated meta model, the scorer to
running a workflow on validation questions in the sandbox. Both then spend from the optimizer's budget, and a call
that does not fit raises :class:`runtime.types.CallRefusedError`, which ends a search with what it found so far.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from runtime.types import UsageError

__all__ = ["MetaLLM", "RoundStats", "Score", "ScoredWorkflow", "Scorer", "SearchResult", "StopReason"]

MetaLLM = Callable[[str, str, str], Awaitable[str]]
"""(system prompt, user prompt, tag) -> the reply's text. Raises CallRefusedError when the call is not afforded."""

StopReason = Literal["done", "converged", "over_budget", "past_deadline", "refused"]


@dataclass(frozen=True, slots=True)
class Score:
    """A workflow's result on some validation questions.

    Attributes:
        value: the mean score over the questions, in [0, 1].
        per_question: each question's score, in the order asked.
        cost_usd: the workflow's own executor spend per question (what running it would cost a user).
        error: None if it ran; else why it did not (a traceback tail): the search asks the meta-LLM for one fix.
    """

    value: float
    per_question: tuple[float, ...]
    cost_usd: float
    error: str | None = None

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (self.value, *self.per_question)):
            raise UsageError(f"scores must lie in [0, 1], not {self.value!r} / {self.per_question!r}")
        if not (math.isfinite(self.cost_usd) and self.cost_usd >= 0.0):
            raise UsageError(f"cost_usd must be finite and non-negative, not {self.cost_usd!r}")


class Scorer(Protocol):
    """Scores a workflow program on validation questions (by their positions in the caller's validation set)."""

    async def score(self, source: str, questions: Sequence[int]) -> Score:
        """Run ``source`` on each question and score its answers.

        Raises:
            CallRefusedError: the evaluation does not fit the optimizer's budget or deadline (the search stops).
        """
        ...


@dataclass(frozen=True, slots=True)
class ScoredWorkflow:
    """One complete workflow a search scored (a member of the global pool C of Alg. 2).

    Attributes:
        source: the program (after self-correction, if a fix ran and replaced it).
        reward: R, what the search weighs and ranks by: the score, less the cost term when the reward is cost-aware.
        score: the raw score, its per-question results and cost.
        questions: the validation questions it was scored on.
        origin: how it was made: "rollout" (a look-ahead completion), "refine", "write".
        round: the round (BayesFlow) or iteration (MCTS) that made it.
        parent: the pool index of the workflow it edits (refine), or None.
        fixed: whether the scored source is the meta-LLM's fix of a program that failed to run.
    """

    source: str
    reward: float
    score: Score
    questions: tuple[int, ...]
    origin: str
    round: int
    parent: int | None = None
    fixed: bool = False


@dataclass(frozen=True, slots=True)
class RoundStats:
    """Progress after one round: the rewards of the workflows it scored, and the particle population's state.

    ``ess`` and ``resampled`` concern BayesFlow's population (None and False for the other searches); the
    rewards are those of the workflows scored in the round (nan when none was).
    """

    round: int
    max_reward: float
    min_reward: float
    mean_reward: float
    ess: float | None
    resampled: bool
    scored: int
    best_reward: float
    meta_calls: int


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What a search found.

    Attributes:
        method: "bayesflow", "aflow" or "random".
        best: the pool's argmax by reward (the earliest of ties), or None if nothing was scored.
        pool: every complete workflow scored, in the order scored (Alg. 2's C).
        rounds: per-round progress.
        meta_calls: meta-LLM calls that returned.
        stop: "done" (ran its course), "converged" (MCTS), or why a call was refused.
    """

    method: str
    best: ScoredWorkflow | None
    pool: tuple[ScoredWorkflow, ...]
    rounds: tuple[RoundStats, ...]
    meta_calls: int
    stop: StopReason

    @property
    def stopped_early(self) -> bool:
        """Whether the budget or the deadline ended the search before it ran its course."""
        return self.stop in ("over_budget", "past_deadline", "refused")
