"""The MCP paper's experiments on real workflow graphs (``ontime bench mcp``): the main budget x deadline
grid and its analyses.

Every (suite, instance, budget, deadline, variant) is one task: each planner of the task plays ``runs``
closed-loop runs of the instance in the simulation kernels (what ``runtime.predict`` does, checked against
the executor by tests/test_predict.py), on the same seeds for every planner. Tasks run in local worker
processes or on a Ray cluster; each task's rows are appended to ``<out>/<suite>/tasks.jsonl`` as it
finishes, so an interrupted sweep resumes where it stopped. The tables (CSV and markdown) and plots are
built from that file. Protocol: the MCP paper, Section 4 and Appendices C-D, and benchmarks/README.md.

Planners per task: MCP, and in the main grid every Retry (model x width K) and Uniform (model)
configuration, so that each cell's best baseline is the configuration best over the suite, as in the paper.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import runtime
from benchmarks._report import ROOT, data_dir, write_csv
from benchmarks.instances import Instance, Loaded, load_codeflow, load_proofflow

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Sequence

__all__ = ["ANALYSES", "BUDGETS", "DEADLINES_MIN", "Task", "main_tasks", "run_tasks", "run_task"]

BUDGETS = (0.05, 1.0, 20.0)
DEADLINES_MIN = (1, 5, 10, 15, 30, 60, 120)
WIDTHS = (1, 4, 16, 64)
ANALYSES = ("main", "n", "noise", "portfolio", "widths", "rounds")
DATA_FILES = {"proofflow": "proofflow_124.json", "codeflow": "codeflowbench_repo_99.json"}


@dataclass(frozen=True)
class Task:
    """One instance under one budget and deadline, played by some planners; ``variant`` names an analysis
    setting (``""`` for the main grid)."""

    suite: str
    instance: str
    budget: float
    deadline_min: float
    planners: tuple[str, ...]
    runs: int
    seed: int = 0
    variant: str = ""
    noise: tuple[str, float] | None = None  # ("length" | "success", sigma): the planner sees perturbed pools
    rounds: bool = False

    @property
    def key(self) -> str:
        return json.dumps([self.suite, self.instance, self.budget, self.deadline_min, self.variant, self.runs,
                           self.seed, list(self.planners)])  # fmt: skip


# -- the instances, loaded once per process -------------------------------------------------------------

_LOADED: dict[tuple[str, str], Loaded] = {}


def load_suite(suite: str, data_dir: str | Path) -> Loaded:
    """The instances of a suite (cached per process: building 512-sample pools takes seconds)."""
    key = (suite, str(data_dir))
    if key not in _LOADED:
        _LOADED[key] = (load_proofflow if suite == "proofflow" else load_codeflow)(Path(data_dir) / DATA_FILES[suite])
    return _LOADED[key]


def _instance(suite: str, instance: str, data_dir: str | Path) -> Instance:
    for inst in load_suite(suite, data_dir).instances:
        if inst.id == instance:
            return inst
    raise KeyError(f"{suite} has no instance {instance!r}")


# -- one task ------------------------------------------------------------------------------------------


def perturbed(table_wf: runtime.Workflow, noise: tuple[str, float], seed: int) -> runtime.Workflow:
    """The workflow as the planner sees it under the paper's noise protocol (Appendix C.3).

    ``("length", sigma)``: every pool row's output tokens c become c_max * clip(c / c_max + sigma z, eps,
    1 - eps), z standard normal, c_max the pool's longest row; its recorded generation time scales with
    them. ``("success", sigma)``: the pool's success rate p becomes clip(p + sigma z, eps, 1 - eps) and the
    fewest labels are flipped so that round(p~ n) rows succeed.
    """
    what, sigma = noise
    eps = 1e-3
    rng = np.random.default_rng(seed)
    subtasks = []
    for s in table_wf.subtasks:
        profiles: dict[str, Any] = {}
        for name, prof in s.profiles.items():
            rows = [list(r) for r in prof.samples]  # type: ignore[union-attr]
            model = table_wf.models[name]
            if what == "length":
                c_max = max(r[1] for r in rows)
                for r in rows:
                    new = max(1, round(c_max * min(1 - eps, max(eps, r[1] / c_max + sigma * rng.standard_normal()))))
                    if r[2] is not None:
                        r[2] = model.ttft_s + max(0.0, r[2] - model.ttft_s) * new / r[1]
                    r[1] = new
            else:
                n = len(rows)
                want = round(min(1 - eps, max(eps, sum(r[0] for r in rows) / n + sigma * rng.standard_normal())) * n)
                have = [k for k, r in enumerate(rows) if r[0]]
                lack = [k for k, r in enumerate(rows) if not r[0]]
                if want != len(have):
                    flip, label = (lack, True) if want > len(have) else (have, False)
                    for k in rng.choice(flip, size=abs(want - len(have)), replace=False):
                        rows[k][0] = label
            profiles[name] = {"samples": [[int(r[0]), int(r[1]), r[2]] for r in rows]}
        subtasks.append({"id": s.id, "deps": list(s.deps), "input_tokens": s.input_tokens, "profiles": profiles})
    keys = ("provider", "input_price_per_mtok", "output_price_per_mtok", "tokens_per_s", "ttft_s", "max_output_tokens")
    models = {n: {k: getattr(m, k) for k in keys} for n, m in table_wf.models.items()}
    return runtime.parse_workflow({"name": table_wf.name, "models": models, "subtasks": subtasks})


def run_task(task: Task, data_dir: str | Path) -> list[dict[str, Any]]:
    """Play every planner of the task on the instance; one row per planner."""
    from planners import make_planner
    from planners.mcp import MCPPlanner
    from runtime import PlannerContext

    inst = _instance(task.suite, task.instance, data_dir)
    table = runtime.ProfileTable.from_workflow(inst.workflow)
    budget_pusd = runtime.types.to_pusd(task.budget)
    deadline = 60.0 * task.deadline_min
    start = runtime.Snapshot.at_start(table, budget_pusd, deadline, rounds=task.rounds)
    seed = zlib.crc32(f"{task.suite}|{task.instance}|{task.seed}".encode())
    plan_table = None
    if task.noise is not None:
        plan_table = runtime.ProfileTable.from_workflow(perturbed(inst.workflow, task.noise, seed))
    rows = []
    for spec in task.planners:
        planner = make_planner(spec, PlannerContext(table, budget_pusd, deadline, task.seed))
        t0 = time.perf_counter()
        decisions = 0
        if isinstance(planner, MCPPlanner):
            ok, spent, elapsed, made = planner.closed_loop(start, seed, 0, task.runs, plan_table=plan_table)
            decisions = int(made.sum())
        else:
            played = planner.play(start, seed, 0, task.runs)
            assert played is not None, f"{spec} has no kernel form"
            ok, spent, elapsed = played
        rows.append(
            {
                "key": task.key,
                "suite": task.suite,
                "instance": task.instance,
                "subtasks": inst.subtasks,
                "budget": task.budget,
                "deadline_min": task.deadline_min,
                "variant": task.variant,
                "planner": spec,
                "runs": task.runs,
                "successes": int(ok.sum()),
                "mean_cost": float(spent.mean()) / runtime.PUSD_PER_USD,
                "mean_elapsed": float(elapsed.mean()),
                "decisions": decisions,
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows


# -- many tasks: local processes or Ray, resumable -----------------------------------------------------


@dataclass
class Store:
    """The rows of finished tasks, one JSON line per row, appended as tasks finish."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.rows += [json.loads(ln) for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]

    @property
    def done(self) -> set[str]:
        return {r["key"] for r in self.rows}

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        self.rows.extend(rows)


def _results(
    todo: list[Task], data_dir: str | Path, workers: int, ray_address: str | None
) -> Generator[list[dict[str, Any]]]:
    """Each task's rows as it finishes: on Ray, in worker processes, or in this process."""
    if ray_address is None and workers <= 1:
        for t in todo:
            yield run_task(t, data_dir)
    elif ray_address is None:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(run_task, t, str(data_dir)) for t in todo]):
                yield fut.result()
    else:
        import ray

        started_ray = not ray.is_initialized()
        if started_ray:
            env = {"env_vars": {"PYTHONPATH": str(ROOT)}}
            if ray_address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, runtime_env=env, log_to_driver=False)
            else:
                ray.init(address=ray_address, runtime_env=env, log_to_driver=False)
        remote = ray.remote(run_task)
        pending = {remote.remote(t, str(data_dir)): t for t in todo}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                pending.pop(ref)
                yield ray.get(ref)
        finally:
            if started_ray:
                ray.shutdown()


def run_tasks(
    tasks: Iterable[Task],
    store: Store,
    data_dir: str | Path,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Run the tasks not in ``store`` yet, adding each one's rows as it finishes; returns how many ran.
    Where a task runs does not change its rows: a task is a pure function of its fields and the data."""
    done = store.done
    todo = [t for t in tasks if t.key not in done]
    if not todo:
        return 0
    with closing(_results(todo, data_dir, workers, ray_address)) as results:
        for finished, rows in enumerate(results, 1):
            store.add(rows)
            if progress:
                progress(finished, len(todo))
    return len(todo)


# -- the experiments --------------------------------------------------------------------------------------


def subset(loaded: Loaded, count: int | None) -> list[Instance]:
    """``count`` instances spread over the suite (all when None), in a fixed order."""
    insts = loaded.instances
    if count is None or count >= len(insts):
        return insts
    step = len(insts) / count
    return [insts[int(k * step)] for k in range(count)]


def main_tasks(suite: str, instances: Sequence[Instance], runs: int) -> list[Task]:
    """The paper's Figure 2 grid: budgets x deadlines, MCP and every baseline configuration."""
    models = tuple(instances[0].workflow.models)
    planners = ("mcp", *(f"retry:{m}:{k}" for m in models for k in WIDTHS), *(f"uniform:{m}" for m in models))
    return [Task(suite, inst.id, b, d, planners, runs) for inst in instances for b in BUDGETS for d in DEADLINES_MIN]


def analysis_tasks(analysis: str, suite: str, instances: Sequence[Instance], runs: int) -> list[Task]:
    """The paper's analyses, each on ``instances`` (a subset) at the cells the paper reports."""
    models = tuple(instances[0].workflow.models)
    mcp = Task(suite, "", 0.0, 0, ("mcp",), runs)  # each variant, played on every instance and cell below
    budgets: tuple[float, ...] = BUDGETS
    deadlines: tuple[int, ...] = (5, 15, 60)
    if analysis == "n":  # Table 3: Monte Carlo budget (on 4 of the 7 deadlines: N=256 costs 4x the default)
        deadlines = (1, 5, 15, 60)
        variants = [replace(mcp, planners=tuple(f"mcp:n={n}" for n in (16, 32, 64, 128, 256)), variant="n")]
    elif analysis == "noise":  # Table 1: the planner sees perturbed pools; runs use the true ones
        budgets = (0.05, 1.0)  # the paper does not say its budget; at $1 ours are mostly near certain
        deadlines = (10, 30, 120)
        variants = [replace(mcp, variant="noise:none")] + [
            replace(mcp, variant=f"noise:{what}:{sigma:g}", noise=(what, sigma))
            for what, sigmas in (("length", (3.0, 4.0, 5.0)), ("success", (0.1, 0.2, 0.3)))
            for sigma in sigmas
        ]
    elif analysis == "portfolio":  # Figure 3: one, two or three models
        specs = tuple(f"mcp:models={','.join(models[:size])}" for size in range(1, len(models) + 1))
        variants = [replace(mcp, planners=specs, variant="portfolio")]
    elif analysis == "widths":  # Figure 4: width portfolios
        specs = tuple(f"mcp:k={','.join(map(str, WIDTHS[:size]))}" for size in range(1, len(WIDTHS) + 1))
        variants = [replace(mcp, planners=specs, variant="widths")]
    elif analysis == "rounds":  # the paper's synchronized rounds against event-driven execution
        variants = [replace(mcp, variant="rounds", rounds=True), replace(mcp, variant="events")]
    else:
        raise ValueError(f"unknown analysis {analysis!r} (known: {', '.join(ANALYSES)})")
    return [
        replace(v, instance=inst.id, budget=b, deadline_min=d)
        for inst in instances
        for b in budgets
        for d in deadlines
        for v in variants
    ]


# -- tables and plots -----------------------------------------------------------------------------------


def cell_rates(rows: Sequence[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per (variant, budget, deadline, planner): the success rate over instances (mean of per-instance
    rates), its 95% interval (Monte Carlo error of the runs), mean cost and time, planner ms per decision."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["budget"], r["deadline_min"], r["planner"]), []).append(r)
    out = {}
    for k, rs in groups.items():
        rates = np.array([r["successes"] / r["runs"] for r in rs])
        var = float(np.sum(rates * (1 - rates) / np.array([r["runs"] for r in rs]))) / len(rs) ** 2
        half = 1.96 * math.sqrt(var)
        p = float(rates.mean())
        dec = sum(r["decisions"] for r in rs)
        out[k] = {
            "p": p,
            "lo": max(0.0, p - half),
            "hi": min(1.0, p + half),
            "instances": len(rs),
            "cost": float(np.mean([r["mean_cost"] for r in rs])),
            "elapsed": float(np.mean([r["mean_elapsed"] for r in rs])),
            "ms_per_decision": 1000 * sum(r["seconds"] for r in rs) / dec if dec else float("nan"),
        }
    return out


def _gain_half_width(rows: Sequence[dict[str, Any]], a: str, b: str, budget: float, deadline: float) -> float:
    """The 95% half-width of planner ``a``'s rate minus ``b``'s in one cell, over the instances both ran
    (their runs taken as independent; sharing seeds, they are positively correlated, so this is wide)."""
    per: dict[str, dict[str, tuple[int, int]]] = {}
    for r in rows:
        if r["variant"] == "" and (r["budget"], r["deadline_min"]) == (budget, deadline) and r["planner"] in (a, b):
            per.setdefault(r["instance"], {})[r["planner"]] = (r["successes"], r["runs"])
    both = [v for v in per.values() if len(v) == 2]
    var = sum(k / n * (1 - k / n) / n for v in both for k, n in v.values())
    return 1.96 * math.sqrt(var) / max(1, len(both))


def main_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Figure 2 as rows: per cell, MCP, the best Retry and the best Uniform configuration (the best over the
    suite, as the paper picks them), and MCP's gain over the better of the two with its 95% interval."""
    rates = cell_rates([r for r in rows if r["variant"] == ""])
    table = []
    for b, d in sorted({(b, d) for (_, b, d, _) in rates}):
        here = {p: v for (var, bb, dd, p), v in rates.items() if (bb, dd) == (b, d)}
        if "mcp" not in here:
            continue
        retry = max((p for p in here if p.startswith("retry:")), key=lambda p: here[p]["p"], default=None)
        uniform = max((p for p in here if p.startswith("uniform:")), key=lambda p: here[p]["p"], default=None)
        row: dict[str, Any] = {"budget": b, "deadline_min": d, "instances": here["mcp"]["instances"]}
        for name, spec in (("mcp", "mcp"), ("best_retry", retry), ("best_uniform", uniform)):
            if spec is None:
                continue
            v = here[spec]
            row.update({name: round(v["p"], 4), f"{name}_lo": round(v["lo"], 4), f"{name}_hi": round(v["hi"], 4)})
            if name != "mcp":
                row[f"{name}_config"] = spec
        base = max((s for s in (retry, uniform) if s is not None), key=lambda s: here[s]["p"])
        half = _gain_half_width(rows, "mcp", base, b, d)
        row["gain_pts"] = round(100 * (here["mcp"]["p"] - here[base]["p"]), 1)
        row["gain_lo"] = round(row["gain_pts"] - 100 * half, 1)
        row["gain_hi"] = round(row["gain_pts"] + 100 * half, 1)
        row["mcp_cost"] = round(here["mcp"]["cost"], 4)
        row["mcp_elapsed_min"] = round(here["mcp"]["elapsed"] / 60, 2)
        row["planner_ms_per_decision"] = round(here["mcp"]["ms_per_decision"], 2)
        table.append(row)
    return table


def planner_time_table(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's Table 2: MCP's mean wall time per decision (ms), budgets by deadlines."""
    deadlines = sorted({r["deadline_min"] for r in table})
    out = []
    for b in sorted({r["budget"] for r in table}):
        cells = {r["deadline_min"]: r["planner_ms_per_decision"] for r in table if r["budget"] == b}
        out.append({"budget": b, **{f"{d:g} min": cells.get(d, "") for d in deadlines}})
    return out


def markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return ""
    cols = list(columns or rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_main(table: Sequence[dict[str, Any]], suite: str, path: Path) -> None:
    """Success against deadline per budget (the paper's Figure 2), and a heatmap of MCP's gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget"] for r in table})
    fig, axes = plt.subplots(1, len(budgets) + 1, figsize=(4.2 * (len(budgets) + 1), 3.6))
    for ax, b in zip(axes, budgets, strict=False):
        rs = sorted((r for r in table if r["budget"] == b), key=lambda r: r["deadline_min"])
        x = [r["deadline_min"] for r in rs]
        for name, style in (("mcp", "o-"), ("best_retry", "s--"), ("best_uniform", "^:")):
            if name in rs[0]:
                ax.plot(x, [r[name] for r in rs], style, label=name.replace("_", " "))
                ax.fill_between(x, [r[f"{name}_lo"] for r in rs], [r[f"{name}_hi"] for r in rs], alpha=0.15)
        ax.set(xscale="log", title=f"{suite}: budget ${b:g}", xlabel="deadline (min)", ylim=(0, 1.02))
    axes[0].set_ylabel("completion probability")
    axes[0].legend(loc="lower right", fontsize=8)
    deadlines = sorted({r["deadline_min"] for r in table})
    grid = np.array([[next((r["gain_pts"] for r in table if r["budget"] == b and r["deadline_min"] == d), np.nan)
                      for d in deadlines] for b in budgets])  # fmt: skip
    ax = axes[-1]
    im = ax.imshow(grid, cmap="RdBu", vmin=-max(5, np.nanmax(abs(grid))), vmax=max(5, np.nanmax(abs(grid))))
    ax.set_xticks(range(len(deadlines)), [f"{d:g}" for d in deadlines])
    ax.set_yticks(range(len(budgets)), [f"${b:g}" for b in budgets])
    for (y, x), v in np.ndenumerate(grid):
        ax.text(x, y, f"{v:+.1f}", ha="center", va="center", fontsize=7)
    ax.set(title="MCP gain over best baseline (pts)", xlabel="deadline (min)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def analysis_table(analysis: str, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one analysis, aggregated per setting and cell."""
    if analysis == "size":
        return _size_table(rows)
    wanted = ("rounds", "events") if analysis == "rounds" else (analysis,)  # noise variants: noise:<what>:<sigma>
    out = []
    for (var, b, d, p), cell in sorted(cell_rates([r for r in rows if r["variant"].split(":")[0] in wanted]).items()):
        out.append(
            {
                "setting": var if analysis in ("noise", "rounds") else p,
                "budget": b,
                "deadline_min": d,
                "p": round(cell["p"], 4),
                "lo": round(cell["lo"], 4),
                "hi": round(cell["hi"], 4),
                "planner_ms_per_decision": round(cell["ms_per_decision"], 2),
                "instances": cell["instances"],
            }
        )
    if analysis == "noise":
        clean = {(r["budget"], r["deadline_min"]): r["p"] for r in out if r["setting"] == "noise:none"}
        for r in out:
            r["change_pts"] = round(100 * (r["p"] - clean[(r["budget"], r["deadline_min"])]), 2)
    return out


def _size_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size bin (subtasks) and cell of the main grid: MCP and the best Retry/Uniform configuration of that bin."""
    bins = ((1, 8), (9, 16), (17, 24), (25, 10**6))
    rates: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    for r in rows:
        if r["variant"] == "" and (r["planner"] == "mcp" or r["planner"].startswith(("retry:", "uniform:"))):
            lo, hi = next(b for b in bins if b[0] <= r["subtasks"] <= b[1])
            per = rates.setdefault((f"{lo}-{hi}", r["budget"], r["deadline_min"]), {})
            per.setdefault(r["planner"], []).append(r["successes"] / r["runs"])
    out = []
    for (size, b, d), per in sorted(rates.items()):
        p = {name: round(float(np.mean(v)), 4) for name, v in sorted(per.items())}  # ties: the first name wins
        base = max((name for name in p if name != "mcp"), key=p.__getitem__, default=None)
        if "mcp" in p and base:
            out.append({"subtasks": size, "budget": b, "deadline_min": d, "instances": len(per["mcp"]),
                        "mcp": p["mcp"], "best_baseline": p[base], "baseline": base,
                        "gain_pts": round(100 * (p["mcp"] - p[base]), 1)})  # fmt: skip
    return out


def write_reports(suite: str, store: Store, out_dir: Path, analyses: Sequence[str]) -> list[Path]:
    """CSV and markdown per analysis, and the main grid's plot, from every row stored so far."""
    written: list[Path] = []

    def tables(table: list[dict[str, Any]], stem: str, columns: Sequence[str] | None = None) -> None:
        written.append(write_csv(table, out_dir / f"{stem}.csv"))  # first: it makes the folder
        (out_dir / f"{stem}.md").write_text(markdown(table, columns))

    main = main_table(store.rows) if "main" in analyses else []
    if main:
        tables(main, "main_grid", ["budget", "deadline_min", "instances", "mcp", "best_retry", "best_retry_config",
                                   "best_uniform", "best_uniform_config", "gain_pts", "gain_lo", "gain_hi",
                                   "planner_ms_per_decision"])  # fmt: skip
        (out_dir / "planner_time.md").write_text(markdown(planner_time_table(main)))
        plot_main(main, suite, out_dir / "main_grid.png")
        written += [out_dir / "main_grid.md", out_dir / "planner_time.md", out_dir / "main_grid.png"]
    for analysis in (["size"] if main else []) + [a for a in analyses if a != "main"]:
        table = analysis_table(analysis, store.rows)
        if table:
            tables(table, analysis)
    return written


def default_data_dir() -> Path | None:
    """$ONTIME_DATA_DIR/workflows (or $ONTIME_DATA_DIR itself) if it holds the data; None otherwise."""
    for sub in ("workflows", "."):
        cand = data_dir(sub)
        if cand is not None and (cand / DATA_FILES["proofflow"]).exists():
            return cand
    return None
