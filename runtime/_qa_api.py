"""Search-agent QA from Python: ``answer`` one question, ``evaluate_qa`` a data set over the budget ladder.

Both run the agent of ``runtime._qa`` with a controller by name (:data:`CONTROLLERS`) on the simulated
search-agent model (offline) over a BM25 index of the corpus. Every result is audited: realized tool calls
and output tokens are compared with the caps, and a run over either counts as a cap violation (there are
none by construction; the audit is what proves it).
"""

from __future__ import annotations

import math
import random
import statistics
import time
import uuid
from os import PathLike
from typing import TYPE_CHECKING, Any

import anyio

from runtime._errors import UsageError
from runtime._qa import QAResult, run_agent
from runtime._qa_forms import exact_match, f1
from runtime._sinks import user_sinks

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from adapters.sim_agent import AgentModel
    from planners.qa_base import QAController
    from runtime._events import Event
    from tools.qa_data import Paragraph, QAExample
    from tools.retrieval import SearchTool

__all__ = ["ABLATIONS", "CONTROLLERS", "LADDER", "answer", "bootstrap_mean", "evaluate_qa", "make_controller"]

LADDER = ((1, 100), (2, 200), (2, 300), (3, 500))  # (tool calls, output tokens): low .. high
CONTROLLERS = ("voi", "value-tree", "budget-tracker", "free", "search-then-answer")
ABLATIONS = ("voi-no-penalty", "voi-no-norm", "voi-no-struct", "voi-no-guards")


def make_controller(name: str) -> QAController:
    """A controller by name: one of :data:`CONTROLLERS` or :data:`ABLATIONS`."""
    from planners.qa_baselines import BudgetTracker, FreeRunning, SearchThenAnswer, ValueTree
    from planners.voi import VOIController

    simple: dict[str, Callable[[], QAController]] = {
        "voi": VOIController,
        "value-tree": ValueTree,
        "budget-tracker": BudgetTracker,
        "free": FreeRunning,
        "search-then-answer": SearchThenAnswer,
    }
    if name in simple:
        return simple[name]()
    if name in ABLATIONS:
        return VOIController.without(name.removeprefix("voi-no-"))
    raise UsageError(f"unknown controller {name!r} (known: {', '.join(CONTROLLERS + ABLATIONS)})")


def answer(
    question: str,
    *,
    tool_calls: int = 3,
    tokens: int = 500,
    controller: str | QAController = "voi",
    corpus: Sequence[Paragraph] | str | Path | None = None,
    search: SearchTool | None = None,
    model: AgentModel | None = None,
    examples: Sequence[QAExample] = (),
    finalize: bool = True,
    deadline: float | None = None,
    seed: int = 0,
    backbone: str = "qwen3-32b",
    log: bool | Any = True,
    on_event: Callable[[Event], None] | None = None,
    journal: str | PathLike[str] | None = None,
) -> QAResult:
    """Answer one question within ``tool_calls`` searches and ``tokens`` output tokens.

    Args:
        corpus: paragraphs (or a JSONL corpus file) to build a BM25 index over; or give ``search``.
        model: the agent's model; default: the simulated one (``backbone``, ``seed``), which knows the
            annotations of ``examples`` (questions it has none for are answered generically). Its
            connections are closed when ``answer`` returns.
        finalize: apply the risk-controlled finalizer to the answer.
        deadline: seconds the whole answer may take.
        log, on_event, journal: where the typed events go, as for :func:`runtime.run`.
    """
    from adapters.sim_agent import SimAgentModel
    from tools.qa_data import read_corpus
    from tools.retrieval import BM25Search

    if search is None:
        if corpus is None:
            raise UsageError("give a corpus (paragraphs or a JSONL file) or a search tool")
        paragraphs = read_corpus(corpus) if isinstance(corpus, str | PathLike) else corpus
        search = BM25Search(paragraphs)
    ctl = make_controller(controller) if isinstance(controller, str) else controller
    agent = model or SimAgentModel(examples, backbone, seed)

    sinks, journal_sink = user_sinks(uuid.uuid4().hex[:12], log, on_event, journal)

    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)

    async def go() -> QAResult:
        try:
            return await run_agent(question, model=agent, search=search, controller=ctl, tool_calls=tool_calls,
                                   tokens=tokens, finalize=finalize, deadline_s=deadline, emit=emit)  # fmt: skip
        finally:
            with anyio.CancelScope(shield=True):
                await agent.aclose()

    try:
        return anyio.run(go)
    finally:
        if journal_sink is not None:
            journal_sink.close()


def bootstrap_mean(values: list[float], rng: random.Random, reps: int = 1000) -> tuple[float, float, float]:
    """Mean and a 95% bootstrap interval."""
    if not values:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(values)
    n = len(values)
    boots = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(reps))
    return mean, boots[int(0.025 * reps)], boots[int(0.975 * reps) - 1]


def evaluate_qa(
    examples: Sequence[QAExample],
    *,
    controllers: Sequence[str] = CONTROLLERS,
    ladder: Sequence[tuple[int, int]] = LADDER,
    finalize: Sequence[bool] = (False, True),
    search: SearchTool | None = None,
    backbone: str = "qwen3-32b",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    keep_scores: bool = False,
) -> list[dict[str, Any]]:
    """One row per (budget, controller, finalizer setting): EM, F1 (with 95% intervals), mean tool calls and
    output tokens, cap violations, how often the finalizer replaced the answer and how often that hurt.
    ``keep_scores`` adds each question's scores (``em_scores``, ``f1_scores``) for paired comparisons."""
    from adapters.sim_agent import SimAgentModel
    from tools.qa_data import pool_corpus
    from tools.retrieval import BM25Search

    if not examples:
        raise UsageError("no questions to evaluate")
    index = search or BM25Search(pool_corpus(examples))
    model = SimAgentModel(examples, backbone, seed)
    ctls = [make_controller(c) for c in controllers]
    rows: list[dict[str, Any]] = []

    async def cell(ctl: QAController, tools: int, toks: int, fin: bool) -> dict[str, Any]:
        em, f, calls, used, violations, replaced, harmed = [], [], [], [], 0, 0, 0
        start = time.perf_counter()
        for ex in examples:
            r = await run_agent(ex.question, model=model, search=index, controller=ctl, tool_calls=tools,
                                tokens=toks, finalize=fin)  # fmt: skip
            over = r.tool_calls > tools or r.output_tokens > toks
            violations += over
            score_em = 0.0 if over else exact_match(r.answer, ex.answers)
            em.append(score_em)
            f.append(0.0 if over else f1(r.answer, ex.answers))
            calls.append(r.tool_calls)
            used.append(r.output_tokens)
            if r.finalized:
                replaced += 1
                harmed += f1(r.answer, ex.answers) < f1(r.base_answer, ex.answers)
            if progress is not None:
                progress(1)
        rng = random.Random(f"{seed}:{ctl.name}:{tools}:{toks}:{fin}")
        em_m, em_lo, em_hi = bootstrap_mean(em, rng)
        f1_m, f1_lo, f1_hi = bootstrap_mean(f, rng)
        return {
            "budget": f"({tools},{toks})", "controller": ctl.name, "finalizer": fin, "n": len(examples),
            "em": round(em_m, 4), "em_lo": round(em_lo, 4), "em_hi": round(em_hi, 4),
            "f1": round(f1_m, 4), "f1_lo": round(f1_lo, 4), "f1_hi": round(f1_hi, 4),
            "tool_calls": round(statistics.fmean(calls), 3), "output_tokens": round(statistics.fmean(used), 1),
            "cap_violations": violations, "finalized": replaced, "finalizer_harmed": harmed,
            "seconds": round(time.perf_counter() - start, 2),
        } | ({"em_scores": em, "f1_scores": f} if keep_scores else {})  # fmt: skip

    async def all_cells() -> None:
        for tools, toks in ladder:
            for ctl in ctls:
                for fin in finalize:
                    rows.append(await cell(ctl, tools, toks, fin))

    anyio.run(all_cells)
    return rows
