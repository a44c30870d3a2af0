"""BayesFlow (Yuan et al. 2026, "BayesFlow: a probability inference framework for meta-agent assisted workflow
generation"): Sequential Monte Carlo over step-annotated workflow programs, with a meta-LLM as the prior.

Target q(s) ∝ p(s) exp(β R(s)), p the meta-LLM's distribution over programs, R the validation score in [0, 1].
One round t (Alg. 1, STEPUPDATE) advances N prefixes from t-1 to t steps:

1. **Extend**: each prefix gets one more step from the meta-LLM ("extend"), s_t ~ p(s_t | s_1:t-1).
2. **Look ahead**: each new prefix gets K completions ("complete"), each scored; its weight is
   w = (1/K) Σ_k exp(β R(s_1:t, s~_t+1:T)). The N x K look-aheads run concurrently (a capacity limit bounds how
   many meta or scoring calls are in flight). A prefix that already has T steps is its own completion.
3. **Refine**: M workflows made one at a time from the pool of complete scored workflows: the top C = 3 by
   reward, one drawn by a softmax over rewards at temperature 0.1, edited by the meta-LLM ("refine", one
   consequential edit), scored, and inserted into the pool before the next is made.
4. **Project and resample**: each refined workflow is cut to t steps with weight exp(β R); N prefixes are drawn
   from the N + M weighted candidates (multinomial, as the paper; systematic as an option).

Alg. 2 runs T rounds from an empty prefix (its loop ``while t <= T`` would run T + 1: the T rounds that build steps
1..T are meant), keeps every complete workflow scored (the pool C) and returns the argmax of R. A workflow that
fails to run gets one "fix" request carrying the error log and the paper's sentence against try-except; the fix
replaces it if it runs (Sec. 5). Defaults are App. E's: N = 10, M = 10, K = 1, T = 5, and β = 1 (the paper's exp(R)).

Where the paper is silent: a completion is joined onto its prefix (:func:`planners.workflow_code.join`), so R is
that of (s_1:t, s~_t+1:T) whatever the reply did to steps 1..t; an extension whose reply holds no new step gives
its particle weight 0 (with every weight 0 the population goes on as it was); a completion whose reply holds no
program counts R = 0 in its prefix's weight and is no member of C; a refined workflow of fewer than t steps enters
whole (the paper pads short workflows with empty steps), and its particle is extended from where it ends.

Beyond the paper, each an option of :class:`BayesFlowOptions`, off by default: an inverse temperature β (with R in
[0, 1], exp(R) caps weight ratios at e, so selection is weak); resampling only when the effective sample size is
low; a refiner that draws from every workflow scored so far rather than the round's pool (the paper "prunes most
rollout traces without long-term reuse"); validation subsets, paired within a round; a cost-aware reward.

Every meta-LLM and scoring call goes through the caller's functions, which ontime budgets; a refused call
(:class:`runtime.types.CallRefusedError`) ends the search with the best workflow found so far and says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import anyio
import numpy as np

from planners.bayesflow_prompts import complete_prompt, extend_prompt, fix_prompt, refine_prompt, system_prompt
from planners.workflow_code import StepProgram, check, extract_code, join
from planners.workflow_search_types import RoundStats, Score, ScoredWorkflow, SearchResult, StopReason
from runtime.types import CallRefusedError, OverBudgetError, PastDeadlineError, SpecError, UsageError
from runtime.types._clock import single_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from anyio.abc import TaskGroup

    from planners.bayesflow_prompts import TaskSpec
    from planners.workflow_search_types import MetaLLM, Scorer

__all__ = [
    "BayesFlowOptions",
    "Resampling",
    "SearchSession",
    "bayesflow",
    "effective_sample_size",
    "failure_lines",
    "lookahead_weight",
    "refiner_probabilities",
    "resample",
]

Resampling = Literal["multinomial", "systematic"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BayesFlowOptions:
    """BayesFlow's settings; the defaults are the paper's (App. E and Sec. 5)."""

    n: int = 10
    """N, the prefixes (particles) carried from round to round."""
    m: int = 10
    """M, the refined workflows made per round (0 turns the refiner off: the plain SMC of Theorem 1)."""
    k: int = 1
    """K, the look-ahead completions per prefix."""
    top_c: int = 3
    """C, how many of the best workflows the refiner chooses among."""
    refine_temperature: float = 0.1
    """The temperature of the refiner's softmax over the top C rewards."""
    beta: float = 1.0
    """β, the inverse temperature on R: weights exp(β R); 1 is the paper's, larger selects harder (at most 100)."""
    resampling: Resampling = "multinomial"
    """How N prefixes are drawn: "multinomial" (the paper) or "systematic" (lower variance)."""
    ess_threshold: float | None = None
    """Resample only when ESS / N falls below this; None resamples every round (the paper)."""
    reuse_rollouts: bool = False
    """The refiner draws from every workflow scored in any round, not only this round's (the paper's P_t); the pool
    C that the result's argmax is taken over keeps every workflow either way (Alg. 2, line 7)."""
    subset_size: int | None = None
    """Score each workflow on this many validation questions drawn at random; None scores on all (the paper)."""
    paired_subsets: bool = False
    """With subsets, one subset per round for every candidate of the round (paired) instead of one per candidate."""
    cost_weight: float = 0.0
    """R = clip(score - cost_weight * cost per question / cost_scale, 0, 1); 0 is the paper's R = score."""
    cost_scale: float = 0.01
    """The cost per question (USD) at which the cost term equals cost_weight."""
    self_correct: bool = True
    """A workflow that fails to run gets one fix request (the paper's self-correction)."""
    concurrency: int = 10
    """The most meta-LLM or scoring calls in flight at once."""

    def __post_init__(self) -> None:
        for name, low in (("n", 1), ("m", 0), ("k", 1), ("top_c", 1), ("concurrency", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"BayesFlowOptions.{name} must be an integer >= {low}, not {value!r}")
        for name in ("refine_temperature", "cost_scale"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise UsageError(f"BayesFlowOptions.{name} must be positive, not {getattr(self, name)!r}")
        for name in ("beta", "cost_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UsageError(f"BayesFlowOptions.{name} must be non-negative, not {getattr(self, name)!r}")
        if self.beta > 100:  # exp(β R) must stay a finite float; at β = 100 one point of R is already e^1
            raise UsageError(f"BayesFlowOptions.beta must be at most 100, not {self.beta!r}")
        if self.resampling not in ("multinomial", "systematic"):
            raise UsageError(f"resampling must be multinomial or systematic, not {self.resampling!r}")
        if self.ess_threshold is not None and not (math.isfinite(self.ess_threshold) and self.ess_threshold > 0):
            raise UsageError(f"ess_threshold must be positive or None, not {self.ess_threshold!r}")
        if self.subset_size is not None and (isinstance(self.subset_size, bool) or self.subset_size < 1):
            raise UsageError(f"subset_size must be a positive integer or None, not {self.subset_size!r}")


def lookahead_weight(rewards: Sequence[float], beta: float = 1.0) -> float:
    """A prefix's importance weight: the mean of exp(β R) over its look-ahead completions (Alg. 1, line 2)."""
    if not rewards:
        raise UsageError("a look-ahead weight needs at least one completion")
    return float(np.mean(np.exp(beta * np.asarray(rewards, dtype=float))))


def effective_sample_size(weights: Sequence[float] | np.ndarray) -> float:
    """(Σ w)² / Σ w²: how many equally weighted particles the weights are worth (0 when every weight is 0)."""
    w = np.asarray(weights, dtype=float)
    total = float(w.sum())
    return 0.0 if total <= 0 else total * total / float((w * w).sum())


def resample(weights: Sequence[float] | np.ndarray, n: int, rng: np.random.Generator, method: Resampling) -> np.ndarray:
    """n indices drawn with probability proportional to ``weights``.

    Multinomial draws each index independently; systematic uses one uniform u and the points (u + j) / n, so each
    index appears floor or ceil of n times its probability.

    Raises:
        UsageError: a negative or non-finite weight, or all weights 0.
    """
    w = np.asarray(weights, dtype=float)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise UsageError(f"resampling needs finite non-negative weights with a positive sum, not {w!r}")
    p = w / w.sum()
    if method == "multinomial":
        return rng.choice(len(p), size=n, p=p)
    cumulative = np.cumsum(p)
    cumulative[-1] = 1.0  # rounding must not leave the last point past the end
    return np.searchsorted(cumulative, (rng.random() + np.arange(n)) / n, side="right")


def refiner_probabilities(rewards: Sequence[float], top_c: int = 3, temperature: float = 0.1) -> np.ndarray:
    """The refiner's choice over a pool: the top C by reward (earlier first among ties), then a softmax of
    R / temperature among them; 0 for the rest (Sec. 5, "Refiner implementation")."""
    r = np.asarray(rewards, dtype=float)
    top = np.argsort(-r, kind="stable")[:top_c]
    logits = r[top] / temperature
    e = np.exp(logits - logits.max())
    p = np.zeros(len(r))
    p[top] = e / e.sum()
    return p


def failure_lines(workflow: ScoredWorkflow, limit: int = 10) -> list[str]:
    """Where a workflow fell short, for a refine prompt: first the count of questions it missed (a line that starts
    with the number, which a reader can take as the failure count), then which (positions, never text), its error
    and its cost."""
    pairs = zip(workflow.questions, workflow.score.per_question, strict=False)
    wrong = [(q, s) for q, s in pairs if s < 1.0]
    lines = [f"{len(wrong)} of {len(workflow.questions)} validation questions scored below 1"]
    lines += [f"- question {q}: score {s:.2f}" for q, s in wrong[:limit]]
    if workflow.score.error:
        lines.append(f"- error: {workflow.score.error.strip().splitlines()[-1]}")
    lines.append(f"- cost per question: ${workflow.score.cost_usd:.6f}")
    return lines


def _stop_reason(exc: CallRefusedError) -> StopReason:
    if isinstance(exc, OverBudgetError):
        return "over_budget"
    return "past_deadline" if isinstance(exc, PastDeadlineError) else "refused"


@dataclass
class SearchSession:
    """What every search does the same way: ask the meta-LLM (counting calls), score with the paper's
    self-correction, compute R, keep the pool C, and end on the first refused call."""

    method: str
    task: TaskSpec
    meta: MetaLLM
    scorer: Scorer
    questions: tuple[int, ...]
    rng: np.random.Generator
    cost_weight: float = 0.0
    cost_scale: float = 0.01
    self_correct: bool = True
    concurrency: int = 10
    evaluations: int = 1
    subset_size: int | None = None
    pool: list[ScoredWorkflow] = field(default_factory=list)
    meta_calls: int = 0
    refusal: CallRefusedError | None = None

    def __post_init__(self) -> None:
        if not self.questions:
            raise UsageError("a search needs at least one validation question")
        if self.subset_size is not None and self.subset_size > len(self.questions):
            raise UsageError(f"subset_size {self.subset_size} exceeds the {len(self.questions)} validation questions")
        self.system = system_prompt(self.task)
        self.limiter = anyio.CapacityLimiter(self.concurrency)

    def reward(self, score: Score) -> float:
        return min(1.0, max(0.0, score.value - self.cost_weight * score.cost_usd / self.cost_scale))

    def draw_questions(self) -> tuple[int, ...]:
        """The validation questions to score one candidate on: all, or a random subset in the set's order."""
        if self.subset_size is None:
            return self.questions
        picked = np.sort(self.rng.choice(len(self.questions), size=self.subset_size, replace=False))
        return tuple(self.questions[i] for i in picked)

    async def ask(self, prompt: str, tag: str) -> StepProgram | None:
        """The meta-LLM's program for ``prompt``, markers renumbered; None if the reply held no program."""
        async with self.limiter:
            reply = await self.meta(self.system, prompt, f"{self.method}/{tag}")
        self.meta_calls += 1
        try:
            return StepProgram.parse(extract_code(reply)).renumbered()
        except SpecError:
            return None

    async def evaluate(
        self, source: str, questions: tuple[int, ...], *, origin: str, round: int, tag: str, parent: int | None = None
    ) -> ScoredWorkflow:
        """Score ``source``; if it fails to run, ask for one fix and keep the fix if it runs and is not worse (a
        program that failed on one question may still beat its fix on the rest)."""
        score = await self._score(source, questions)
        fixed = False
        if score.error is not None and self.self_correct:
            repaired = await self.ask(fix_prompt(self.task, source, score.error), f"{tag}/fix")
            if repaired is not None:
                rescored = await self._score(repaired.source, questions)
                if rescored.error is None and self.reward(rescored) >= self.reward(score):
                    source, score, fixed = repaired.source, rescored, True
        return ScoredWorkflow(source, self.reward(score), score, questions, origin, round, parent, fixed)

    async def _score(self, source: str, questions: tuple[int, ...]) -> Score:
        problem = check(source)
        if problem is not None:  # caught here, no executor money spent on it
            return Score(0.0, (0.0,) * len(questions), 0.0, problem)
        runs = []
        for _ in range(self.evaluations):
            async with self.limiter:
                runs.append(await self.scorer.score(source, questions))
        if len(runs) == 1:
            return runs[0]
        errors = [r.error for r in runs if r.error is not None]
        return Score(
            float(np.mean([r.value for r in runs])),
            tuple(float(x) for x in np.mean([r.per_question for r in runs], axis=0)),
            float(np.mean([r.cost_usd for r in runs])),
            errors[0] if errors else None,
        )

    def add(self, workflow: ScoredWorkflow) -> int:
        self.pool.append(workflow)
        return len(self.pool) - 1

    def refuse(self, exc: CallRefusedError) -> None:
        if self.refusal is None:
            self.refusal = exc

    async def guarded(self, scope: anyio.CancelScope, fn: Callable[[], Awaitable[Any]]) -> None:
        """Run one concurrent task; a refused call records why and cancels its siblings (the search ends)."""
        try:
            await fn()
        except CallRefusedError as exc:
            self.refuse(exc)
            scope.cancel()

    def stats(self, round: int, scored: Sequence[ScoredWorkflow], ess: float | None, resampled: bool) -> RoundStats:
        rewards = [w.reward for w in scored] or [math.nan]
        return RoundStats(
            round=round,
            max_reward=max(rewards),
            min_reward=min(rewards),
            mean_reward=float(np.mean(rewards)),
            ess=ess,
            resampled=resampled,
            scored=len(scored),
            best_reward=max((w.reward for w in self.pool), default=math.nan),
            meta_calls=self.meta_calls,
        )

    def result(self, rounds: Sequence[RoundStats], *, converged: bool = False) -> SearchResult:
        best = max(enumerate(self.pool), key=lambda iw: (iw[1].reward, -iw[0]), default=None)
        stop: StopReason = "converged" if converged else "done"
        if self.refusal is not None:
            stop = _stop_reason(self.refusal)
        return SearchResult(
            self.method, best[1] if best else None, tuple(self.pool), tuple(rounds), self.meta_calls, stop
        )


async def bayesflow(
    task: TaskSpec,
    meta: MetaLLM,
    scorer: Scorer,
    questions: Sequence[int],
    *,
    options: BayesFlowOptions | None = None,
    seed: int = 0,
    on_round: Callable[[RoundStats], None] | None = None,
) -> SearchResult:
    """Search for a workflow for ``task`` by BayesFlow (Alg. 2): T = ``task.max_steps`` rounds of STEPUPDATE.

    Args:
        task: what the meta-LLM is told about the task.
        meta: the meta-LLM, bound by the caller to a budgeted model call.
        scorer: scores a program on validation questions (positions in the caller's validation set).
        questions: the validation questions.
        options: N, M, K and the rest (the paper's defaults when None).
        seed: seeds every draw the search makes (subsets, the refiner's choice, resampling).
        on_round: called with each round's progress.

    Raises:
        UsageError: no validation questions, or a subset larger than them.
    """
    opts = options or BayesFlowOptions()
    session = SearchSession(
        "bayesflow",
        task,
        meta,
        scorer,
        tuple(questions),
        np.random.default_rng(seed),
        cost_weight=opts.cost_weight,
        cost_scale=opts.cost_scale,
        self_correct=opts.self_correct,
        concurrency=opts.concurrency,
        subset_size=opts.subset_size,
    )
    population = [StepProgram("", ())] * opts.n  # W_0: N empty prefixes
    rounds = []
    for t in range(1, task.max_steps + 1):
        population, stats = await _step_update(session, opts, population, t)
        rounds.append(stats)
        if on_round is not None:
            on_round(stats)
        if session.refusal is not None:
            break
    return session.result(rounds)


async def _step_update(
    s: SearchSession, opts: BayesFlowOptions, population: list[StepProgram], t: int
) -> tuple[list[StepProgram], RoundStats]:
    """Alg. 1: advance the prefixes by one step; returns the new population and the round's progress."""
    n, k, horizon, beta = opts.n, opts.k, s.task.max_steps, opts.beta
    round_questions = s.draw_questions() if opts.paired_subsets else None
    # Drawn here, in order, so that a seed fixes them whatever order the concurrent look-aheads finish in.
    questions = [[round_questions or s.draw_questions() for _ in range(k)] for _ in range(n)]
    extended: list[StepProgram | None] = [None] * n
    rollouts: list[list[ScoredWorkflow | None]] = [[None] * k for _ in range(n)]
    lookahead: list[list[float]] = [[] for _ in range(n)]

    async def complete(i: int, j: int, prefix: StepProgram) -> None:
        program: StepProgram | None = prefix
        if len(prefix.steps) < horizon:
            tag = f"r{t}/complete/{i}.{j}"
            reply = await s.ask(complete_prompt(s.task, prefix.source, len(prefix.steps)), tag)
            program = None if reply is None else join(prefix, reply)
        if program is None:  # no program in the reply: a completion that cannot run scores 0
            lookahead[i].append(0.0)
            return
        tag = f"r{t}/rollout/{i}.{j}"
        rollouts[i][j] = wf = await s.evaluate(program.source, questions[i][j], origin="rollout", round=t, tag=tag)
        lookahead[i].append(wf.reward)

    async def extend(i: int, tg: TaskGroup) -> None:
        prefix = population[i]
        reply = await s.ask(extend_prompt(s.task, prefix.source, len(prefix.steps) + 1), f"r{t}/extend/{i}")
        if reply is None or len(reply.steps) <= len(prefix.steps):
            return  # no new step: this particle carries weight 0
        extended[i] = new = join(prefix, reply).prefix(len(prefix.steps) + 1)
        # a prefix with T steps is its own completion: one score stands for all K
        for j in range(k if len(new.steps) < horizon else 1):
            tg.start_soon(s.guarded, tg.cancel_scope, partial(complete, i, j, new))

    with single_error():  # a failure other than a refusal (a bug, a broken endpoint) surfaces as itself
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(s.guarded, tg.cancel_scope, partial(extend, i, tg))

    scored = [wf for row in rollouts for wf in row if wf is not None]
    pool_index = [s.add(wf) for wf in scored]
    if s.refusal is not None:
        return population, s.stats(t, scored, None, False)
    weights = [
        lookahead_weight(lookahead[i], beta) if extended[i] is not None and lookahead[i] else 0.0 for i in range(n)
    ]
    candidates = [e if e is not None else p for e, p in zip(extended, population, strict=True)]
    try:
        for m in range(opts.m):
            refined = await _refine(s, opts, pool_index, t, m, round_questions)
            if refined is not None:
                scored.append(refined)
                candidates.append(StepProgram.parse(refined.source).prefix(t))
                weights.append(math.exp(beta * refined.reward))
    except CallRefusedError as exc:
        s.refuse(exc)
        return population, s.stats(t, scored, None, False)
    ess = effective_sample_size(weights)
    if sum(weights) > 0 and (opts.ess_threshold is None or ess / n < opts.ess_threshold):
        drawn = resample(weights, n, s.rng, opts.resampling)
        return [candidates[d] for d in drawn], s.stats(t, scored, ess, True)
    # Not redrawn: the N extended prefixes go on (the refined workflows stay in C and the refiner's pool, but do
    # not join the population). The next round weighs by its own look-ahead values, as the paper does every
    # round; strict SMC would divide by the values at the last resampling (the incremental weight V_t / V_s).
    # With beta = 1 the ESS rarely falls below N / 2, so this matters only with a larger beta.
    return candidates[:n], s.stats(t, scored, ess, False)


async def _refine(
    s: SearchSession,
    opts: BayesFlowOptions,
    round_pool: list[int],
    t: int,
    m: int,
    round_questions: tuple[int, ...] | None,
) -> ScoredWorkflow | None:
    """One refinement: choose a parent from the pool, ask for one edit, score it, insert it into the pool."""
    choices = list(range(len(s.pool))) if opts.reuse_rollouts else round_pool
    if not choices:
        return None
    p = refiner_probabilities([s.pool[c].reward for c in choices], opts.top_c, opts.refine_temperature)
    parent = choices[int(s.rng.choice(len(choices), p=p))]
    source, reward = s.pool[parent].source, s.pool[parent].reward
    reply = await s.ask(refine_prompt(s.task, source, reward, failure_lines(s.pool[parent])), f"r{t}/refine/{m}")
    if reply is None:
        return None
    questions = round_questions or s.draw_questions()
    tag = f"r{t}/refined/{m}"
    wf = await s.evaluate(reply.source, questions, origin="refine", round=t, tag=tag, parent=parent)
    round_pool.append(s.add(wf))
    return wf
