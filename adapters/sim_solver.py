"""A simulated executor model for the workflow data sets (:mod:`tools.workflowgen`): offline, documented, seeded.

It answers a prompt the way a real model of stated skill would, so that a workflow's score under the real scorers
means something offline. **Its numbers are simulated**: every parameter below says where it comes from, and those
marked *invented* are what a benchmark's sensitivity check should vary: they are the fields of :class:`SolverParams`
(the defaults are the values below), so that a check varies them without touching the code.

**Which problem.** The problem is the one whose ``text`` (stripped) appears in the prompt, the longest if several
do, as a recorded-answers executor finds its question. None: the reply is :data:`NO_ANSWER` (scored 0).

**Difficulty.** Each problem gets a latent difficulty ``d = beta_len * z + sigma_draw * e``: ``z`` is the problem's
log length in characters, standardized with its data set's mean and standard deviation (:data:`LENGTH_STATS`,
measured on AFlow's validation and test splits together: longer problems are harder), and ``e ~ N(0, 1)`` is drawn
once per problem from ``(difficulty_seed, data set, id)``, the same in every run. beta_len = 0.5 is *invented*
(vary it in 0-1). sigma_draw = 2.0 sets how much the samples of one problem agree, and so what voting gains: with
it, three-sample self-consistency gains 2.1 and 3.5 points over one chain of thought on GSM8K and MATH (Claude
3.7, all problems), against 0.8 and 1.8 in the paper's Table 1 (3.4 and 4.5 at sigma_draw = 1; larger values
gain little more agreement and spoil the calibration below). It still overstates voting: vary it in 1-4.

**Success.** A sample of model m on problem p in prompt style s is correct with probability
``sigmoid(skill(m, data set) - d + bonus(s))``, independently given d: samples of one call, and of one problem
across calls, are correlated through d. ``bonus`` sums over the styles the prompt shows (the problem's own text is
ignored when looking): chain of thought b_cot = 0.4 (the median logit gain of CoT over IO in the paper's Table 1
for Claude 3.7 on GSM8K, MATH and DROP: 0.79, 0.12, 0.38; vary it in 0-0.8); asked to verify or double-check its
answer b_check = 0.2 (*invented*); reconsidering after a stated error (a previous answer said to be wrong, a
failing test, a traceback) b_reconsider = 0.3 (*invented*); vary both in 0-0.6. ``skill`` is set so that a
chain-of-thought prompt reaches the model's stated accuracy on the data set on average over the difficulty
distribution (the probit approximation ``E[sigmoid(x - d)] ~ sigmoid(x / sqrt(1 + pi var(d) / 8))``; on the real
splits within 0.035 for every data set and model, mostly the noise of the per-problem draws; a test checks it):
``skill = logit(accuracy) * sqrt(1 + pi (beta_len^2 + sigma_draw^2) / 8) - b_cot``.

**Accuracies** (:data:`MODELS`): per data set, the better of the IO and CoT rows of the BayesFlow paper's Table 1
for its two executors, Claude 3.7 Sonnet and Qwen 2.5-7B-Instruct (their F1 scores taken as the chance of the
right span). MBPP and HumanEval are not in that table: 0.72 / 0.90 (Claude) and 0.55 / 0.75 (Qwen) are *invented*
(the paper reports 75.5-85.0 pass@1 for whole workflows on MBPP with Claude); vary them by +-0.1.

**Replies.** A correct sample returns the gold answer in the data set's format, so the real scorer gives it full
marks: ``Answer: <number>`` (GSM8K), a ``\\boxed{}`` answer (MATH), ``Answer: <span>`` (DROP, HotpotQA),
``Answer: <letter>`` (MMLU-Pro), the reference solution in a ```python block (MBPP, HumanEval; MBPP 630's reference
is broken in the data and fails). A wrong sample returns one of three plausible wrong answers fixed per problem,
picked with weights ``wrong_weights`` = 0.5, 0.3, 0.2 (*invented*: wrong samples often agree, as real models' errors
do; (1, 0, 0) makes every wrong sample agree, uniform weights the least): a perturbed number, a digit changed in a
formula, another span of the passage, another letter, or a stub that returns None (it fails the hidden tests of every
problem in the data). A prompt with a ``Proposed answer: X`` line asks for a verdict: the reply is ``Verdict:
correct`` or ``Verdict: incorrect``, right (the real scorer's verdict on X) with probability
``sigmoid(skill - d + b_judge)``, b_judge = 1.0 (*invented*: checking is easier than solving; vary it in 0-2).
The model ignores temperature (a batch does not carry it).

**Usage and time.** Output tokens are lognormal with a median per data set and style (:data:`MEDIAN_TOKENS`,
*invented*, ``token_sigma`` 0.5); past the batch's ``max_tokens`` the sample is cut off and its answer lost. Input
tokens are the prompt's characters / 4 (at most what was reserved). Latency is the model's time to first token plus
tokens / throughput (*invented*: Claude 1.0 s and 80 tokens/s, Qwen 0.4 s and 120 tokens/s), slept on the run's
clock; a cancelled sample is charged the tokens it had streamed, as :class:`adapters.sim.SimAdapter` charges.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adapters.chat import input_token_bound
from adapters.sim import tokens_at
from runtime.types import Adapter, Finish, SampleEnd, UsageError
from runtime.types.answers import f1
from tools.workflowgen import TASK_KIND, ascore
from tools.workflowgen_scorers import extract_code, math_equal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from runtime.types import Batch, Clock, Message, Report
    from tools.workflowgen import Problem

__all__ = [
    "LENGTH_STATS",
    "MEDIAN_TOKENS",
    "MODELS",
    "NO_ANSWER",
    "Reply",
    "SimSolver",
    "SolverModel",
    "SolverParams",
    "Style",
]

NO_ANSWER = "I cannot answer this."
# (mean, standard deviation) of ln(characters of the problem's text), AFlow's validation and test splits together.
LENGTH_STATS = {"gsm8k": (5.40, 0.39), "math": (5.31, 0.65), "drop": (6.94, 0.44), "hotpotqa": (8.64, 0.25),
                "mbpp": (4.78, 0.30), "humaneval": (5.99, 0.49), "mmlu_pro": (6.21, 0.69)}  # fmt: skip
# Median output tokens of a plain answer and of a chain of thought.
MEDIAN_TOKENS = {"gsm8k": (30, 200), "math": (40, 500), "drop": (20, 120), "hotpotqa": (20, 80),
                 "mbpp": (120, 250), "humaneval": (150, 300), "mmlu_pro": (20, 300)}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class SolverParams:
    """The simulation's parameters; the defaults and their sources are in the module docstring."""

    beta_len: float = 0.5
    sigma_draw: float = 2.0
    b_cot: float = 0.4
    b_check: float = 0.2
    b_reconsider: float = 0.3
    b_judge: float = 1.0
    wrong_weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    token_sigma: float = 0.5

    def __post_init__(self) -> None:
        numbers = (self.beta_len, self.sigma_draw, self.b_cot, self.b_check, self.b_reconsider, self.b_judge)
        weights = self.wrong_weights
        if not all(math.isfinite(x) for x in numbers) or self.sigma_draw < 0 or not 0 <= self.token_sigma < 5:
            raise UsageError(f"solver parameters must be finite, sigma_draw >= 0, token_sigma in [0, 5): {self}")
        if not weights or any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
            raise UsageError(f"wrong_weights must be non-negative with a positive sum, not {weights}")


@dataclass(frozen=True, slots=True)
class SolverModel:
    """A simulated executor: its chain-of-thought accuracy per data set and its speed."""

    name: str
    accuracy: Mapping[str, float]
    ttft_s: float = 0.5
    tokens_per_s: float = 100.0

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.accuracy.items() if k not in LENGTH_STATS or not 0.0 < v < 1.0}
        if bad or self.ttft_s < 0 or self.tokens_per_s <= 0:
            raise UsageError(f"solver model {self.name!r}: accuracies in (0, 1) per known data set, speed > 0 ({bad})")

    def skill(self, dataset: str, params: SolverParams) -> float:
        """The logit skill that gives ``accuracy[dataset]`` under chain of thought (see the module docstring)."""
        if dataset not in self.accuracy:
            raise UsageError(f"solver model {self.name!r} has no accuracy for data set {dataset!r}")
        a = self.accuracy[dataset]
        spread = math.sqrt(1 + math.pi * (params.beta_len**2 + params.sigma_draw**2) / 8)
        return math.log(a / (1 - a)) * spread - params.b_cot


MODELS = {
    m.name: m
    for m in (
        SolverModel("claude-3-7-sonnet", {"gsm8k": 0.952, "math": 0.432, "hotpotqa": 0.574, "drop": 0.815,
                    "mmlu_pro": 0.774, "mbpp": 0.72, "humaneval": 0.90}, ttft_s=1.0, tokens_per_s=80.0),
        SolverModel("qwen2.5-7b-instruct", {"gsm8k": 0.906, "math": 0.176, "hotpotqa": 0.219, "drop": 0.322,
                    "mmlu_pro": 0.539, "mbpp": 0.55, "humaneval": 0.75}, ttft_s=0.4, tokens_per_s=120.0),
    )
}  # fmt: skip

_COT = re.compile(
    r"step[- ]by[- ]step|think (?:it )?through|chain[- ]of[- ]thought|show (?:your|all) (?:work|reasoning)"
    r"|explain your reasoning|reason (?:carefully|first)|let'?s think",
    re.IGNORECASE,
)
_CHECK = re.compile(r"\bverify\b|double[- ]check|check your (?:answer|work|solution)", re.IGNORECASE)
_RECONSIDER = re.compile(
    r"^\s*your previous answer\s*:|\b(?:was|is) (?:wrong|incorrect)\b|traceback \(most recent"
    r"|assertionerror|exec_fail_case|\bfailed (?:test|on)\b|reconsider",
    re.IGNORECASE | re.MULTILINE,
)
_PROPOSED = re.compile(r"^\s*proposed answer\s*:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Style:
    """What a prompt asks for, beyond the problem: its bonus is the sum of the bonuses of its flags."""

    cot: bool = False
    check: bool = False
    reconsider: bool = False

    def bonus(self, params: SolverParams) -> float:
        return params.b_cot * self.cot + params.b_check * self.check + params.b_reconsider * self.reconsider


@dataclass(frozen=True, slots=True)
class Reply:
    """One simulated sample: its text, output tokens and latency; ``correct`` is for tests and reports only."""

    text: str
    output_tokens: int
    latency_s: float
    correct: bool | None = field(default=None, compare=False)
    cut_off: bool = False


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class SimSolver(Adapter):
    """One simulated executor model answering the given problems (see the module docstring).

    Args:
        problems: the problems it can recognize in a prompt (any data sets of :mod:`tools.workflowgen`).
        model: a name in :data:`MODELS` or a :class:`SolverModel`.
        clock: the run's clock.
        seed: the run's seed: with the batch (and sample) it keys each sample's draws.
        difficulty_seed: keys the problems' difficulty draws; keep it fixed across runs that should see the same
            problems (a workflow's validation and test runs).
        params: the simulation's parameters (a sensitivity check varies them).
    """

    def __init__(
        self, problems: Iterable[Problem], model: str | SolverModel, *, clock: Clock, seed: int = 0,
        difficulty_seed: int = 0, params: SolverParams | None = None,
    ) -> None:  # fmt: skip
        if isinstance(model, str):
            if model not in MODELS:
                raise UsageError(f"unknown simulated solver model {model!r}: one of {', '.join(MODELS)}")
            model = MODELS[model]
        self.model = model
        self.clock = clock
        self.seed = seed
        self.difficulty_seed = difficulty_seed
        self.params = params or SolverParams()
        self._problems = sorted({p.text.strip(): p for p in problems if p.text.strip()}.items(),
                                key=lambda kv: -len(kv[0]))  # fmt: skip
        self._wrong: dict[tuple[str, str], tuple[str, ...]] = {}

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        return estimate if messages is None else input_token_bound(messages)

    def find(self, prompt: str) -> Problem | None:
        """The problem whose text the prompt holds (the longest such), or None."""
        return next((p for text, p in self._problems if text in prompt), None)

    def difficulty(self, problem: Problem) -> float:
        """The problem's latent difficulty d (see the module docstring)."""
        mean, sd = LENGTH_STATS[problem.dataset]
        z = (math.log(max(1, len(problem.text))) - mean) / sd
        e = random.Random(f"{self.difficulty_seed}:difficulty:{problem.dataset}:{problem.id}").gauss(0.0, 1.0)
        return self.params.beta_len * z + self.params.sigma_draw * e

    def probability(self, problem: Problem, style: Style) -> float:
        """P(a sample is correct) for this model on ``problem`` in ``style``."""
        return _sigmoid(self._skill(problem) - self.difficulty(problem) + style.bonus(self.params))

    @staticmethod
    def style(prompt: str, problem: Problem | None) -> Style:
        """The styles ``prompt`` shows outside the problem's own text."""
        rest = prompt.replace(problem.text.strip(), " ") if problem is not None else prompt
        return Style(bool(_COT.search(rest)), bool(_CHECK.search(rest)), bool(_RECONSIDER.search(rest)))

    async def replies(self, prompt: str, n: int, *, key: str, max_tokens: int | None = None) -> list[Reply]:
        """n samples for ``prompt``, drawn from ``(seed, key, sample index)``: what a server hook calls."""
        problem = self.find(prompt)
        rngs = [random.Random(f"{self.seed}:{key}:{i}") for i in range(n)]
        if problem is None:
            tokens = max(1, len(NO_ANSWER) // 4)
            return [Reply(NO_ANSWER, tokens, self._latency(tokens), None) for _ in rngs]
        style = self.style(prompt, problem)
        proposed = _PROPOSED.search(prompt.replace(problem.text.strip(), " "))
        if proposed is not None:
            truth = await self._judge_truth(problem, prompt, proposed)
            p = _sigmoid(self._skill(problem) - self.difficulty(problem) + self.params.b_judge)
            out = []
            for rng in rngs:
                right = rng.random() < p
                verdict = "correct" if truth == right else "incorrect"
                tokens = self._tokens(problem, style, rng)
                out.append(Reply(f"{self._lead(style)}\nVerdict: {verdict}", tokens, self._latency(tokens), right))
            return out
        p = self.probability(problem, style)
        out = []
        for rng in rngs:
            correct = rng.random() < p
            text = self._answer(problem) if correct else self._wrong_answer(problem, rng)
            tokens = self._tokens(problem, style, rng)
            cut = max_tokens is not None and tokens > max_tokens
            if max_tokens is not None and tokens > max_tokens:  # cut off before the answer
                text, tokens, correct = self._lead(style), max_tokens, False
            elif TASK_KIND[problem.dataset] != "code":
                text = f"{self._lead(style)}\n{text}"
            out.append(Reply(text, tokens, self._latency(tokens), correct, cut))
        return out

    async def run(self, batch: Batch, report: Report) -> None:
        prompt = "\n\n".join(m.content for m in batch.messages or ())
        input_tokens = min(batch.input_tokens, math.ceil(len(prompt) / 4))
        replies: list[Reply] = []
        pending = list(range(batch.k))
        start = self.clock.now()
        try:
            # a judge of code runs the sandbox here: cancelled meanwhile, the samples have produced nothing
            replies = await self.replies(prompt, batch.k, key=f"{batch.run}:{batch.id}", max_tokens=batch.max_tokens)
            pending.sort(key=lambda i: (replies[i].latency_s, i))
            while pending:
                i = pending[0]
                r = replies[i]
                await self.clock.sleep_until(start + r.latency_s, order=(batch.id, i))
                pending.pop(0)
                finish = Finish.CUT_OFF if r.cut_off else Finish.COMPLETE
                report(SampleEnd(index=i, finish=finish, input_tokens=input_tokens, output_tokens=r.output_tokens,
                                 output=r.text))  # fmt: skip
        finally:  # cancelled: each of the others is charged what it has streamed by now
            elapsed = self.clock.now() - start
            for i in sorted(pending):
                produced = 0
                if replies:
                    r = replies[i]
                    produced = tokens_at(elapsed, r.output_tokens, r.latency_s, self.model.ttft_s)
                report(SampleEnd(index=i, finish=Finish.CANCELLED, input_tokens=input_tokens, output_tokens=produced))

    def _skill(self, problem: Problem) -> float:
        return self.model.skill(problem.dataset, self.params)

    def _lead(self, style: Style) -> str:
        return f"(simulated {self.model.name}{', reasoning step by step' if style.cot else ''})"

    def _tokens(self, problem: Problem, style: Style, rng: random.Random) -> int:
        median = MEDIAN_TOKENS[problem.dataset][1 if style.cot else 0]
        return max(1, round(median * math.exp(self.params.token_sigma * rng.gauss(0.0, 1.0))))

    def _latency(self, tokens: int) -> float:
        return self.model.ttft_s + tokens / self.model.tokens_per_s

    def _answer(self, problem: Problem) -> str:
        return _render(problem, problem.answer.split("|")[0] if problem.dataset == "drop" else problem.answer)

    def _wrong_answer(self, problem: Problem, rng: random.Random) -> str:
        k = (problem.dataset, problem.id)
        if k not in self._wrong:
            self._wrong[k] = _distractors(problem, random.Random(f"{self.difficulty_seed}:wrong:{problem.id}"))
        options = self._wrong[k]
        weights = self.params.wrong_weights[: len(options)]
        if sum(weights) <= 0:  # the weights this problem's fewer distractors keep are all zero
            weights = (1.0,) * len(options)
        return _render(problem, rng.choices(options[: len(weights)], weights=weights)[0])

    async def _judge_truth(self, problem: Problem, prompt: str, proposed: re.Match[str]) -> bool:
        """Whether the proposed answer is right, by the real scorer (code: the block that follows the line)."""
        if TASK_KIND[problem.dataset] == "code":
            answer = extract_code(prompt[proposed.start() :], problem.entry_point)
        else:
            answer = proposed.group(1).strip()
        return await ascore(problem, _render(problem, answer)) >= 0.5


def _render(problem: Problem, answer: str) -> str:
    """An answer in the form the data set's scorer reads."""
    kind = problem.dataset
    if kind == "math":
        return f"The final answer is $\\boxed{{{answer}}}$."
    if TASK_KIND[kind] == "code":
        return f"```python\n{answer}\n```"
    return f"Answer: {answer}"


def _number(text: str) -> float | None:
    """``text`` as a number if it is one ("1,250", "-3.5"), else None."""
    text = text.strip()
    return float(text.replace(",", "")) if re.fullmatch(r"-?(?:\d[\d,]*)?\.?\d+", text) else None


def _numbers_near(value: float, rng: random.Random) -> list[str]:
    """Plausible wrong numbers: off by one, by ten, doubled, halved, a tenth off."""
    near = [value + 1, value - 1, value * 2, value / 2, value + 10, value - 10, value * 1.1]
    rng.shuffle(near)
    out = []
    for x in near:
        s = str(int(x)) if float(x).is_integer() else f"{x:.2f}"
        if _number(s) != value and s not in out:
            out.append(s)
    return out[:3]


def _distractors(problem: Problem, rng: random.Random) -> tuple[str, ...]:
    """Three wrong answers for ``problem``, most plausible first (see the module docstring)."""
    kind, gold = problem.dataset, problem.answer
    if TASK_KIND[kind] == "code":
        return (f"def {problem.entry_point}(*args, **kwargs):\n    return None\n",)
    if kind == "mmlu_pro":
        letters = re.findall(r"^([A-J])\. ", problem.text, re.MULTILINE)
        others = [x for x in letters if x != gold.strip()]
        rng.shuffle(others)
        return tuple(others[:3]) or ("A" if gold != "A" else "B",)
    golds = gold.split("|")
    value = _number(golds[0])
    if value is not None:  # not another of DROP's golds either
        near = [x for x in _numbers_near(value, rng) if kind == "gsm8k" or f1(x, golds) == 0.0]
        return tuple(near) or ("0" if f1("0", golds) == 0.0 else "-1",)
    if kind == "math":
        return _math_distractors(gold, rng)
    return _spans(problem, golds, rng)


def _math_distractors(gold: str, rng: random.Random) -> tuple[str, ...]:
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    out: list[str] = []
    for _ in range(20):
        if digits:
            i = rng.choice(digits)
            cand = gold[:i] + str((int(gold[i]) + rng.randint(1, 9)) % 10) + gold[i + 1 :]
        else:
            cand = rng.choice(["0", "1", "-1", "2", "\\frac{1}{2}"])
        if not math_equal(cand, gold) and cand not in out:
            out.append(cand)
        if len(out) == 3:
            break
    return tuple(out) or ("0" if not math_equal("0", gold) else "1",)


def _spans(problem: Problem, golds: Sequence[str], rng: random.Random) -> tuple[str, ...]:
    """Other spans of the passage: runs of one to three capitalized words or numbers that share no token with
    any gold answer (yes/no questions: the other one)."""
    if golds[0].strip().lower() in ("yes", "no"):
        return ("no" if golds[0].strip().lower() == "yes" else "yes",)
    found = re.findall(r"\b(?:[A-Z][\w'-]+|\d[\d,.]*)(?:\s+(?:[A-Z][\w'-]+|\d[\d,.]*)){0,2}", problem.text)
    seen: list[str] = []
    for s in found:
        if s not in seen and f1(s, golds) == 0.0 and s.lower() not in ("passage", "question", "answer", "context"):
            seen.append(s)
    rng.shuffle(seen)
    return tuple(seen[:3]) or ("unknown",)
