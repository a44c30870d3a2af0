"""``ontime bench``: the papers' experiments from the command line. The engine does not import benchmarks:
this sub-command reaches ``ontime`` through the ``ontime.commands`` entry point group (pyproject.toml)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from runtime.types import OntimeError

__all__ = ["app"]

_err = Console(stderr=True)

app = typer.Typer(help="Reproduce the papers' experiments (scripts in benchmarks/).", no_args_is_help=True)


@app.command("mcp")
def bench_mcp(
    quick: Annotated[bool, typer.Option("--quick", help="The main grid on 24 instances per suite.")] = False,
    suite: Annotated[str, typer.Option(help="Comma-separated suites: proofflow, codeflow.")] = "proofflow,codeflow",
    analyses: Annotated[
        str, typer.Option(help="Comma-separated: main, n, noise, portfolio, widths, rounds (size comes with main).")
    ] = "main",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder holding proofflow_124.json and codeflowbench_repo_99.json "
            "(default: $ONTIME_DATA_DIR/workflows).",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="Runs per instance and planner.")] = 8,
    instances: Annotated[
        int | None,
        typer.Option(min=1, help="Instances per suite in the main grid (all; 24 with --quick).", show_default=False),
    ] = None,
    analysis_instances: Annotated[int, typer.Option(min=1, help="Instances per suite in the other analyses.")] = 24,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")] = os.cpu_count() or 1,
    ray: Annotated[
        str | None, typer.Option("--ray", help="Run on Ray: a cluster address, or 'local' to start one here.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Results folder (one subfolder per suite).")] = Path("benchmarks/results"),
) -> None:
    """The MCP paper's experiments on ProofFlow and CodeFlow graphs: resumable, in processes or on Ray."""
    from benchmarks import mcp_paper as mp

    data = data_dir or mp.default_data_dir()
    if data is None:
        why = "no data: pass --data-dir or set ONTIME_DATA_DIR (the folder with proofflow_124.json)"
        _err.print(f"[red]error:[/] {why}", highlight=False)
        raise typer.Exit(2)
    wanted = [a.strip() for a in analyses.split(",") if a.strip()]
    bad = [a for a in wanted if a not in mp.ANALYSES]
    suites = [x.strip() for x in suite.split(",") if x.strip()]
    bad += [x for x in suites if x not in mp.DATA_FILES]
    if bad:
        _err.print(f"[red]error:[/] unknown {', '.join(bad)} (analyses: {', '.join(mp.ANALYSES)})", highlight=False)
        raise typer.Exit(2)
    n_main = instances or (24 if quick else None)
    n_other = min(analysis_instances, 8) if quick else analysis_instances
    console = Console()
    for name in suites:
        try:
            loaded = mp.load_suite(name, data)
        except OntimeError as exc:
            _err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        for eid, why in loaded.skipped:
            console.print(f"{name}: skipped entry {eid}: {why}")
        folder = out / name / ("quick" if quick else "")
        store = mp.Store(folder / "tasks.jsonl")
        tasks = []
        for analysis in wanted:
            if analysis == "main":
                tasks += mp.main_tasks(name, mp.subset(loaded, n_main), runs)
            else:
                tasks += mp.analysis_tasks(analysis, name, mp.subset(loaded, n_other), runs)
        columns = (TextColumn(f"{name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=_err) as bar:
            done = store.done
            task_id = bar.add_task(name, total=sum(t.key not in done for t in tasks))

            def advance(done: int, _total: int, bar: Progress = bar, task_id: Any = task_id) -> None:
                bar.update(task_id, completed=done)

            ran = mp.run_tasks(tasks, store, data, workers=workers, ray_address=ray, progress=advance)
        console.print(f"{name}: {ran} tasks run, {len(tasks) - ran} already done; results in {folder}")
        for path in mp.write_reports(name, store, folder, wanted):
            console.print(f"  wrote {path}")
        md = folder / "main_grid.md"
        if "main" in wanted and md.exists():
            typer.echo(md.read_text())


@app.command("vine")
def bench_vine(
    workload: Annotated[
        str, typer.Option(help="reflection (the paper's MathQA loop on recorded answers), nl2sql, nl2sql-2, nl2sql-8.")
    ] = "reflection",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="A folder laid out like shared/data (default: $ONTIME_DATA_DIR, else the repo's sample).",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="Runs (seeds) per planner and budget.")] = 600,
    budgets: Annotated[str, typer.Option(help="Comma-separated dollars per question.")] = "",
    planners: Annotated[
        str, typer.Option(help="Comma-separated: murakkab, vinelm, vine, vine-sparse, exact, mcp (default: all).")
    ] = "",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")] = os.cpu_count() or 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as a JSON list.")] = False,
    analysis: Annotated[
        str,
        typer.Option(
            help="frontier (Fig. 7), estimators (Tables 1-2: sparse profiling on the reflection data), "
            "replan (Table 3: replanning time against trie size)."
        ),
    ] = "frontier",
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("benchmarks/results/vine"),
) -> None:
    """Repair-loop planners across budgets on real recorded behaviour (the VineLM paper's Fig. 7), and its
    Tables 1-3 with ``--analysis``."""
    from benchmarks import vine_bench as vb

    if analysis in ("estimators", "replan"):
        from benchmarks import vine_estimators, vine_replan

        data = [] if data_dir is None else ["--data-dir", str(data_dir)]
        if analysis == "estimators":
            vine_estimators.main(data)
        else:
            vine_replan.main([])
        return
    if analysis != "frontier":
        _err.print(f"[red]error:[/] unknown analysis {analysis!r} (frontier, estimators, replan)", highlight=False)
        raise typer.Exit(2)
    argv = ["--workload", workload, "--runs", str(runs), "--workers", str(workers), "--out", str(out)]
    argv += ["--data-dir", str(data_dir)] if data_dir else []
    argv += ["--budgets", budgets] if budgets else []
    argv += ["--planners", planners] if planners else []
    argv += ["--json"] if json_out else []
    try:
        vb.main(argv)
    except OntimeError as exc:
        _err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("bayesflow")
def bench_bayesflow(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="A folder laid out like shared/data/reflection (default: $ONTIME_DATA_DIR, else the repo's sample).",
            show_default=False,
        ),
    ] = None,
    exams: Annotated[str, typer.Option(help="Comma-separated exam names (default: all).")] = "",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds (validation/test splits) per exam.")] = 3,
    methods: Annotated[str, typer.Option(help="Comma-separated methods (default: the six of the paper's table).")] = "",
    ablations: Annotated[bool, typer.Option(help="Add BayesFlow's ablations and best-model.")] = False,
    budget: Annotated[float, typer.Option(help="Optimizer dollars per exam and seed, for every search.")] = 10.0,
    p_flip: Annotated[float, typer.Option(help="Chance that 'reconsider' changes a right answer.")] = 0.0,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")] = os.cpu_count() or 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as a JSON list.")] = False,
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("benchmarks/results/bayesflow"),
) -> None:
    """Generated workflows (BayesFlow, AFlow-style MCTS, random search) against IO, CoT and CoT-SC on the recorded
    real answers of 9 LLMs to 8 exams (the BayesFlow paper's Tables 1-2)."""
    from benchmarks import bayesflow_bench as bb

    argv = ["--seeds", str(seeds), "--budget", str(budget), "--p-flip", str(p_flip), "--workers", str(workers)]
    argv += ["--out", str(out)] + (["--data-dir", str(data_dir)] if data_dir else [])
    argv += (["--exams", exams] if exams else []) + (["--methods", methods] if methods else [])
    argv += (["--ablations"] if ablations else []) + (["--json"] if json_out else [])
    try:
        bb.main(argv)
    except OntimeError as exc:
        _err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
