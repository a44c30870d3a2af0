"""``ontime bench bayesflow``: generated workflows against fixed prompts and other searches, on real recorded answers.

Every exam of a folder laid out like shared/data/reflection is split 1:4 into validation and test per seed (the
BayesFlow paper's protocol). Workflows call the 9 real models of the data; what a model answers is what it really
answered (:mod:`adapters.recorded_answers`), at its real token counts and list prices, so every score below is real
model behaviour. What is assumed is stated in that module: repeat samples give the one recorded answer; a model
asked to reconsider a right answer drops it at its own measured change rate (``--p-flip`` replaces that rate, a
sensitivity: 0 keeps every right answer, which leans on the answer key); verdicts agree with the judge's own answer.

Methods: ``io``, ``cot`` and ``cot-sc`` (3 samples, majority) are the paper's fixed prompts on one executor model
(``--executor``, default GPT-3.5 Turbo). On recorded answers the three coincide by construction (a recorded answer
does not depend on the prompt, and a model's repeats are its one answer; CoT-SC pays three times): they are kept
because the interface names them. ``best-model`` is CoT on the model with the best validation score (no search: the
reference any search must beat). ``bayesflow`` (Alg. 1-2, App. E defaults N = M = 10, K = 1, T = 5), ``aflow``
(AFlow-style MCTS, 20 iterations or convergence) and ``random`` (20 complete workflows from the prior, the best on
validation) search with the simulated meta-LLM under the same optimizer budget and deadline per exam and seed;
``aflow-matched`` and ``random-matched`` run until the budget refuses them, as BayesFlow does, so that every
search spends the same. ``--ablations`` adds BayesFlow with each addition beyond the paper.

Columns: test score (mean over the exam's test questions), the workflow's own cost per question, the optimizer's
spend (meta-LLM and validation runs), its meta-LLM input tokens, the rounds that scored anything and the workflows
scored. The comparisons are paired: per (exam, seed), BayesFlow's test score minus the other method's, with a 95%
t-interval over the 8 exams (each exam's mean over its seeds one observation).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

import runtime
from benchmarks._report import RESULTS, console, machine, parser, rows_table, write_csv
from planners.bayesflow import BayesFlowOptions
from planners.workflow_search import AFlowOptions
from runtime._generate import GenerationTask, Item, evaluate_source, generate, load_task
from runtime.types import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ABLATIONS", "BASELINES", "MATCHED", "METHODS", "main", "run_cell"]

METHODS = ("bayesflow", "aflow", "io", "cot", "cot-sc", "random")  # the interface's (--json's default)
SEARCHES = ("bayesflow", "aflow", "random")
EXECUTOR = "gpt-35-turbo"
BUDGET = 10.0  # optimizer dollars per exam and seed: the same for every search
DEADLINE = 24 * 3600.0  # optimizer seconds (virtual): loose; the budget is what binds
TEST_BUDGET = 1000.0  # the test run's budget: never binds, it measures
# AFlow and random search stopped by the budget rather than by their iteration counts: the same spend as BayesFlow.
MATCHED: dict[str, tuple[str, AFlowOptions | int]] = {
    "aflow-matched": ("aflow", AFlowOptions(iterations=1000, patience=1000)),
    "random-matched": ("random", 200),
}
ABLATIONS: dict[str, BayesFlowOptions] = {
    "bf-beta5": BayesFlowOptions(beta=5.0),
    "bf-ess": BayesFlowOptions(beta=5.0, ess_threshold=0.5),
    "bf-reuse": BayesFlowOptions(reuse_rollouts=True),
    "bf-paired10": BayesFlowOptions(subset_size=10, paired_subsets=True),
    "bf-unpaired10": BayesFlowOptions(subset_size=10, paired_subsets=False),
    "bf-cost": BayesFlowOptions(cost_weight=0.5),
}

_ANSWER = "Think step by step, then end with a line 'Answer: <letter>'."
BASELINES = {
    # The ADAS prompts the paper uses, as step-annotated programs on one executor model.
    "io": """async def workflow(problem: str) -> str:
    # Step 1: Answer directly
    replies = await call_llm([f"{problem}\\n\\nReply with the letter of the correct choice as 'Answer: <letter>'."],
                             temperature=0.0, num_of_response=1, agent_role="helpful assistant", model=MODEL)
    return replies[0]
""",
    "cot": f"""async def workflow(problem: str) -> str:
    # Step 1: Reason step by step, then answer
    replies = await call_llm([f"{{problem}}\\n\\n{_ANSWER}"], temperature=0.0, num_of_response=1,
                             agent_role="helpful assistant", model=MODEL)
    return replies[0]
""",
    "cot-sc": f"""import collections
import re


async def workflow(problem: str) -> str:
    # Step 1: Three chains of thought
    replies = await call_llm([f"{{problem}}\\n\\n{_ANSWER}"], temperature=0.8, num_of_response=3,
                             agent_role="helpful assistant", model=MODEL)
    # Step 2: Majority vote over their letters (the first answer breaks a tie)
    letters = [m.group(1) for r in replies if (m := re.search(r"Answer:\\s*([A-E])", r))]
    if not letters:
        return replies[0]
    return "Answer: " + collections.Counter(letters).most_common(1)[0][0]
""",
}


def _fixed(name: str, model: str) -> str:
    return BASELINES[name].replace("model=MODEL", f"model={model!r}")


async def _test(task: GenerationTask, source: str, items: Sequence[Item], seed: int) -> tuple[float, float]:
    """(mean score, cost per question) of ``source`` on ``items``, run in the sandbox under its own run."""
    out: list[tuple[float, float]] = []

    async def evaluate(problem: str) -> str:
        score = await evaluate_source(runtime.current_run(), source, items)
        out.append((score.value, score.cost_usd))
        return ""

    clock = runtime.VirtualClock()
    program = runtime.Program(evaluate, models=task.models, default_model=task.spec.default_model)
    result = await runtime.arun(program, TEST_BUDGET, DEADLINE, input="test", adapters=task.adapters(clock),
                                clock=clock, seed=seed)  # fmt: skip
    if not out:
        raise UsageError(f"the test run of {task.name} ended without a score: {result.reason} {result.detail}")
    return out[0]


def run_cell(args: tuple[str, str | None, int, str, float, float, str]) -> list[dict[str, Any]]:
    """One (exam, seed, method): its rows (a process pool maps this)."""
    exam, data, seed, method, budget, p_flip, executor = args
    task = load_task(f"exam:{exam}", data_dir=data, seed=seed, p_flip=p_flip)
    started = time.perf_counter()
    row: dict[str, Any] = {"exam": exam, "method": method, "seed": seed}
    if method in BASELINES:
        source, opt_cost, meta_in, stop, val, rounds, pool = _fixed(method, executor), 0.0, 0, "fixed", math.nan, 0, 0
    elif method == "best-model":  # CoT on the model with the best validation score (ties: the cheaper); no search
        scored = []
        for m in task.models:
            val_score, cost = anyio.run(_test, task, _fixed("cot", m), task.validation, seed)
            scored.append((-val_score, cost, m))
        _, _, model = min(scored)
        opt_cost = math.fsum(cost for _, cost, _ in scored) * len(task.validation)  # the validation runs it paid
        source, meta_in, stop, val, rounds, pool = _fixed("cot", model), 0, model, -min(scored)[0], 0, len(scored)
    else:
        search, options = MATCHED.get(method, (method if method in SEARCHES else "bayesflow", ABLATIONS.get(method)))
        result = anyio.run(lambda: generate(task, budget, DEADLINE, method=search, options=options, seed=seed))  # type: ignore[arg-type]
        best = result.search.best
        source = best.source if best is not None else _fixed("io", task.spec.default_model)
        opt_cost, stop = result.run.cost, result.search.stop
        meta_in = result.meta.input_tokens
        val = best.score.value if best is not None else math.nan
        rounds = sum(1 for r in result.search.rounds if r.scored)  # rounds (iterations) that scored anything
        pool = len(result.search.pool)
    test_score, test_cost = anyio.run(_test, task, source, task.test, seed)
    row |= {"test_score": round(test_score, 4), "validation_score": round(val, 4) if not math.isnan(val) else None,
            "cost_per_question_usd": round(test_cost, 6), "optimizer_cost_usd": round(opt_cost, 4),
            "meta_input_tokens": meta_in, "rounds": rounds, "workflows_scored": pool, "stop": stop,
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    return [row]


def _summary(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    mine = [r for r in rows if r["method"] == method]

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in mine)

    return {"method": method, "cells": len(mine), "test_score": round(mean("test_score"), 4),
            "cost_per_question_usd": round(mean("cost_per_question_usd"), 6),
            "optimizer_cost_usd": round(mean("optimizer_cost_usd"), 3),
            "meta_input_tokens": round(mean("meta_input_tokens")), "rounds": round(mean("rounds"), 1),
            "workflows_scored": round(mean("workflows_scored"), 1)}  # fmt: skip


def _paired(rows: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """``a`` minus ``b`` in test score: the mean over (exam, seed) cells, with a 95% t-interval over exams (each
    exam's mean over its seeds is one observation: seeds of one exam share its questions, so they are not
    independent)."""
    from scipy.stats import t

    by = {(r["exam"], r["seed"], r["method"]): r["test_score"] for r in rows}
    per_exam: dict[str, list[float]] = {}
    for e, s, m in by:
        if m == a and (e, s, b) in by:
            per_exam.setdefault(e, []).append(by[(e, s, a)] - by[(e, s, b)])
    means = [statistics.fmean(d) for d in per_exam.values()]
    n = len(means)
    mean = statistics.fmean(means) if means else math.nan
    half = float(t.ppf(0.975, n - 1)) * statistics.stdev(means) / math.sqrt(n) if n > 1 else math.nan
    return {"a": a, "b": b, "exams": n, "cells": sum(map(len, per_exam.values())), "mean_diff": round(mean, 4),
            "ci95_lo": round(mean - half, 4), "ci95_hi": round(mean + half, 4)}  # fmt: skip


def _markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]], pairs: list[dict[str, Any]],
              methods: Sequence[str], path: Path, args: Any) -> None:  # fmt: skip
    """The tables as markdown (README quotes them): the summary, the paired differences and each exam's scores."""

    def table(rs: list[dict[str, Any]]) -> list[str]:
        head = list(rs[0])
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
            "| " + " | ".join(str(r[k]) for k in head) + " |" for r in rs
        ]

    exams = sorted({r["exam"] for r in rows})
    per_exam = [{"exam": e} | {m: round(100 * statistics.fmean(r["test_score"] for r in rows
                                                                 if r["exam"] == e and r["method"] == m), 1)
                               for m in methods} for e in exams]  # fmt: skip
    flip = "each model's measured change rate" if args.p_flip is None else f"{args.p_flip:g}"
    lines = [f"Recorded answers of 9 real LLMs, {len(exams)} exams x {args.seeds} seeds, optimizer budget "
             f"${args.budget:g} per exam and seed, p_flip = {flip}; {machine()}.", "",
             *table(summary), "", "Paired, bayesflow minus each (t-interval over exams):", "", *table(pairs), "",
             "Test score (%) per exam, mean over seeds:", "", *table(per_exam), ""]  # fmt: skip
    path.write_text("\n".join(lines), encoding="utf-8")


def _plot(rows: list[dict[str, Any]], methods: Sequence[str], path: Path) -> None:
    """Each exam's test score per method (left), and each method's mean test score against what its workflows
    cost per question (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exams = sorted({r["exam"] for r in rows})
    cmap = plt.get_cmap("tab20")
    colors = [cmap(i) for i in range(20)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 5.5), gridspec_kw={"width_ratios": [3, 1.2]})
    width = 0.8 / len(methods)

    def mean(m: str, key: str, exam: str | None = None) -> float:
        got = [r[key] for r in rows if r["method"] == m and exam in (None, r["exam"])]
        return statistics.fmean(got) if got else math.nan

    for j, m in enumerate(methods):
        color = colors[j % len(colors)]
        left.bar([i + j * width for i in range(len(exams))], [mean(m, "test_score", e) for e in exams], width,
                 label=m, color=color)  # fmt: skip
        right.scatter(mean(m, "cost_per_question_usd"), mean(m, "test_score"), color=color, s=40)
        right.annotate(m, (mean(m, "cost_per_question_usd"), mean(m, "test_score")), fontsize=7,
                       xytext=(3, 3), textcoords="offset points")  # fmt: skip
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(exams))], [e.removesuffix("-100") for e in exams])
    left.set_ylabel("test score (recorded answers of real LLMs)")
    left.set_ylim(0, 1)
    left.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    right.set_xscale("log")
    right.set_xlabel("the workflow's cost per question (USD)")
    right.set_ylabel("mean test score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = parser(__doc__)
    ap.add_argument("--data-dir", default=None, help="A folder laid out like shared/data/reflection (default: "
                    "$ONTIME_DATA_DIR, else the repo's sample).")  # fmt: skip
    ap.add_argument("--exams", default="", help="Comma-separated exam names (default: all).")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default="", help=f"Comma-separated: {', '.join(METHODS)}, "
                    f"best-model, {', '.join(MATCHED)}, {', '.join(ABLATIONS)}.")  # fmt: skip
    ap.add_argument("--ablations", action="store_true", help="Add BayesFlow's ablations and best-model.")
    ap.add_argument("--budget", type=float, default=BUDGET, help="Optimizer dollars per exam and seed.")
    ap.add_argument("--p-flip", type=float, default=None, help="Chance a right answer changes on 'reconsider' "
                    "(default: each model's measured change rate).")  # fmt: skip
    ap.add_argument("--executor", default=EXECUTOR, help="The fixed prompts' model.")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="Print the rows as a JSON list.")
    ap.add_argument("--out", type=Path, default=RESULTS / "bayesflow")
    args = ap.parse_args(argv)
    from tools.exams import find_data_dir, load_tasks

    data = str(find_data_dir(args.data_dir))
    exams = [e for e in args.exams.split(",") if e] or [t.exam for t in load_tasks(data)]
    methods = [m for m in args.methods.split(",") if m] or [*METHODS, *(() if args.json else ("best-model", *MATCHED))]
    if args.ablations:
        methods += [m for m in ("best-model", *MATCHED, *ABLATIONS) if m not in methods]
    unknown = [m for m in methods if m not in (*METHODS, "best-model", *MATCHED, *ABLATIONS)]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}")
    cells = [(e, data, s, m, args.budget, args.p_flip, args.executor)
             for e in exams for s in range(args.seeds) for m in methods]  # fmt: skip
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.workers) as pool:
        for got in pool.map(run_cell, cells):
            rows += got
            if not args.json:
                r = got[0]
                console.print(f"  {r['exam']:14s} seed {r['seed']} {r['method']:13s} test {r['test_score']:.3f} "
                              f"opt ${r['optimizer_cost_usd']:.2f} ({r['seconds']}s)", highlight=False)  # fmt: skip
    if args.json:
        print(json.dumps([{k: r[k] for k in ("exam", "method", "seed", "test_score", "optimizer_cost_usd")}
                          for r in rows]))  # fmt: skip
        return rows
    tag = "" if args.p_flip is None else f"_pflip{args.p_flip:g}"
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / f"rows{tag}.csv")
    summary = [_summary(rows, m) for m in methods]
    pairs = [_paired(rows, "bayesflow", m) for m in methods if m != "bayesflow"]
    write_csv(summary, args.out / f"summary{tag}.csv")
    write_csv(pairs, args.out / f"paired{tag}.csv")
    _plot(rows, methods, args.out / f"test_scores{tag}.png")
    _markdown(rows, summary, pairs, methods, args.out / f"summary{tag}.md", args)
    console.print(rows_table(summary, f"BayesFlow on recorded exams ({len(exams)} exams x {args.seeds} seeds)"))
    console.print(rows_table(pairs, "paired: bayesflow minus each method, per (exam, seed)"))
    console.print(machine())
    return rows


if __name__ == "__main__":
    main()
