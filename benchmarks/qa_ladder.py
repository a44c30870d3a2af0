"""The VOI paper's budget ladder on HotpotQA, MuSiQue and 2WikiMultihopQA, with the simulated search agent.

    python -m benchmarks.qa_ladder [--data DIR] [--limit N] [--backbone qwen3-32b] [--out benchmarks/results/qa]

For each data set (the corpus is its pooled paragraphs, BM25, top_k = 5): every controller with the
finalizer off and on at the four budgets (1,100) (2,200) (2,300) (3,500); the Stage-1 ablations of Table 1
(without penalty, normalization, structure, guards) with the finalizer on at every budget. Tables (EM, F1
with 95% bootstrap intervals, mean tool calls and output tokens, cap violations, finalizer replacements and
how many hurt), VOI's paired F1 difference against each baseline per cell (95% bootstrap interval over
questions) and averaged over all cells, as CSV in ``--out``. The finalizer's precision on answer-form errors
it was not written against is measured by ``tests/test_finalizer.py`` (with ``ONTIME_DATA_DIR`` set).
"""

from __future__ import annotations

import random
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks._report import RESULTS, console, data_dir, machine, parser, rows_table, write_csv
from planners import ABLATIONS, CONTROLLERS
from runtime._qa_api import LADDER, QACell, bootstrap_mean, evaluate_qa
from tools.qa_data import load_qa, pool_corpus
from tools.retrieval import BM25Search

DATASETS = {
    "hotpotqa": "hotpotqa_dev500.jsonl",
    "musique": "musique_100.jsonl",
    "2wikimultihopqa": "2wikimultihopqa_82.jsonl",
}


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


def comparisons(
    rows: list[QACell], dataset: str, diffs: dict[str, dict[str, list[list[float]]]]
) -> list[dict[str, Any]]:
    """VOI's paired F1 difference with each baseline in every cell of one data set (95% bootstrap); each
    cell's per-question differences also go to ``diffs[baseline][dataset]`` for :func:`pooled`."""
    out = []
    by = {(r.budget, r.controller, r.finalizer): r for r in rows}
    for (budget, name, fin), r in by.items():
        if name != "voi":
            continue
        for base in list(CONTROLLERS)[1:]:
            other = by.get((budget, base, fin))
            if other is None:
                continue
            d = [x - y for x, y in zip(r.f1_scores, other.f1_scores, strict=True)]
            m, lo, hi = bootstrap_mean(d, random.Random(f"{dataset}{budget}{base}{fin}"), reps=2000)
            diffs.setdefault(base, {}).setdefault(dataset, []).append(d)
            out.append({"dataset": dataset, "budget": budget, "finalizer": fin, "vs": base,
                        "delta_f1": round(m, 4), "lo": round(lo, 4), "hi": round(hi, 4),
                        "significant": "above" if lo > 0 else "below" if hi < 0 else ""})  # fmt: skip
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=data_dir("qa"), help="folder with the JSONL files")
    ap.add_argument("--limit", type=int, default=None, help="first N questions of each data set")
    ap.add_argument("--backbone", default="qwen3-32b")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "qa")
    args = ap.parse_args()
    if args.data is None:
        raise SystemExit("no data: pass --data or set ONTIME_DATA_DIR (the folder holding qa/)")
    console.print(f"[bold]QA budget ladder[/] on {machine()}, backbone {args.backbone}")
    every, deltas = [], []
    diffs: dict[str, dict[str, list[list[float]]]] = {}  # baseline -> data set -> per-cell F1 differences
    for name, file in DATASETS.items():
        start = time.perf_counter()
        examples = load_qa(args.data / file, limit=args.limit)
        index = BM25Search(pool_corpus(examples))
        with Progress(TextColumn(name), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task(name, total=len(examples) * len(LADDER) * (2 * len(CONTROLLERS) + len(ABLATIONS)))
            step = partial(bar.advance, task)
            rows = evaluate_qa(examples, controllers=list(CONTROLLERS), ladder=LADDER, search=index,
                               backbone=args.backbone, seed=args.seed, keep_scores=True, progress=step)  # fmt: skip
            rows += evaluate_qa(examples, controllers=ABLATIONS, ladder=LADDER, finalize=(True,), search=index,
                                backbone=args.backbone, seed=args.seed, keep_scores=True, progress=step)  # fmt: skip
        deltas += comparisons(rows, name, diffs)
        cells = [{"dataset": name, **r.to_dict()} for r in rows]
        every += cells
        shown = [{k: v for k, v in c.items() if k not in ("dataset", "em_lo", "em_hi", "seconds")} for c in cells]
        console.print(rows_table(shown, f"{name}: {len(examples)} questions ({time.perf_counter() - start:.0f} s)"))
    console.print(rows_table(deltas, "VOI F1 minus each baseline, paired over questions (95% bootstrap)"))
    overall = []
    for base, per in diffs.items():
        m, lo, hi = pooled(per, base)
        cells = [d for d in deltas if d["vs"] == base]
        overall.append({"vs": base, "cells": len(cells), "mean_delta_f1": round(m, 4), "lo": round(lo, 4),
                        "hi": round(hi, 4), "cells_above": sum(d["significant"] == "above" for d in cells),
                        "cells_below": sum(d["significant"] == "below" for d in cells)})  # fmt: skip
    console.print(rows_table(overall, "VOI against each baseline, averaged over all cells (95% bootstrap)"))
    for table, file in ((overall, "voi_overall.csv"), (every, "ladder.csv"), (deltas, "voi_vs_baselines.csv")):
        write_csv(table, args.out / file)
    console.print(f"wrote {args.out / 'ladder.csv'} and {args.out / 'voi_vs_baselines.csv'}")


if __name__ == "__main__":
    main()
