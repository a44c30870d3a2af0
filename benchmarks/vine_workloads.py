"""The repair-loop workloads of ``ontime bench vine``, built from real recorded data.

*Reflection* (the VineLM paper's MathQA workflow, on Renze & Guven's recorded answers): one loop subtask, up to
``horizon`` invocations, each on any of the chosen models. A model's first invocation on a question returns its
recorded first answer; a repeat returns its recorded ``retry`` reflection (it was told its answer was wrong), so a
repair follows its own failure (``repairs="own"``), and other models answer afresh. The reflections written with the
answer in view (solution, composite, unredacted) are never used.

Every run draws one question of the *test* split and replays what each model really did on it (the run's profile:
:meth:`runtime.types.LatentClasses.replay` over the test questions). Planners plan with the same replay over the
disjoint *profile* split (full offline profiling, as the paper's Murakkab and VineLM use), so nothing a planner
reads comes from a test question. The split is by a stable hash of the question (1 in 4 to profiling).

Lengths and prices are real: each model's output tokens are drawn from its recorded lengths on the profiling split
(independently of the question: a debt, since wrong answers are often longer), its input tokens are the median
recorded, and prices come from genai-prices (:data:`tools.reflection_cascade.PRICE_IDS`). Latency is not in the
data: the speeds in :data:`SPEEDS` are round public figures of 2024 APIs, used only to order events; the benchmark's
deadline does not bind.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from benchmarks._report import EXAMPLES
from planners.cascade_estimates import estimate
from planners.cascade_sampling import cascade_sample
from runtime.types import (
    CascadeTable,
    History,
    LatentClasses,
    Loop,
    ModelSpec,
    PoolProfile,
    Subtask,
    UsageError,
    Workflow,
)
from tools.reflection_cascade import cascade_table, price_per_million
from tools.reflection_data import Attempt, Outcomes, load_attempts

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["DEFAULT_MODELS", "SPEEDS", "Workload", "reflection", "split_of"]

# The MathQA-4 analogue: four models that span price (0.1 to 75 dollars per million output tokens) and accuracy.
DEFAULT_MODELS = ("gemini-1.0-pro", "gpt-35-turbo", "gemini-1.5-pro-preview-0409", "claude-3-opus-20240229")
SPEEDS = (60.0, 0.6)  # tokens per second and seconds to the first token, for every model (no latency recorded)
MAX_TOKENS = 1024  # what a call asks for at most: above every clean recorded answer's 99th percentile
SAMPLE = EXAMPLES / "reflection" / "attempts_sample.csv"


@dataclass(frozen=True)
class Workload:
    """A loop workload: the profiles runs are drawn from (``truth``) and the ones planners plan with (``planned``,
    fully profiled; ``sparse``, if built, estimated from sparse cascade profiling of the same split)."""

    name: str
    truth: Workflow
    planned: Workflow
    test_questions: int
    profile_questions: int
    sparse: Workflow | None = None


def split_of(question: tuple[str, str]) -> str:
    """``profile`` for 1 question in 4 (a stable hash), ``test`` for the rest."""
    digest = hashlib.sha1(f"{question[0]}:{question[1]}".encode()).digest()
    return "profile" if digest[0] % 4 == 0 else "test"


def reflection(
    path: Path | str = SAMPLE,
    models: Sequence[str] | None = None,
    horizon: int = 6,
    *,
    coverage: float | None = None,
    estimator: str = "vinelm",
    seed: int = 0,
) -> Workload:
    """The reflection workload from an attempts file (default: the sample the repository ships). With
    ``coverage``, also the ``sparse`` plan: the profiling split cascade-sampled for that fraction of the cost of
    profiling every path with checkpoints (the VineLM paper's 2%), its conditional rates estimated by
    ``estimator`` (planners/cascade_estimates.py), written as a cascade table.

    Raises:
        UsageError: an unknown model, a model without a price, or a split with no question.
    """
    attempts = load_attempts(path)
    known = sorted({a.model for a in attempts})
    present = [m for m in DEFAULT_MODELS if m in known]
    models = tuple(models or (present if len(present) > 1 else known))
    unknown = [m for m in models if m not in known]
    if unknown:
        raise UsageError(f"no attempts of {', '.join(unknown)} in {path} (models: {', '.join(known)})")
    recorded = Outcomes(attempts)
    first = {m: recorded.answers(m) for m in models}
    retry = {m: recorded.second_answers(m, "retry") for m in models}
    questions = sorted(set.intersection(*(set(first[m]) for m in models)))
    parts = {s: [q for q in questions if split_of(q) == s] for s in ("profile", "test")}
    if not parts["profile"] or not parts["test"]:
        raise UsageError(f"{path}: too few questions to split into profile and test ({len(questions)})")
    specs = {m: _model(m) for m in models}
    pools = _lengths(attempts, models, set(parts["profile"]))
    inputs = statistics.median(a.input_tokens for a in attempts if a.model in first and a.attempt == 1)

    def workflow(tag: str, history: History) -> Workflow:
        loop = Subtask(id="answer", deps=(), input_tokens=round(inputs), profiles=pools, loop=Loop(horizon),
                       history=history)  # fmt: skip
        return Workflow(name=f"reflection-{tag}", models=specs, subtasks=(loop,))

    def replay(qs: list[tuple[str, str]]) -> History:
        # A model's repair of a question it got right never runs (a loop stops at its first success): False.
        return LatentClasses.replay({m: [first[m][q] for q in qs] for m in models},
                                    {m: [retry[m].get(q, False) for q in qs] for m in models})  # fmt: skip

    sparse = None
    if coverage is not None:
        outcomes, _ = cascade_table(attempts, models, horizon, questions=parts["profile"])
        budget = coverage * outcomes.profiling_cost().checkpointed
        obs = cascade_sample(outcomes, budget, np.random.default_rng(seed))
        rates = estimate(estimator, outcomes.trie, obs).cascade_rates(outcomes.trie)
        sparse = workflow("sparse", CascadeTable({r.path: r.rate for r in rates}))
    test, profile = (workflow(s, replay(parts[s])) for s in ("test", "profile"))
    return Workload("reflection", test, profile, len(parts["test"]), len(parts["profile"]), sparse)


def _model(name: str) -> ModelSpec:
    inp, out = price_per_million(name)
    return ModelSpec(name=name, provider="sim", input_price_per_mtok=inp, output_price_per_mtok=out,
                     tokens_per_s=SPEEDS[0], ttft_s=SPEEDS[1], max_output_tokens=MAX_TOKENS)  # fmt: skip


def _lengths(
    attempts: Sequence[Attempt], models: Sequence[str], profile: set[tuple[str, str]]
) -> dict[str, PoolProfile]:
    """Each model's recorded output lengths on the profiling split (first answers and retries), as a pool."""
    out = {}
    for m in models:
        rows = [(a.right, max(1, a.output_tokens), None) for a in attempts
                if a.model == m and a.question in profile and a.agent in ("baseline", "retry")]  # fmt: skip
        out[m] = PoolProfile(samples=tuple(rows))
    return out
