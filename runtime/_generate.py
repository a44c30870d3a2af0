"""Generate a workflow for a task (BayesFlow, AFlow-style MCTS or random search) under one budget and deadline.

The search is itself a program run by ontime: its meta-LLM calls and the calls of every workflow it evaluates
(model-written code, run in the sandbox, its ``call_llm`` crossing the channel to this run) are batches of one
run, so one ledger bounds the optimizer's whole spend and one clock its time; the journal records all of it. A
refused call ends the search with the best workflow found so far.

Tasks (``--task``): ``exam:<name>`` (one of the recorded exams: every model's answer is what that real model
answered, :mod:`adapters.recorded_answers`) and the paper's data sets ``gsm8k``, ``math``, ``drop``, ``hotpotqa``,
``mbpp``, ``humaneval``, ``mmlu_pro`` (offline: the *simulated* executor :mod:`adapters.sim_solver`). Validation and
test are split 1:4 as the paper does; a search sees only validation.
"""

from __future__ import annotations

import ast
import math
import pprint
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from planners.bayesflow import BayesFlowOptions, bayesflow
from planners.bayesflow_prompts import TaskSpec
from planners.workflow_code import StepProgram
from planners.workflow_search import AFlowOptions, aflow_search, random_search
from planners.workflow_search_types import RoundStats, Score, SearchResult
from runtime._program import Program, current_run
from runtime.types import CallRefusedError, CallResult, LLMCall, RealClock, UsageError, VirtualClock, to_usd

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from adapters.recorded_answers import AnswerBook
    from runtime._program_run import ProgramRun
    from runtime._result import RunResult
    from runtime.types import Adapter, Clock

__all__ = ["META_MODEL", "METHODS", "GenerationResult", "GenerationTask", "Item", "MetaUsage", "evaluate_source",
           "generate", "load_task", "program_file"]  # fmt: skip

Method = Literal["bayesflow", "aflow", "random"]
METHODS: tuple[Method, ...] = ("bayesflow", "aflow", "random")
META_MODEL = "meta"  # the meta-LLM's name among the optimizer run's models
META_PRICE_ID = ("anthropic", "claude-3-5-sonnet")  # the paper's optimizer: the simulated meta-LLM is priced as it
META_MAX_TOKENS = 4096
# The simulated executors' list prices (genai-prices): the paper's two executor models.
SOLVER_PRICE_IDS = {"claude-3-7-sonnet": ("anthropic", "claude-3-7-sonnet"),
                    "qwen2.5-7b-instruct": ("openrouter", "qwen/qwen-2.5-7b-instruct")}  # fmt: skip
ANSWER_FORMAT = {
    "gsm8k": "The workflow's answer must end with 'Answer: <number>'.",
    "math": "The workflow's answer must give the final answer in \\boxed{...}.",
    "drop": "The workflow's answer must end with 'Answer: <short answer>'.",
    "hotpotqa": "The workflow's answer must end with 'Answer: <short answer>'.",
    "mmlu_pro": "The problem is a question with lettered choices; the answer must end with 'Answer: <letter>'.",
    "mbpp": "The workflow's answer is the Python function the problem asks for, in a ```python block.",
    "humaneval": "The workflow's answer is the Python function the problem asks for, in a ```python block.",
}


@dataclass(frozen=True, slots=True)
class Item:
    """One problem of a task: the workflow's input, how its answer is graded (never shown to the search), and the
    public tests ``exec_code`` defaults to (code tasks)."""

    text: str
    grade: Callable[[str], Awaitable[float]] = field(repr=False)
    tests: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationTask:
    """A task to generate a workflow for.

    Attributes:
        name: as ``--task`` names it.
        spec: what the meta-LLM is told (kind, description, models and prices, default model, T).
        validation: what the search scores workflows on.
        test: held out: what a generated workflow is reported on.
        models: the executor models as a program's ``MODELS`` block (simulated: served by ``adapters``).
        adapters: builds, on the run's clock, the adapter of every model of ``models`` (and nothing else).
        served: the same models as a ``MODELS`` block of endpoints at a base URL (a serve-sim that answers as
            ``adapters`` do): what a written program runs on outside this process.
        deterministic: the executor answers a repeated prompt the same way, so a workflow's score on the same
            questions may be reused rather than bought again.
        simulated_executor: the executor's answers are simulated, not recorded: numbers must say so.
        endpoints: the executors are real endpoints (``models`` is theirs; ``adapters`` gives none).
    """

    name: str
    spec: TaskSpec
    validation: tuple[Item, ...]
    test: tuple[Item, ...]
    models: Mapping[str, Mapping[str, Any]]
    adapters: Callable[[Clock], Mapping[str, Adapter]] = field(repr=False)
    served: Callable[[str], Mapping[str, Mapping[str, Any]]] = field(repr=False)
    deterministic: bool = False
    simulated_executor: bool = False
    endpoints: bool = False


@dataclass(slots=True)
class MetaUsage:
    """What the meta-LLM's calls used (the rest of the optimizer's spend is validation runs)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_pusd: int = 0


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """A finished search: what it found, and what the optimizer's run spent (``run.cost``, ``run.elapsed``), of
    which ``meta`` went to the meta-LLM."""

    search: SearchResult
    run: RunResult
    task: GenerationTask
    meta: MetaUsage

    @property
    def best(self) -> str | None:
        return None if self.search.best is None else self.search.best.source


def _recorded(book: AnswerBook, p_flip: float | None, seed: int, clock: Clock) -> Mapping[str, Adapter]:
    """The recorded answers on ``clock``; on the real clock (a real meta-LLM) they come at once: their recorded
    latency would only slow the search."""
    from adapters.recorded_answers import recorded_adapters

    if isinstance(clock, VirtualClock):
        return recorded_adapters(book, clock, p_flip=p_flip, seed=seed)
    return recorded_adapters(book, clock, p_flip=p_flip, seed=seed, ttft_s=0.0, tokens_per_s=1e9)


def _exam_task(exam: str, data_dir: str | Path | None, seed: int, p_flip: float | None) -> GenerationTask:
    from adapters.recorded_answers import AnswerBook
    from tools import exams

    tasks = {t.exam: t for t in exams.load_tasks(exams.find_data_dir(data_dir))}
    if exam not in tasks:
        raise UsageError(f"no exam {exam!r} in the data (exams: {', '.join(tasks)})")
    task = tasks[exam]
    validation, test = task.split(seed)
    book = AnswerBook.of(task)

    def item(q: exams.ExamQuestion) -> Item:
        async def grade(output: str) -> float:
            return exams.score(output, q)

        return Item(exams.render(q), grade)

    default = min(task.models, key=lambda m: sum(task.prices[m]))  # the cheapest: the search decides what to buy
    spec = TaskSpec(
        "exam",
        f"Multiple-choice questions of the {exam} exam: the problem is a question with lettered choices; the "
        "workflow's answer must end with 'Answer: <letter>'. Every model answers a question the same way each "
        "time it is asked; a model asked to reconsider with a line 'Your previous answer: X' may revise; a model "
        "shown a line 'Proposed answer: X' and asked whether it is right replies 'Verdict: correct' or "
        "'Verdict: incorrect'.",
        dict(task.prices),
        default,
    )
    return GenerationTask(
        f"exam:{exam}",
        spec,
        tuple(item(q) for q in validation),
        tuple(item(q) for q in test),
        task.models_block(),
        partial(_recorded, book, p_flip, seed),
        lambda url: task.models_block(base_url=url),
        deterministic=True,
    )


def _dataset_task(name: str, data_dir: str | Path | None, seed: int) -> GenerationTask:
    import numpy as np

    from adapters.pricing import list_price
    from adapters.sim_solver import MODELS as SOLVERS
    from adapters.sim_solver import SimSolver
    from tools import workflowgen

    folder = Path(data_dir) if data_dir is not None else workflowgen.EXAMPLES
    validation = workflowgen.load_dataset(name, folder, "validate")
    try:
        test = workflowgen.load_dataset(name, folder, "test")
    except UsageError:  # HotpotQA has only its validation split: split it 1:4 as the paper does
        order = np.random.default_rng(seed).permutation(len(validation))
        cut = max(1, round(len(validation) / 5))
        validation, test = [validation[i] for i in order[:cut]], [validation[i] for i in order[cut:]]
    problems = [*validation, *test]
    kind = workflowgen.TASK_KIND[name]

    def item(p: workflowgen.Problem) -> Item:
        async def grade(output: str) -> float:
            return await workflowgen.ascore(p, output)

        return Item(p.text, grade, p.public_tests)

    prices = {m: list_price(*ref) for m, ref in SOLVER_PRICE_IDS.items()}
    models = {
        m: {
            "provider": "sim",
            "input_price_per_mtok": i,
            "output_price_per_mtok": o,
            "max_output_tokens": 2048,
            "ttft_s": SOLVERS[m].ttft_s,
            "tokens_per_s": SOLVERS[m].tokens_per_s,
        }
        for m, (i, o) in prices.items()
    }
    spec = TaskSpec(
        kind,  # type: ignore[arg-type]
        f"Problems of the {name} data set (AFlow's split). {ANSWER_FORMAT[name]}",
        prices,
        min(prices, key=lambda m: sum(prices[m])),
        helpers=("call_llm", "exec_code") if kind == "code" else ("call_llm",),
    )
    return GenerationTask(
        name,
        spec,
        tuple(item(p) for p in validation),
        tuple(item(p) for p in test),
        models,
        lambda clock: {m: SimSolver(problems, m, clock=clock, seed=seed) for m in prices},
        lambda url: {
            m: {**entry, "provider": "openai", "model": m, "base_url": url, "api_key": "serve-sim"}
            for m, entry in models.items()
        },
        simulated_executor=True,
    )


def load_task(
    name: str,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    p_flip: float | None = None,
    executors: Mapping[str, Any] | None = None,
) -> GenerationTask:
    """The task ``name`` names (see the module docstring), split 1:4 by ``seed``.

    Args:
        p_flip: exam tasks: the chance that a model asked to reconsider its right answer changes it (default:
            each model's measured change rate; see :mod:`adapters.recorded_answers`).
        executors: the models a workflow may call, as a spec's ``"models"`` block of real endpoints, instead of
            the recorded or simulated ones: the same problems, graded the same way, answered by those models.

    Raises:
        UsageError: an unknown task, or its data is missing or malformed.
    """
    from tools.workflowgen import DATASETS

    if name.startswith("exam:"):
        task = _exam_task(name.removeprefix("exam:"), data_dir, seed, p_flip)
    elif name in DATASETS:
        task = _dataset_task(name, data_dir, seed)
    else:
        raise UsageError(f"unknown task {name!r}: exam:<exam> or one of {', '.join(DATASETS)}")
    if executors is None:
        return task
    from runtime._program import parse_models

    parsed = parse_models(executors, "executors")
    simulated = [m for m, spec in parsed.items() if spec.endpoint is None]
    if simulated or not parsed:
        raise UsageError(f"executors must be endpoints (openai or anthropic), not {simulated or 'none'}")
    prices = {m: (spec.input_price_per_mtok, spec.output_price_per_mtok) for m, spec in parsed.items()}
    default = min(prices, key=lambda m: sum(prices[m]))
    spec = replace(task.spec, models=prices, default_model=default)
    return replace(task, spec=spec, models=dict(executors), adapters=lambda clock: {},
                   served=lambda url: dict(executors), deterministic=False, simulated_executor=False,
                   endpoints=True)  # fmt: skip


class _SandboxScorer:
    """Scores model-written workflows on validation problems: each runs in the sandbox, its calls charged to the
    optimizer's run; its own spend per problem is recorded for the cost-aware reward."""

    def __init__(self, run: ProgramRun, items: Sequence[Item], *, reuse: bool) -> None:
        self.run, self.items, self.reuse = run, items, reuse
        self.seen: dict[tuple[str, tuple[int, ...]], Score] = {}

    async def score(self, source: str, questions: Sequence[int]) -> Score:
        key = (source, tuple(questions))
        if self.reuse and key in self.seen:
            return self.seen[key]
        items = [self.items[q] for q in questions]
        score = await evaluate_source(self.run, source, items)
        self.seen[key] = score
        return score


async def evaluate_source(run: ProgramRun, source: str, items: Sequence[Item]) -> Score:
    """Run ``source`` on every item in the sandbox through ``run`` and grade its answers.

    A problem the program fails on scores 0 and the first failure is the score's ``error`` (what self-correction
    reads). Raises the :class:`CallRefusedError` of ``run``'s own ledger or clock (the caller's budget or deadline
    is spent), never a refusal the program's own allowance caused.
    """
    spent = [0] * len(items)
    refused: list[CallRefusedError] = []

    def account(i: int, call: CallResult | CallRefusedError) -> None:
        if isinstance(call, CallRefusedError):  # with wait=True, only this run's own budget or deadline refuses
            refused.append(call)
        else:
            spent[i] += call.cost_pusd

    outcomes = await run.run_source(source, [it.text for it in items], tests=[it.tests for it in items], wait=True,
                                    on_call=account)  # fmt: skip
    if refused:
        raise refused[0]
    scores = [0.0 if o.value is None else await it.grade(o.value) for o, it in zip(outcomes, items, strict=True)]
    error = next((o.error for o in outcomes if o.error is not None), None)
    if error is not None:  # what self-correction shows the meta-LLM: never a problem of the task
        for it in items:
            error = error.replace(it.text, "<the problem>")
    cost = to_usd(sum(spent)) / max(1, len(items))
    return Score(math.fsum(scores) / max(1, len(scores)), tuple(scores), cost, error)


async def _search(
    task: GenerationTask,
    method: Method,
    seed: int,
    options: BayesFlowOptions | AFlowOptions | int | None,
    on_round: Callable[[RoundStats], None] | None,
    usage: MetaUsage,
) -> SearchResult:
    run = current_run()
    temperature = 1.0 if method == "random" else 0.0  # the paper's meta-LLM runs at 0; random search samples

    async def meta(system: str, prompt: str, tag: str) -> str:
        request = LLMCall(messages=(prompt,), model=META_MODEL, instructions=system, tag=tag,
                          temperature=temperature, max_tokens=META_MAX_TOKENS)  # fmt: skip
        result = await run.call(request, wait=True)
        usage.calls += 1
        usage.input_tokens += result.input_tokens
        usage.output_tokens += result.output_tokens
        usage.cost_pusd += result.cost_pusd
        return result.outputs[0]

    scorer = _SandboxScorer(run, task.validation, reuse=task.deterministic)
    questions = range(len(task.validation))
    if method == "bayesflow":
        opts = options if isinstance(options, BayesFlowOptions) else None
        return await bayesflow(task.spec, meta, scorer, questions, options=opts, seed=seed, on_round=on_round)
    if method == "aflow":
        aopts = options if isinstance(options, AFlowOptions) else None
        return await aflow_search(task.spec, meta, scorer, questions, options=aopts, seed=seed, on_round=on_round)
    samples = options if isinstance(options, int) else 20
    return await random_search(task.spec, meta, scorer, questions, samples=samples, seed=seed, on_round=on_round)


async def generate(
    task: GenerationTask,
    budget: float,
    deadline: float,
    *,
    method: Method = "bayesflow",
    options: BayesFlowOptions | AFlowOptions | int | None = None,
    seed: int = 0,
    journal: str | Path | None = None,
    on_round: Callable[[RoundStats], None] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> GenerationResult:
    """Search for a workflow for ``task`` within ``budget`` US dollars and ``deadline`` seconds (the optimizer's
    own spend: meta-LLM calls and validation runs).

    Args:
        options: :class:`BayesFlowOptions` (bayesflow), :class:`AFlowOptions` (aflow), or the number of
            workflows random search writes.
        meta: the meta-LLM as a spec's model entry (an OpenAI or Anthropic endpoint, with its prices); None for
            the simulated meta-LLM (:mod:`adapters.sim_meta_llm`, priced as the paper's Claude 3.5 Sonnet) in
            virtual time. With an endpoint the search runs on the real clock.

    Raises:
        UsageError: an unknown method or bad limits.
    """
    import runtime
    from adapters.pricing import list_price
    from adapters.sim_meta_llm import SimMetaLLM

    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: one of {', '.join(METHODS)}")
    # Endpoints answer in wall time; the simulated parts then answer at once rather than make the search wait.
    clock: Clock = VirtualClock() if meta is None and not task.endpoints else RealClock()
    adapters = dict(task.adapters(clock))
    if meta is None:
        inp, out = list_price(*META_PRICE_ID)
        meta = {"provider": "sim", "input_price_per_mtok": inp, "output_price_per_mtok": out,
                "max_output_tokens": META_MAX_TOKENS, "ttft_s": 1.0, "tokens_per_s": 60.0}  # fmt: skip
        wall = isinstance(clock, RealClock)
        adapters[META_MODEL] = SimMetaLLM(clock, seed, ttft_s=0.0 if wall else 1.0, tokens_per_s=1e9 if wall else 60.0)
    models = {**task.models, META_MODEL: meta}
    found: list[SearchResult] = []
    usage = MetaUsage()

    async def optimizer(problem: str) -> str:
        found.append(await _search(task, method, seed, options, on_round, usage))
        return found[0].best.source if found[0].best is not None else ""

    program = Program(optimizer, name=f"{method}:{task.name}", models=models, default_model=task.spec.default_model)
    result = await runtime.arun(program, budget, deadline, input=task.name, adapters=adapters, clock=clock,
                                seed=seed, journal=journal)  # fmt: skip
    if not found:  # the run ended before the search returned (the deadline): nothing scored survives
        found.append(SearchResult(method, None, (), (), 0, "past_deadline"))
    return GenerationResult(found[0], result, task, usage)


def program_file(
    source: str, task: GenerationTask, *, models: Mapping[str, Any] | None = None, method: str = "bayesflow"
) -> str:
    """``source`` as a runnable program file: a docstring naming the task and the method, its ``MODELS`` (the
    task's, or those given: e.g. the same models behind an endpoint), ``DEFAULT_MODEL`` and an ``EXAMPLE`` input
    (a validation problem), each unless the program assigns it itself."""
    program = StepProgram.parse(source)
    own = {t.id for node in ast.parse(program.source).body if isinstance(node, ast.Assign) for t in node.targets
           if isinstance(t, ast.Name)}  # fmt: skip
    values = {"MODELS": pprint.pformat(dict(models or task.models), width=100, sort_dicts=False),
              "DEFAULT_MODEL": repr(task.spec.default_model), "EXAMPLE": repr(task.validation[0].text)}  # fmt: skip
    header = [f'"""A workflow for {task.name}, generated by ontime ({method})."""', ""]
    header += [f"{name} = {value}" for name, value in values.items() if name not in own]
    return "\n".join(header) + "\n\n" + program.source.lstrip("\n")
