"""The VOI paper's budget ladder on HotpotQA, MuSiQue and 2WikiMultihopQA with the simulated search agent, and how
far its verdicts survive the simulator's parameters.

    python -m benchmarks.qa_ladder [--data DIR] [--split test] [--seeds 5] [--workers 2] [--limit N]
                                   [--backbone qwen3-32b] [--no-sweep] [--out benchmarks/results/qa]

The simulated model (``adapters/sim_agent.py``) reads only the question and what it retrieves; the corpus is a
data set's pooled paragraphs, of all its questions (BM25, top_k = 5); the questions are the held-out ``test`` split
(``tools.qa_data.split``: designs were settled on ``dev``). Written to ``--out``:

- ``ladder.csv``: every controller with the finalizer off and on at the four budgets (1,100) (2,200) (2,300)
  (3,500), and the Stage-1 ablations of the paper's Table 1 with the finalizer on, at the first seed: EM and F1
  with 95% bootstrap intervals, mean tool calls and output tokens, cap violations, and how often the finalizer
  replaced an answer, repaired it (F1 up) or harmed it (F1 down).
- ``calibration.csv``: the model's last stated confidence against exact match, per data set and controller
  (finalizer off): mean confidence, accuracy, their gap, and the AUROC of confidence for correctness.
- ``voi_vs_baselines.csv``: VOI's F1 minus each baseline's per data set and budget (finalizer on), paired over
  questions and averaged over ``--seeds`` seeds, with a 95% bootstrap interval over questions and the range of
  the per-seed means; ``voi_overall.csv`` pools every cell.
- ``sensitivity.csv``: the pooled difference again with one simulator parameter moved at a time (the ones the
  audit of issue 17 found decisive: undirected turn length, query quality, confidence calibration, over-search
  harm), each over every seed; ``sign`` says whether VOI is ahead, behind, or neither at 95%.
"""

from __future__ import annotations

import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapters.sim_agent import BACKBONES, SimAgentModel
from benchmarks._report import RESULTS, console, data_dir, machine, parser, rows_table, write_csv
from planners import ABLATIONS, CONTROLLERS
from runtime._qa_api import LADDER, bootstrap_mean, evaluate_qa
from runtime.types.answers import exact_match
from tools.qa_data import QAExample, load_qa, pool_corpus, split
from tools.retrieval import BM25Search

if TYPE_CHECKING:
    from runtime._qa import QAResult

Scores = dict[tuple[str, str], list[float]]  # (budget, controller) -> each question's F1

DATASETS = {
    "hotpotqa": "hotpotqa_dev500.jsonl",
    "musique": "musique_100.jsonl",
    "2wikimultihopqa": "2wikimultihopqa_82.jsonl",
}
# One parameter moved at a time from the backbone's own values (see adapters/sim_agent.py for each).
SWEEP: tuple[tuple[str, dict[str, Any]], ...] = (
    ("base", {}),
    ("undirected turns 1.5x longer", {"free_length_ratio": 1.5}),
    ("undirected turns 2x longer", {"free_length_ratio": 2.0}),
    ("sharp queries (vague 0.1)", {"p_vague_query": 0.1}),
    ("vague queries (0.6)", {"p_vague_query": 0.6}),
    ("closer calibration (bias -0.2, noise 0.1)", {"confidence_bias": -0.2, "calibration_noise": 0.1}),
    ("poor calibration (bias +0.3, noise 0.3)", {"confidence_bias": 0.3, "calibration_noise": 0.3}),
    ("no over-search harm (distraction 0)", {"distraction": 0.0}),
    ("strong over-search harm (distraction 0.8)", {"distraction": 0.8}),
)
_DATA: dict[tuple[str, str, int | None], tuple[list[QAExample], BM25Search]] = {}


def _load(path: str, part: str, limit: int | None) -> tuple[list[QAExample], BM25Search]:
    """A data set's split and the index over all its paragraphs (every question's distractors), once per process."""
    key = (path, part, limit)
    if key not in _DATA:
        every = load_qa(path)
        _DATA[key] = split(every, part)[:limit], BM25Search(pool_corpus(every), cache_dir=None)
    return _DATA[key]


def paired_f1(path: str, part: str, limit: int | None, backbone: str, overrides: dict[str, Any], seed: int) -> Scores:
    """Per-question F1 of every controller at every budget (finalizer on), for one setting and seed."""
    examples, index = _load(path, part, limit)
    model = SimAgentModel(replace(BACKBONES[backbone], **overrides), seed)
    cells = evaluate_qa(examples, controllers=list(CONTROLLERS), finalize=(True,), search=index, model=model,
                        seed=seed, keep_scores=True)  # fmt: skip
    return {(c.budget, c.controller): c.f1_scores for c in cells}


def auroc(scored: list[tuple[float, bool]]) -> float:
    """The chance that a right answer's confidence exceeds a wrong one's (ties count half)."""
    right = [c for c, ok in scored if ok]
    wrong = [c for c, ok in scored if not ok]
    if not right or not wrong:
        return float("nan")
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def pooled(per_dataset: dict[str, list[list[float]]], seed: str, reps: int = 2000) -> tuple[float, float, float]:
    """Mean over every cell of VOI's paired F1 difference, with a 95% bootstrap over questions: a draw
    resamples each data set's questions once, for all its cells (``per_dataset[name]``: one list per cell)."""
    rng = random.Random(seed)
    cells = [(name, d) for name, lists in per_dataset.items() for d in lists]
    mean = statistics.fmean(statistics.fmean(d) for _, d in cells)
    boots = []
    for _ in range(reps):
        picks = {name: [rng.randrange(len(lists[0])) for _ in lists[0]] for name, lists in per_dataset.items()}
        boots.append(statistics.fmean(statistics.fmean(d[i] for i in picks[name]) for name, d in cells))
    boots.sort()
    return mean, boots[int(0.025 * reps)], boots[int(0.975 * reps) - 1]


def _delta(scores: Scores, budget: str, base: str) -> list[float]:
    """VOI's F1 minus ``base``'s on each question at ``budget``."""
    return [v - b for v, b in zip(scores[(budget, "voi")], scores[(budget, base)], strict=True)]


def _sign(lo: float, hi: float) -> str:
    return "VOI ahead" if lo > 0 else "VOI behind" if hi < 0 else "neither"


def ladder(name: str, path: Path, args: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Scores]:
    """The full ladder of one data set at the first seed, the model's calibration on it, and each controller's
    per-question F1 with the finalizer on (the sweep's base setting at that seed, not run again)."""
    examples, index = _load(str(path), args.split, args.limit)
    seed = args.seed
    stated: dict[str, list[tuple[float, bool]]] = {}

    def keep(ex: QAExample, r: QAResult) -> None:
        if r.finalization is None and r.trace.confidence is not None:  # finalizer-off cells: the model's own answer
            stated.setdefault(r.controller, []).append((r.trace.confidence, bool(exact_match(r.answer, ex.answers))))

    with Progress(TextColumn(name), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(name, total=len(examples) * len(LADDER) * (2 * len(CONTROLLERS) + len(ABLATIONS)))
        step = partial(bar.advance, task)
        rows = evaluate_qa(examples, controllers=list(CONTROLLERS), search=index, backbone=args.backbone, seed=seed,
                           progress=step, on_result=keep, keep_scores=True)  # fmt: skip
        rows += evaluate_qa(examples, controllers=ABLATIONS, finalize=(True,), search=index, backbone=args.backbone,
                            seed=seed, progress=step)  # fmt: skip
    calibration = []
    for ctl, pairs in stated.items():
        conf, acc = statistics.fmean(c for c, _ in pairs), statistics.fmean(ok for _, ok in pairs)
        calibration.append({"dataset": name, "controller": ctl, "n": len(pairs), "mean_confidence": round(conf, 3),
                            "accuracy_em": round(acc, 3), "gap": round(conf - acc, 3),
                            "auroc": round(auroc(pairs), 3)})  # fmt: skip
    scores = {(r.budget, r.controller): r.f1_scores for r in rows if r.finalizer and r.controller in CONTROLLERS}
    return [{"dataset": name, **r.to_dict()} for r in rows], calibration, scores


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=data_dir("qa"), help="folder with the JSONL files")
    ap.add_argument("--split", default="test", choices=("dev", "test", "all"))
    ap.add_argument("--limit", type=int, default=None, help="first N questions of each data set's split")
    ap.add_argument("--backbone", default="qwen3-32b", choices=sorted(BACKBONES))
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--seeds", type=int, default=5, help="seeds for the paired differences and the sweep")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-sweep", action="store_true", help="only the base setting across seeds")
    ap.add_argument("--out", type=Path, default=RESULTS / "qa")
    args = ap.parse_args()
    if args.data is None:
        raise SystemExit("no data: pass --data or set ONTIME_DATA_DIR (the folder holding qa/)")
    console.print(f"[bold]QA budget ladder[/] on {machine()}, backbone {args.backbone}, split {args.split}")
    start = time.perf_counter()
    every, calibration = [], []
    results: dict[tuple[str, str, int], Scores] = {}  # (setting, data set, seed) -> scores
    for name, file in DATASETS.items():
        rows, cal, results[("base", name, args.seed)] = ladder(name, args.data / file, args)
        every += rows
        calibration += cal
        shown = [{k: v for k, v in r.items() if k not in ("dataset", "em_lo", "em_hi", "seconds")} for r in rows]
        console.print(rows_table(shown, f"{name}: {rows[0]['n']} questions ({args.split} split), seed {args.seed}"))
    console.print(
        rows_table(calibration, "The simulated model's stated confidence against exact match (finalizer off)")
    )

    settings = SWEEP[:1] if args.no_sweep else SWEEP
    seeds = range(args.seed, args.seed + args.seeds)
    jobs = [(label, name, seed) for label, _ in settings for name in DATASETS for seed in seeds]
    jobs = [job for job in jobs if job not in results]
    with (
        ProcessPoolExecutor(args.workers) as pool,
        Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar,
    ):
        task = bar.add_task("sweep", total=len(jobs))
        over = dict(settings)
        futures = {job: pool.submit(paired_f1, str(args.data / DATASETS[job[1]]), args.split, args.limit,
                                    args.backbone, over[job[0]], job[2]) for job in jobs}  # fmt: skip
        for job, fut in futures.items():
            results[job] = fut.result()
            bar.advance(task)

    baselines = [c for c in CONTROLLERS if c != "voi"]
    budgets = [f"({t},{k})" for t, k in LADDER]
    cells, overall, sensitivity = [], [], []
    for label, _ in settings:
        for base in baselines:
            per: dict[str, list[list[float]]] = {}
            per_seed = [
                statistics.fmean(
                    statistics.fmean(_delta(results[(label, name, seed)], budget, base))
                    for name in DATASETS
                    for budget in budgets
                )
                for seed in seeds
            ]
            for name in DATASETS:
                for budget in budgets:
                    by_seed = [_delta(results[(label, name, s)], budget, base) for s in seeds]
                    d = [statistics.fmean(x) for x in zip(*by_seed, strict=True)]  # each question over the seeds
                    per.setdefault(name, []).append(d)
                    if label == "base":
                        m, lo, hi = bootstrap_mean(d, random.Random(f"{name}{budget}{base}"), reps=2000)
                        seed_means = [statistics.fmean(x) for x in by_seed]
                        cells.append({"dataset": name, "budget": budget, "vs": base, "delta_f1": round(m, 4),
                                      "lo": round(lo, 4), "hi": round(hi, 4), "seed_min": round(min(seed_means), 4),
                                      "seed_max": round(max(seed_means), 4), "sign": _sign(lo, hi)})  # fmt: skip
            m, lo, hi = pooled(per, f"{label}{base}")
            row = {"setting": label, "vs": base, "mean_delta_f1": round(m, 4), "lo": round(lo, 4),
                   "hi": round(hi, 4), "seed_min": round(min(per_seed), 4), "seed_max": round(max(per_seed), 4),
                   "sign": _sign(lo, hi)}  # fmt: skip
            sensitivity.append(row)
            if label == "base":
                base_cells = [c for c in cells if c["vs"] == base]
                overall.append({**row, "cells": len(base_cells),
                                "cells_ahead": sum(c["sign"] == "VOI ahead" for c in base_cells),
                                "cells_behind": sum(c["sign"] == "VOI behind" for c in base_cells)})  # fmt: skip
    n = len(seeds)
    console.print(rows_table(cells, f"VOI F1 minus each baseline (finalizer on), paired over questions, {n} seeds"))
    console.print(rows_table(overall, f"VOI against each baseline, pooled over every cell, {n} seeds (95% bootstrap)"))
    if not args.no_sweep:
        console.print(rows_table(sensitivity, "Sensitivity: the pooled difference with one simulator parameter moved"))
    for table, file in ((every, "ladder.csv"), (calibration, "calibration.csv"), (cells, "voi_vs_baselines.csv"),
                        (overall, "voi_overall.csv"), (sensitivity, "sensitivity.csv")):  # fmt: skip
        write_csv(table, args.out / file)
    console.print(f"wrote {args.out}/ (ladder, calibration, voi_vs_baselines, voi_overall, sensitivity) in "
                  f"{time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
