"""Search-agent QA from Python: ``aanswer`` (or ``answer``) one question, ``evaluate_qa`` a data set.

Both run the agent of ``runtime._qa`` on the simulated model over a BM25 index unless given a model and a
search tool. ``evaluate_qa`` audits every result against the caps: a run over either, or stopped because a turn
reported more output than its allowance, counts as a cap violation and scores 0.
"""

from __future__ import annotations

import math
import random
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from os import PathLike
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import anyio

from adapters.replay_agent import ReplayModel
from adapters.sim_agent import DEFAULT_BACKBONE, SimAgentModel
from planners import CONTROLLERS, make_controller
from runtime._api import check_seed, refuse_inside_event_loop
from runtime._qa import QAResult, run_agent
from runtime._sinks import user_sinks
from runtime.types import AgentModel, Clock, QAController, SearchTool, StopReason, UsageError
from runtime.types.answers import exact_match, f1
from tools.qa_data import pool_corpus, read_corpus
from tools.retrieval import BM25Search

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from structlog.typing import FilteringBoundLogger

    from runtime.types import Event
    from tools.qa_data import Paragraph, QAExample

__all__ = ["LADDER", "AnswerOptions", "QACell", "aanswer", "answer", "bootstrap_mean", "evaluate_qa"]

LADDER = ((1, 100), (2, 200), (2, 300), (3, 500))  # (tool calls, output tokens): low .. high


class AnswerOptions(TypedDict, total=False):
    """The keywords of :func:`aanswer` (and :func:`answer`); :func:`aanswer` documents each one."""

    tool_calls: int
    tokens: int
    controller: str | QAController
    corpus: Sequence[Paragraph] | str | Path | None
    search: SearchTool | None
    model: AgentModel | None
    finalize: bool
    deadline: float | None
    clock: Clock | None
    seed: int
    backbone: str
    log: bool | FilteringBoundLogger
    on_event: Callable[[Event], None] | None
    journal: str | PathLike[str] | None


async def aanswer(
    question: str,
    *,
    tool_calls: int = 3,
    tokens: int = 500,
    controller: str | QAController = "voi",
    corpus: Sequence[Paragraph] | str | Path | None = None,
    search: SearchTool | None = None,
    model: AgentModel | None = None,
    finalize: bool = True,
    deadline: float | None = None,
    clock: Clock | None = None,
    seed: int = 0,
    backbone: str = DEFAULT_BACKBONE,
    log: bool | FilteringBoundLogger = False,
    on_event: Callable[[Event], None] | None = None,
    journal: str | PathLike[str] | None = None,
) -> QAResult:
    """Answer one question within ``tool_calls`` searches and ``tokens`` output tokens.

    Args:
        controller: a controller's name (one of ``planners.CONTROLLERS`` or ``planners.ABLATIONS``) or an instance.
        corpus: paragraphs (or a JSONL corpus file) to build a BM25 index over; or give ``search``.
        model: the agent's model; default: the simulated one (``backbone``, ``seed``), which knows only the
            question and what it retrieves. The caller owns a model it passes (and closes it).
        finalize: apply the risk-controlled finalizer to the answer.
        deadline: seconds the whole answer may take, on ``clock`` (default: the real one).
        log, on_event, journal: where the typed events go, as for :func:`runtime.open_run`.

    Raises:
        UsageError: bad input (no corpus, an unknown controller or backbone, an argument of the wrong type).
        LimitError: bad caps or deadline.
    """
    if not isinstance(question, str) or not question.strip():
        raise UsageError(f"question must be a non-empty string, not {question!r}")
    for name, value, kind, want in (
        ("controller", controller, str | QAController, "a controller's name or a runtime.QAController"),
        ("backbone", backbone, str, "a backbone's name"),
        ("corpus", corpus, Sequence | str | PathLike | None, "paragraphs or a JSONL file's path"),
        ("search", search, SearchTool | None, "a runtime.SearchTool"),
        ("model", model, AgentModel | None, "a runtime.AgentModel"),
        ("clock", clock, Clock | None, "a runtime.Clock"),
    ):
        if not isinstance(value, kind):
            raise UsageError(f"{name} must be {want}, not {value!r}")
    check_seed(seed)
    if not isinstance(finalize, bool):
        raise UsageError(f"finalize must be True or False, not {finalize!r}")
    if search is None:
        if corpus is None:
            raise UsageError("give a corpus (paragraphs or a JSONL file) or a search tool")
        search = BM25Search(read_corpus(corpus) if isinstance(corpus, str | PathLike) else corpus)
    ctl = make_controller(controller, seed) if isinstance(controller, str) else controller
    agent = model or SimAgentModel(backbone, seed)
    emit, close_journal = user_sinks(uuid.uuid4().hex[:12], log, on_event, journal)
    try:
        return await run_agent(question, model=agent, search=search, controller=ctl, tool_calls=tool_calls,
                               tokens=tokens, finalize=finalize, deadline_s=deadline, clock=clock,
                               emit=emit)  # fmt: skip
    finally:
        close_journal()


def answer(question: str, **options: Unpack[AnswerOptions]) -> QAResult:
    """Synchronous :func:`aanswer` (same keywords): starts an event loop and answers.

    Raises:
        UsageError: called where an event loop is already running: await :func:`aanswer` there instead.
    """
    refuse_inside_event_loop("runtime.answer()", "await runtime.aanswer(...)")
    unknown = sorted(set(options) - set(AnswerOptions.__annotations__))
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} (options: {', '.join(AnswerOptions.__annotations__)})")
    return anyio.run(partial(aanswer, question, **options))


def bootstrap_mean(values: list[float], rng: random.Random, reps: int = 1000) -> tuple[float, float, float]:
    """Mean and a 95% bootstrap interval."""
    if not values:
        return math.nan, math.nan, math.nan
    boots = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(reps))
    return statistics.fmean(values), boots[int(0.025 * reps)], boots[int(0.975 * reps) - 1]


@dataclass(frozen=True, slots=True)
class QACell:
    """One controller at one budget with the finalizer on or off, over a data set.

    EM and F1 are means with 95% bootstrap intervals; ``tool_calls`` and ``output_tokens`` are means;
    ``cap_violations`` counts runs over either cap (scored 0); ``finalized`` how often the finalizer
    replaced the answer, ``finalizer_harmed`` how often that lowered F1 and ``finalizer_repaired`` how often
    it raised it. ``em_scores`` and ``f1_scores`` hold each question's scores when asked for (paired comparisons).
    """

    budget: str
    controller: str
    finalizer: bool
    n: int
    em: float
    em_lo: float
    em_hi: float
    f1: float
    f1_lo: float
    f1_hi: float
    tool_calls: float
    output_tokens: float
    cap_violations: int
    finalized: int
    finalizer_harmed: int
    finalizer_repaired: int
    seconds: float
    em_scores: list[float] = field(default_factory=list, repr=False)
    f1_scores: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what ``ontime qa-eval --json`` prints), without the per-question scores."""
        d = asdict(self)
        del d["em_scores"], d["f1_scores"]
        return d


def evaluate_qa(
    examples: Sequence[QAExample],
    *,
    controllers: Sequence[str] = tuple(CONTROLLERS),
    ladder: Sequence[tuple[int, int]] = LADDER,
    finalize: Sequence[bool] = (False, True),
    search: SearchTool | None = None,
    model: AgentModel | None = None,
    backbone: str = DEFAULT_BACKBONE,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    keep_scores: bool = False,
    on_result: Callable[[QAExample, QAResult], None] | None = None,
) -> list[QACell]:
    """One cell per (budget, controller, finalizer setting), on ``model`` (default: the simulated one of
    ``backbone`` and ``seed``).

    ``keep_scores`` keeps each question's scores in the cells (``em_scores``, ``f1_scores``); ``on_result`` sees
    every question's result, in cell order (its trace, for calibration or error analysis). A
    :class:`adapters.replay_agent.ReplayModel` must cover every question at every budget; its index must be the
    recording's (the paragraphs of the recorded questions, as ``search`` or ``examples``).

    Raises:
        UsageError: no questions, an unknown controller or backbone, a recording that does not cover the questions
            and budgets (or a turn it never recorded); or called inside a running event loop.
    """
    refuse_inside_event_loop("runtime.evaluate_qa()", "a worker thread (anyio.to_thread.run_sync)")
    if not isinstance(examples, list | tuple) or not examples:
        raise UsageError(f"examples must be a non-empty list of QAExample, not {examples!r}")
    if not (isinstance(controllers, list | tuple) and all(isinstance(c, str) for c in controllers)):
        raise UsageError(f"controllers must be a list of controller names, not {controllers!r}")
    if not (isinstance(ladder, list | tuple) and all(isinstance(r, tuple) and len(r) == 2 for r in ladder)):
        raise UsageError(f"ladder must be a list of (tool calls, tokens) pairs, not {ladder!r}")
    if not (isinstance(finalize, list | tuple) and all(isinstance(f, bool) for f in finalize)):
        raise UsageError(f"finalize must be a list of True/False settings, not {finalize!r}")
    if not isinstance(model, AgentModel | None):
        raise UsageError(f"model must be a runtime.AgentModel, not {model!r}")
    if not isinstance(search, SearchTool | None) or not isinstance(backbone, str):
        raise UsageError(f"search must be a runtime.SearchTool and backbone a name, not {search!r}, {backbone!r}")
    if progress is not None and not callable(progress):
        raise UsageError(f"progress must be a function of the number of questions just done, not {progress!r}")
    if on_result is not None and not callable(on_result):
        raise UsageError(f"on_result must be a function of a question and its result, not {on_result!r}")
    if isinstance(model, ReplayModel):
        model.recording.check_covers([ex.question for ex in examples], ladder)
    index = search or BM25Search(pool_corpus(examples))
    agent = model or SimAgentModel(backbone, seed)
    ctls = [make_controller(c, seed) for c in controllers]

    async def cell(ctl: QAController, tools: int, toks: int, fin: bool) -> QACell:
        em, f, calls, used, violations, replaced, harmed, repaired = [], [], [], [], 0, 0, 0, 0
        start = time.perf_counter()
        for ex in examples:
            r = await run_agent(ex.question, model=agent, search=index, controller=ctl, tool_calls=tools,
                                tokens=toks, finalize=fin)  # fmt: skip
            over = r.tool_calls > tools or r.output_tokens > toks or r.reason is StopReason.OVER_ALLOWANCE
            violations += over
            em.append(0.0 if over else exact_match(r.answer, ex.answers))
            f.append(0.0 if over else f1(r.answer, ex.answers))
            calls.append(r.tool_calls)
            used.append(r.output_tokens)
            replaced += r.finalized
            harmed += r.finalized and f1(r.answer, ex.answers) < f1(r.base_answer, ex.answers)
            repaired += r.finalized and f1(r.answer, ex.answers) > f1(r.base_answer, ex.answers)
            if on_result is not None:
                on_result(ex, r)
            if progress is not None:
                progress(1)
        rng = random.Random(f"{seed}:{ctl.name}:{tools}:{toks}:{fin}")
        em_m, em_lo, em_hi = (round(x, 4) for x in bootstrap_mean(em, rng))
        f1_m, f1_lo, f1_hi = (round(x, 4) for x in bootstrap_mean(f, rng))
        return QACell(
            budget=f"({tools},{toks})", controller=ctl.name, finalizer=fin, n=len(examples),
            em=em_m, em_lo=em_lo, em_hi=em_hi, f1=f1_m, f1_lo=f1_lo, f1_hi=f1_hi,
            tool_calls=round(statistics.fmean(calls), 3), output_tokens=round(statistics.fmean(used), 1),
            cap_violations=violations, finalized=replaced, finalizer_harmed=harmed, finalizer_repaired=repaired,
            seconds=round(time.perf_counter() - start, 2),
            em_scores=em if keep_scores else [], f1_scores=f if keep_scores else [],
        )  # fmt: skip

    async def all_cells() -> list[QACell]:
        return [await cell(ctl, tools, toks, fin) for tools, toks in ladder for ctl in ctls for fin in finalize]

    return anyio.run(all_cells)
