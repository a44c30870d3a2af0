"""VineLM's Table 1 and Table 2 on real reflection loops: how well sparse cascade profiling recovers every path's
accuracy, and what profiling costs.

    python -m benchmarks.vine_estimators [--data-dir DIR] [--models a,b,c,d] [--depth 6] [--seeds 20]
        [--coverage 0.02] [--sweep 0.005,0.01,0.02,0.05,0.1] [--half held-out|tune|all] [--unit dollars|tokens]
        [--out benchmarks/results/vine_estimators]

The trie: every sequence of 1..depth invocations of the models; an invocation is the model's fresh answer, or its
own repair (``retry``) if it already answered on the path (tools/reflection_cascade.py). Default data: the
repo's slice (3 models, 2 exams); ``--data-dir DIR`` reads DIR/reflection/renze_attempts.csv and by default takes
4 models spanning first-answer accuracy: Llama 2 7B (27%), GPT-3.5 Turbo (59%), Mistral Large (73%) and Claude 3
Opus (81%). Costs are list prices (genai-prices) of each row's real tokens.

Coverage = sparse profiling cost / the cost of running every reachable (question, node) once with checkpoints.
Errors are estimated minus true accuracy over every node, in percentage points, averaged over seeds with a 95%
interval across seeds (mean +- 1.96 sd / sqrt(R)). The knobs of our own estimators (latent-class classes,
EB prior cap) were chosen on the ``tune`` half of the questions (a stable CRC32 hash of exam/problem) and are
reported on the ``held-out`` half (the default).
"""

from __future__ import annotations

import functools
import math
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks._report import EXAMPLES, RESULTS, console, machine, parser, rows_table, write_csv
from planners.cascade_estimates import ESTIMATORS, Estimate, latent_class, path_features, vinelm_eb
from planners.cascade_sampling import Observations, PathOutcomes, PathTrie, cascade_sample
from tools.reflection_cascade import cascade_table
from tools.reflection_data import load_attempts

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["FULL_MODELS", "PAPER", "main", "prefix_gbm", "run"]

FULL_MODELS = ("llama-2-7b-chat", "gpt-35-turbo", "mistral-large", "claude-3-opus-20240229")
SAMPLE = EXAMPLES / "reflection" / "attempts_sample.csv"
OUT = RESULTS / "vine_estimators"
# The paper's Table 1 (MathQA-4, 2% coverage): mean signed, mean absolute, max absolute error in points.
PAPER = {
    "average": (-49.53, 49.53, 76.46),
    "prefix_average": (20.50, 20.50, 33.17),
    "prefix_impute": (4.78, 4.78, 12.98),
    "prefix_gbm": (3.08, 4.73, 15.57),
    "vinelm_lite": (0.04, 1.45, 6.29),
    "vinelm": (0.07, 1.04, 4.33),
}
OURS = ("vinelm_eb", "latent_class")


def prefix_gbm(trie: PathTrie, obs: Observations) -> Estimate:
    """Fill-in, then gradient boosting (the paper used XGBoost) from path features to column means: trained on
    the columns seen on at least 10 questions (weighted by their count), predicting every column. With fewer
    than 5 such columns it returns the fill-in means."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, _ = path_features(trie, obs)
    observed, value = obs.filled()
    count = observed.sum(axis=0)
    train = count >= 10
    if train.sum() < 5:  # a tiny trie or budget: nothing to learn from, the fill-in means are the answer
        return Estimate("prefix_gbm", ESTIMATORS["prefix_average"](trie, obs).accuracy)
    target = (observed & value).sum(axis=0)[train] / count[train]
    model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=0)
    model.fit(x[train], target, sample_weight=count[train])
    return Estimate("prefix_gbm", np.clip(model.predict(x), 0.0, 1.0).astype(np.float64))


def _methods() -> dict[str, Callable[[PathTrie, Observations], Estimate]]:
    out: dict[str, Callable[[PathTrie, Observations], Estimate]] = {}
    for name in ("average", "prefix_average", "prefix_impute"):
        out[name] = ESTIMATORS[name]
    out["prefix_gbm"] = prefix_gbm
    for name in ("vinelm_lite", "vinelm", *OURS):
        out[name] = ESTIMATORS[name]
    return out


# Every variant of our own estimators tried on the tune half (``--tune``); the defaults are the frozen choice.
VARIANTS: dict[str, Callable[[PathTrie, Observations], Estimate]] = {
    **{f"latent_class_k{k}": functools.partial(latent_class, classes=k) for k in (1, 2, 3, 4, 6)},
    **{f"vinelm_eb_depth_cap{c:g}": functools.partial(vinelm_eb, max_strength=c, group="depth") for c in (1e2, 1e4)},
    **{f"vinelm_eb_set_cap{c:g}": functools.partial(vinelm_eb, max_strength=c, group="set") for c in (1e2, 1e4)},
}


def half_of(question: tuple[str, str]) -> str:
    """A stable split of the questions: ``tune`` or ``held-out``."""
    return ("tune", "held-out")[zlib.crc32(f"{question[0]}/{question[1]}".encode()) % 2]


def run(
    table: PathOutcomes,
    coverages: Sequence[float],
    seeds: int,
    methods: dict[str, Callable[[PathTrie, Observations], Estimate]],
) -> list[dict[str, Any]]:
    """One row per (coverage, seed, method): signed, mean absolute and max absolute error in points."""
    truth, trie = table.accuracy, table.trie
    full = table.profiling_cost().checkpointed
    rows = []
    for coverage in coverages:
        for seed in range(seeds):
            obs = cascade_sample(table, coverage * full, np.random.default_rng(seed))
            for name, fn in methods.items():
                t0 = time.perf_counter()
                err = 100 * (fn(trie, obs).accuracy - truth)
                rows.append({"coverage": coverage, "seed": seed, "method": name, "signed": float(err.mean()),
                             "abs": float(np.abs(err).mean()), "max_abs": float(np.abs(err).max()),
                             "spent": obs.spent, "seconds": time.perf_counter() - t0})  # fmt: skip
    return rows


def _ci(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    half = 1.96 * float(a.std(ddof=1)) / math.sqrt(len(a)) if len(a) > 1 else math.nan
    return float(a.mean()), half


def summarize(rows: list[dict[str, Any]], coverage: float) -> list[dict[str, Any]]:
    out = []
    names = list(dict.fromkeys(r["method"] for r in rows))
    for name in names:
        mine = [r for r in rows if r["method"] == name and r["coverage"] == coverage]
        row: dict[str, Any] = {"method": name, "coverage": coverage, "seeds": len(mine)}
        for key in ("signed", "abs", "max_abs"):
            mean, half = _ci([r[key] for r in mine])
            row[key], row[f"{key}_ci95"] = round(mean, 3), round(half, 3)
        paper = PAPER.get(name)
        row["paper_signed"], row["paper_abs"], row["paper_max_abs"] = paper if paper else ("", "", "")
        out.append(row)
    return out


def _plot(rows: list[dict[str, Any]], coverages: Sequence[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["method"] for r in rows):
        stats = [_ci([r["abs"] for r in rows if r["method"] == name and r["coverage"] == c]) for c in coverages]
        ax.errorbar([100 * c for c in coverages], [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o",
                    capsize=3, label=name, linestyle="--" if name in OURS else "-")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("coverage (% of checkpointed full profiling cost)")
    ax.set_ylabel("mean absolute error over all paths (points)")
    ax.set_title("Path accuracy from sparse cascade profiling (reflection data)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--data-dir", default=None, help="folder with reflection/renze_attempts.csv (default: the slice)")
    ap.add_argument("--models", default=None, help="comma-separated (default: 4 spanning accuracy; slice: all 3)")
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--coverage", type=float, default=0.02)
    ap.add_argument("--sweep", default="0.005,0.01,0.02,0.05,0.1")
    ap.add_argument("--half", choices=("held-out", "tune", "all"), default="held-out")
    ap.add_argument("--unit", choices=("dollars", "tokens"), default="dollars")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--tune", action="store_true", help="compare our estimators' variants (use with --half tune)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    path = Path(args.data_dir) / "reflection" / "renze_attempts.csv" if args.data_dir else SAMPLE
    attempts = load_attempts(path)
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        models = list(FULL_MODELS) if args.data_dir else sorted({a.model for a in attempts})
    table, questions = cascade_table(attempts, models, args.depth, unit=args.unit)
    if args.half != "all":
        keep = [i for i, q in enumerate(questions) if half_of(q) == args.half]
        table = PathOutcomes(table.trie, table.invoke[keep], table.cost[keep])
    coverages = sorted({args.coverage, *(float(c) for c in args.sweep.split(",") if c.strip())})
    console.print(f"{path.name}: {len(models)} models ({', '.join(models)}), depth {args.depth}, "
                  f"{table.trie.size} paths, {table.invoke.shape[0]} questions ({args.half} half), "
                  f"{args.seeds} seeds; {machine()}")  # fmt: skip
    out = Path(args.out)
    if args.tune:
        tuned = summarize(run(table, [args.coverage], args.seeds, VARIANTS), args.coverage)
        console.print(rows_table(tuned, f"Variants on the {args.half} half"))
        write_csv(tuned, out / f"variants_{args.half}.csv")
        return 0
    rows = run(table, coverages, args.seeds, _methods())
    main_rows = summarize(rows, args.coverage)
    console.print(rows_table(main_rows, f"Table 1: error of every path's accuracy at {100 * args.coverage:g}% "
                             "coverage, points (95% CI across seeds); paper = MathQA-4"))  # fmt: skip
    curve = [r for c in coverages for r in summarize(rows, c)]
    cost = table.profiling_cost()
    sparse = float(np.mean([r["spent"] for r in rows if r["coverage"] == args.coverage and r["method"] == "vinelm"]))
    unit = "$" if args.unit == "dollars" else "tokens"
    chk, full = cost.checkpointed, cost.full
    cost_rows = [{"workflow": f"reflection-{len(models)}x{args.depth}", "unit": unit, "sparse": round(sparse, 2),
                  "checkpointed": round(chk, 2), "full": round(full, 2), "chkpt_over_sparse": round(chk / sparse, 1),
                  "full_over_chkpt": round(full / chk, 2), "full_over_sparse": round(full / sparse, 1)},
                 {"workflow": "paper MathQA-4", "unit": "$", "sparse": 28.16, "checkpointed": 563.18, "full": 15073.67,
                  "chkpt_over_sparse": 20.0, "full_over_chkpt": 26.77, "full_over_sparse": 535.29}]  # fmt: skip
    console.print(rows_table(cost_rows, "Table 2: profiling cost"))
    write_csv(main_rows, out / "table1.csv")
    write_csv(curve, out / "mae_vs_coverage.csv")
    write_csv(cost_rows, out / "table2.csv")
    write_csv(rows, out / "runs.csv")
    _plot(rows, coverages, out / "mae_vs_coverage.png")
    console.print(f"wrote {out}/table1.csv, mae_vs_coverage.csv/.png, table2.csv, runs.csv; "
                  f"took {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
