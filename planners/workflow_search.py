"""The searches BayesFlow is measured against, on the same meta-LLM, scorer, prompts and result type.

**AFlow-style MCTS** (Zhang et al. 2024, "AFlow: automating agentic workflow generation"; the paper's main
baseline). Round 1 evaluates an initial workflow (meta "write"); each later round

1. *selects* a parent among the initial workflow and the top k by score (AFlow's code keeps the initial one as a
   candidate always), by AFlow's soft mixed probability P(i) = lambda / n + (1 - lambda) softmax(alpha (s_i - s_max))
   with scores s in percentage points, as AFlow's code scales them. We use lambda = 0.2, alpha = 0.4 and k = 3
   (AFlow's released code uses lambda = 0.3 and alpha = 0.2 on the same scale);
2. *expands* it: one consequential edit by the meta-LLM ("refine" with the parent's score, its failures, and what
   earlier edits of it scored: AFlow's tree-structured experience);
3. *evaluates* the child ``evaluations`` times and averages (AFlow evaluates five times; the default here is once,
   because the recorded-answer executor is deterministic, so repeats would cost money and tell nothing);
4. *backpropagates*: the child joins the tree under its parent, where selection and experience see it.

It stops after ``iterations`` rounds (20, as the BayesFlow paper ran AFlow) or at convergence: AFlow's check with
z = 0, the mean of the top k scores unchanged for ``patience`` consecutive rounds (5).

**Random search**: L independent "write" requests, each scored; the best is returned.

Both use the paper's self-correction (one "fix" for a workflow that fails to run), as BayesFlow does, so that the
comparison is of the search and not of error handling; both stop cleanly on a refused meta or scoring call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import anyio
import numpy as np

from planners.bayesflow import SearchSession, failure_lines
from planners.bayesflow_prompts import refine_prompt, write_prompt
from runtime.types import CallRefusedError, UsageError
from runtime.types._clock import single_error

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from planners.bayesflow_prompts import TaskSpec
    from planners.workflow_search_types import MetaLLM, RoundStats, ScoredWorkflow, Scorer, SearchResult

__all__ = ["AFlowOptions", "aflow_candidates", "aflow_search", "aflow_selection_probabilities", "random_search"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AFlowOptions:
    """AFlow-style MCTS settings (values as the module docstring states them)."""

    iterations: int = 20
    """Rounds in all, the initial workflow's included (AFlow's max_rounds)."""
    top_k: int = 3
    """How many of the best workflows selection considers, besides the initial one."""
    mix: float = 0.2
    """lambda, the weight of the uniform part of the selection distribution."""
    alpha: float = 0.4
    """alpha, the softmax's inverse temperature per percentage point of score."""
    evaluations: int = 1
    """Validation runs per workflow, averaged (AFlow: 5; 1 suits a deterministic executor)."""
    patience: int = 5
    """Stop when the top-k mean has not changed for this many consecutive rounds."""
    cost_weight: float = 0.0
    """As in BayesFlowOptions: a cost-aware reward when positive."""
    cost_scale: float = 0.01
    """As in BayesFlowOptions."""
    self_correct: bool = True
    """One fix request for a workflow that fails to run."""

    def __post_init__(self) -> None:
        for name in ("iterations", "top_k", "evaluations", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"AFlowOptions.{name} must be a positive integer, not {value!r}")
        if not 0.0 <= self.mix <= 1.0 or not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise UsageError(f"AFlowOptions: mix must lie in [0, 1] and alpha be >= 0, not {self.mix!r} {self.alpha!r}")
        if not (math.isfinite(self.cost_weight) and self.cost_weight >= 0 and self.cost_scale > 0):
            raise UsageError("AFlowOptions: cost_weight must be >= 0 and cost_scale > 0")


def aflow_candidates(rewards: Sequence[float], top_k: int = 3) -> list[int]:
    """The workflows selection chooses among: the initial one (index 0) and the top k of the rest by reward."""
    rest = sorted(range(1, len(rewards)), key=lambda i: (-rewards[i], i))
    return [0, *rest[:top_k]] if rewards else []


def aflow_selection_probabilities(scores: Sequence[float], mix: float = 0.2, alpha: float = 0.4) -> np.ndarray:
    """AFlow's soft mixed probability over candidates with ``scores`` in [0, 1] (percentage points inside)."""
    s = 100.0 * np.asarray(scores, dtype=float)
    e = np.exp(alpha * (s - s.max()))
    p: np.ndarray = mix / len(s) + (1.0 - mix) * e / e.sum()
    return p


async def aflow_search(
    task: TaskSpec,
    meta: MetaLLM,
    scorer: Scorer,
    questions: Sequence[int],
    *,
    options: AFlowOptions | None = None,
    seed: int = 0,
    on_round: Callable[[RoundStats], None] | None = None,
) -> SearchResult:
    """Search by AFlow-style MCTS (see the module docstring); the arguments are :func:`planners.bayesflow.bayesflow`'s.

    Raises:
        UsageError: no validation questions.
    """
    opts = options or AFlowOptions()
    rng = np.random.default_rng(seed)
    s = SearchSession(
        "aflow",
        task,
        meta,
        scorer,
        tuple(questions),
        rng,
        cost_weight=opts.cost_weight,
        cost_scale=opts.cost_scale,
        self_correct=opts.self_correct,
        evaluations=opts.evaluations,
    )
    rounds: list[RoundStats] = []
    top_means: list[float] = []
    converged = False
    try:
        for it in range(1, opts.iterations + 1):
            child = await (_expand(s, opts, rng, it) if s.pool else _initial(s, it))
            rounds.append(s.stats(it, [child] if child else [], None, False))
            if on_round is not None:
                on_round(rounds[-1])
            top_means.append(float(np.mean(sorted((w.reward for w in s.pool), reverse=True)[: opts.top_k] or [0.0])))
            if _converged(top_means, opts.top_k, opts.patience):
                converged = True
                break
    except CallRefusedError as exc:
        s.refuse(exc)
    return s.result(rounds, converged=converged)


async def _initial(s: SearchSession, it: int) -> ScoredWorkflow | None:
    """The root: a written workflow (again in a later round if no program came before)."""
    program = await s.ask(write_prompt(s.task), f"r{it}/write")
    if program is None:
        return None
    wf = await s.evaluate(program.source, s.questions, origin="write", round=it, tag=f"r{it}/written")
    s.add(wf)
    return wf


async def _expand(s: SearchSession, opts: AFlowOptions, rng: np.random.Generator, it: int) -> ScoredWorkflow | None:
    """Select a parent, ask for one edit, evaluate it, and put it in the tree under its parent."""
    candidates = aflow_candidates([w.reward for w in s.pool], opts.top_k)
    p = aflow_selection_probabilities([s.pool[c].reward for c in candidates], opts.mix, opts.alpha)
    parent_index = candidates[int(rng.choice(len(candidates), p=p))]
    parent = s.pool[parent_index]
    children = [w.reward for w in s.pool if w.parent == parent_index]
    history = "\n".join(f"- an edit scored {r:.4f} ({'better' if r > parent.reward else 'no gain'})" for r in children)
    prompt = refine_prompt(s.task, parent.source, parent.reward, failure_lines(parent), history=history)
    program = await s.ask(prompt, f"r{it}/refine")
    if program is None:
        return None
    tag = f"r{it}/refined"
    wf = await s.evaluate(program.source, s.questions, origin="refine", round=it, tag=tag, parent=parent_index)
    s.add(wf)
    return wf


def _converged(top_means: Sequence[float], top_k: int, patience: int) -> bool:
    """AFlow's convergence check at z = 0: the top-k mean unchanged over the last ``patience`` rounds (and at
    least top_k + 1 rounds run)."""
    if len(top_means) < max(top_k + 1, patience + 1):
        return False
    recent = top_means[-patience - 1 :]
    return max(recent) - min(recent) <= 1e-12


async def random_search(
    task: TaskSpec,
    meta: MetaLLM,
    scorer: Scorer,
    questions: Sequence[int],
    *,
    samples: int = 20,
    seed: int = 0,
    self_correct: bool = True,
    cost_weight: float = 0.0,
    cost_scale: float = 0.01,
    concurrency: int = 10,
    on_round: Callable[[RoundStats], None] | None = None,
) -> SearchResult:
    """Write ``samples`` workflows independently (concurrently, ``concurrency`` calls at a time), score each, and
    return the best. ``seed`` is unused by the search itself (it draws nothing) and kept for a uniform interface.

    Raises:
        UsageError: no validation questions, or fewer than one sample.
    """
    if samples < 1:
        raise UsageError(f"random search needs at least one sample, not {samples}")
    s = SearchSession(
        "random",
        task,
        meta,
        scorer,
        tuple(questions),
        np.random.default_rng(seed),
        cost_weight=cost_weight,
        cost_scale=cost_scale,
        self_correct=self_correct,
        concurrency=concurrency,
    )
    found: list[ScoredWorkflow | None] = [None] * samples

    async def one(i: int) -> None:
        program = await s.ask(write_prompt(s.task), f"r1/write/{i}")
        if program is not None:
            found[i] = await s.evaluate(program.source, s.questions, origin="write", round=1, tag=f"r1/written/{i}")

    with single_error():
        async with anyio.create_task_group() as tg:
            for i in range(samples):
                tg.start_soon(s.guarded, tg.cancel_scope, partial(one, i))
    scored = [wf for wf in found if wf is not None]
    for wf in scored:  # in request order, whatever order they finished in
        s.add(wf)
    stats = s.stats(1, scored, None, False)
    if on_round is not None:
        on_round(stats)
    return s.result([stats])
