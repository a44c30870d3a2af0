"""The ``ontime`` command line: run, eval, predict and validate workflows, and search-agent QA, from a shell.

Bad input exits with status 2 and one line on stderr (``error: ...``), never a traceback. Other packages
add sub-commands through the ``ontime.commands`` entry point group (``ontime bench`` comes from benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import warnings
from contextlib import ExitStack, contextmanager
from functools import partial
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import anyio
import structlog
import typer
from aiohttp import web
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from adapters.chat_agent import ChatAgentModel
from adapters.endpoints import make_backend
from adapters.recorded_answers import AnswerBook, recorded_adapters
from adapters.replay_agent import ReplayModel, read_recording
from adapters.sim_agent import SimAgentModel
from adapters.sim_server import FAULT_KINDS, Faults, SimServer
from planners import ABLATIONS, CONTROLLERS
from runtime._api import open_run
from runtime._compile import COMPILING, compile_notice
from runtime._eval import evaluate
from runtime._predict import Prediction
from runtime._predict import predict as predict_run
from runtime._predict_map import PredictionMap, predict_map
from runtime._program import load_program
from runtime._program_run import execute_program
from runtime._qa_api import LADDER, aanswer, evaluate_qa
from runtime._qa_replay import record_qa
from runtime._resume import resume as resume_run
from runtime._resume import resume_point
from runtime._sinks import TornJournalWarning
from runtime._spec import load_workflow, never_succeeds
from runtime._view import RunView, result_table
from runtime.types import (
    Endpoint,
    ModelSpec,
    OntimeError,
    ProviderError,
    RealClock,
    Reason,
    StopReason,
    UsageError,
    to_usd,
)
from runtime.types._clock import single_error as _one_error
from runtime.types._errors import unreadable
from tools.exams import find_data_dir
from tools.qa_data import load_qa, pool_corpus, read_corpus
from tools.retrieval import BM25Search

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from anyio.abc import TaskStatus

    from adapters.replay_agent import Recording
    from planners.workflow_search_types import RoundStats
    from runtime._api import Run, RunOptions
    from runtime._program_run import ProgramOptions
    from runtime._qa import QAResult
    from runtime._qa_replay import RecordSummary
    from runtime._result import RunResult
    from runtime.types import Adapter, Clock, Event, Workflow

    # What serve-sim calls a source of answers, and how it builds one adapter per model on a clock.
    _AnswerSource = tuple[str, Callable[[Clock], Mapping[str, Adapter]]]

__all__ = ["app", "main"]

app = typer.Typer(
    name="ontime",
    help="Run LLM agent workflows that must finish on time and within budget.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True, emoji=False)  # user text (paths, planner specs) is printed as it is
_out = Console(emoji=False)
T = TypeVar("T")

Spec = Annotated[Path, typer.Argument(help="Workflow spec file (.json, .yaml).", show_default=False)]
Budget = Annotated[float, typer.Option("--budget", "-b", help="Budget in US dollars.", show_default=False)]
Deadline = Annotated[float, typer.Option("--deadline", "-d", help="Deadline in seconds.", show_default=False)]
PlannerOpt = Annotated[
    str | None,
    typer.Option(
        "--planner",
        "-p",
        help="mcp[:n=N:k=K1,K2:models=A,B:ms=C], best-retry, best-uniform, retry[:MODEL[:K]], uniform[:MODEL], exact.",
        show_default="mcp",
    ),
]
Seed = Annotated[int, typer.Option("--seed", "-s", help="Seed of the simulated backend.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
Rounds = Annotated[
    bool,
    typer.Option(
        "--rounds",
        help="Synchronized rounds: ask the planner only once nothing is in flight (the round waits for its "
        "slowest batch), as the MCP paper executes.",
    ),
]


def _fail(message: object) -> NoReturn:
    """Ends the command on bad input: one error line, exit status 2."""
    _fail_with(2, message)


def _fail_with(status: int, message: object) -> NoReturn:
    one_line = str(message).replace("\r", "\\r").replace("\n", "\\n")  # a path or a parser's message may hold some
    _err.print(f"[red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(status)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except OntimeError as exc:
        _fail(exc)


def _with_progress(label: str, total: int, work: Callable[[Callable[[int], None]], T]) -> T:
    """``work(advance)`` under a progress bar on stderr, its bad input reported as by :func:`_guard`; a first
    use on this machine says there that the planner's kernels are compiling."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_err, transient=True) as bar, compile_notice(partial(_compiling, None, True)):
        task = bar.add_task(label, total=total)
        return _guard(lambda: work(partial(bar.advance, task)))


def _compiling(view: RunView | None, say: bool) -> None:
    """The compile notice: a line on stderr (never stdout: ``--json`` prints only the JSON there), and the live
    view's "in flight" line until the first launch."""
    if view is not None:
        view.compiling = True
    if say:
        _err.print(f"note: {COMPILING}", highlight=False, soft_wrap=True)


def _event_logger(path: str | None, stack: ExitStack) -> Any:
    """A structlog logger writing JSON lines to ``path`` ('-' for stderr), or False for no logging; a file that
    cannot be opened ends the command with one error line."""
    if path is None:
        return False
    try:
        # Line-buffered: a write that fails (a full disk) fails at its event, which stops the run with a SinkError.
        stream = sys.stderr if path == "-" else Path(path).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
    except OSError as exc:
        _fail(f"cannot write the log {path!r}: {exc.strerror or exc}")
    if stream is not sys.stderr:
        stack.callback(_close_quietly, stream)
    return structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
    )


def _close_quietly(f: IO[str]) -> None:
    """Close a log whose failed writes were already reported (as the run's SinkError)."""
    with contextlib.suppress(OSError):
        f.close()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ontime {version('ontime')}")
        raise typer.Exit(0)


@app.callback()
def _options(
    _version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    """Run LLM agent workflows that must finish on time and within budget."""


@app.command()
def run(
    spec: Spec,
    budget: Budget,
    deadline: Deadline,
    planner: PlannerOpt = None,
    seed: Seed = 0,
    journal: Annotated[Path | None, typer.Option(help="Write every event to this JSONL file.")] = None,
    json_out: JsonOut = False,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Play the simulated run on a real clock at this many seconds per second (default: virtual time; "
            "a workflow with real endpoints always runs in real time)."
        ),
    ] = None,
    log: Annotated[str | None, typer.Option(help="Log every event as JSON lines to this file ('-': stderr).")] = None,
    keep_siblings: Annotated[bool, typer.Option(help="Let the rest of a batch finish after a success.")] = False,
    rounds: Rounds = False,
    input_text: Annotated[
        str | None,
        typer.Option("--input", help="A program's (.py) input; default: its EXAMPLE.", show_default=False),
    ] = None,
    otel: Annotated[
        bool,
        typer.Option(
            "--otel",
            help="Send the run's spans over OTLP/HTTP, as the OTEL_* environment variables say (ontime[otel]).",
        ),
    ] = False,
) -> None:
    """Run a workflow (a spec, or a program: a .py file, run in the sandbox) once within a budget and a deadline,
    with a live progress display."""
    if spec.suffix == ".py":
        if planner is not None or keep_siblings or rounds or speed is not None:
            _fail("--planner, --keep-siblings, --rounds and --speed are for workflow specs, not programs")
        with ExitStack() as stack:
            traces = _otel_sink(stack) if otel else None
            _run_program(spec, budget, deadline, seed, journal, _event_logger(log, stack), input_text, json_out, traces)
    if input_text is not None:
        _fail("--input is a program's (.py); a workflow spec takes none")
    wf = _guard(lambda: load_workflow(spec))
    view = RunView()
    with ExitStack() as stack:
        options: RunOptions = {
            "planner": planner,
            "seed": seed,
            "journal": journal,
            "log": _event_logger(log, stack),
            "cancel_siblings": not keep_siblings,
            "rounds": rounds,
            "clock": None if speed is None else "real",  # None: virtual for simulated models, real for endpoints
            "speed": 1.0 if speed is None else speed,
            "on_event": _also(view, _otel_sink(stack)) if otel else view,
        }
        stop = stack.enter_context(_terminate_as_interrupt())
        stack.enter_context(compile_notice(partial(_compiling, view, json_out or not _out.is_terminal)))
        try:
            result = _guard(lambda: anyio.run(_run_live, wf, budget, deadline, options, view, json_out, stop))
        except KeyboardInterrupt:  # a signal before the run had started, or a second one while it settled
            _interrupted(view)
            raise typer.Exit(128 + stop[0]) from None
    if result.reason == Reason.INTERRUPTED:
        _interrupted(view)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console = _out
        console.print()
        console.print(result_table(result))
    raise typer.Exit(128 + stop[0] if result.reason == Reason.INTERRUPTED else 0 if result.success else 1)


@app.command()
def resume(
    journal: Annotated[Path, typer.Argument(help="The journal of a run whose process died.", show_default=False)],
    spec: Annotated[
        Path | None, typer.Option(help="The workflow spec (default: the one the journal names).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--journal", help="The resumed run's own journal (default: JOURNAL.resumed.jsonl).", show_default=False
        ),
    ] = None,
    planner: PlannerOpt = None,
    speed: Annotated[
        float | None, typer.Option(help="As for run: the real clock's speed (the crashed run's, if it had one).")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Continue a run whose process died, from its journal: completed subtasks kept, what it spent or held
    charged, the rest of the budget and of the deadline."""
    wf = None if spec is None else _guard(lambda: load_workflow(spec))
    with warnings.catch_warnings(record=True) as torn:  # a line the kill cut short: said once, as a note
        warnings.simplefilter("always", TornJournalWarning)
        point = _guard(lambda: resume_point(journal, speed=1.0 if speed is None else speed))
    for w in torn[:1]:
        _err.print(f"note: {escape(str(w.message))}", highlight=False, soft_wrap=True)
    target = out if out is not None else journal.with_name(journal.stem + ".resumed.jsonl")
    options: RunOptions = {"journal": target}
    if planner is not None:
        options["planner"] = planner
    if speed is not None:
        options["speed"], options["clock"] = speed, "real"
    with compile_notice(partial(_compiling, None, True)), warnings.catch_warnings():
        warnings.simplefilter("ignore", TornJournalWarning)
        result = _guard(lambda: resume_run(journal, wf, **options))
    before = to_usd(point.spent_before_pusd + point.spent_pusd + point.held_pusd)
    _err.print(f"resumed run {point.run_id}: kept {len(point.completed)} completed subtasks; charged ${before:.6f} "
               f"before (spent and held at the crash); journal {escape(str(target))}", highlight=False,
               soft_wrap=True)  # fmt: skip
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _out.print(result_table(result))
    raise typer.Exit(0 if result.success else 1)


def _run_program(
    path: Path,
    budget: float,
    deadline: float,
    seed: int,
    journal: Path | None,
    log: Any,
    text: str | None,
    json_out: bool,
    on_event: Callable[[Event], None] | None,
) -> NoReturn:
    """``ontime run wf.py``: the program runs in the sandbox, its calls under the budget and the deadline; the
    answer, the cost and the time are printed (the result's JSON with ``--json``). Ctrl-C or SIGTERM stops it, and
    what was in flight is settled and journaled first."""
    program = _guard(lambda: load_program(path))
    options: ProgramOptions = {"seed": seed, "journal": journal, "log": log, "on_event": on_event}
    if text is not None:
        options["input"] = text
    with _terminate_as_interrupt() as came:
        try:
            result = _guard(lambda: anyio.run(partial(execute_program, program, budget, deadline, options)))
        except KeyboardInterrupt:
            _err.print("interrupted: what was in flight was cancelled and settled", highlight=False)
            raise typer.Exit(128 + came[0]) from None
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _out.print(result_table(result))
        _out.print(f"answer: {escape(result.answer or '-')}", highlight=False)
    raise typer.Exit(0 if result.success else 1)


def _otel_sink(stack: ExitStack) -> Callable[[Event], None]:
    """``--otel``: a sink configured by the environment, whose export the stack waits for. Imported here, as only
    this option needs OpenTelemetry (an optional extra)."""
    from runtime._otel import OTelSink

    sink = _guard(OTelSink)
    stack.callback(sink.close)
    return sink


def _also(first: Callable[[Event], None], then: Callable[[Event], None]) -> Callable[[Event], None]:
    def both(event: Event) -> None:
        first(event)
        then(event)

    return both


def _interrupted(view: RunView) -> None:
    _err.print(
        f"interrupted at {view.t:.1f}s: spent ${to_usd(view.spent):.4f} of ${to_usd(view.budget):.2f}, "
        f"${to_usd(view.reserved):.4f} still held; {view.done}/{view.n} subtasks done",
        highlight=False,
    )


@contextmanager
def _terminate_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM stops a run as Ctrl-C does (cancel, settle what is in flight, journal the end); the list holds
    the signal that came, for the exit status (128 + its number)."""
    came = [int(signal.SIGINT)]

    def terminated(signum: int, frame: object) -> None:
        came[0] = signum
        signal.raise_signal(signal.SIGINT)  # the event loop's own Ctrl-C handling cancels the run cleanly

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _run_live(
    wf: Workflow, budget: float, deadline: float, options: RunOptions, view: RunView, quiet: bool, came: list[int]
) -> RunResult:
    async with open_run(wf, budget, deadline, **options) as r:  # bad input fails here, before the display starts
        with _one_error():  # so that _guard sees the run's OntimeError itself, not a group of one
            async with anyio.create_task_group() as tg:
                await tg.start(_interrupt_on_signal, r, came)  # handling signals before the run's first step
                try:
                    if quiet:
                        result = await r.execute()
                    else:
                        with Live(view, console=_out, refresh_per_second=10, transient=False):
                            result = await r.execute()
                finally:
                    tg.cancel_scope.cancel()
    return result


async def _interrupt_on_signal(r: Run, came: list[int], *, task_status: TaskStatus[None]) -> None:
    """SIGINT or SIGTERM: cancel every sample, settle what each used, and journal ``run_finished`` with reason
    ``interrupted``; more signals while that happens change nothing. The handlers that were there before
    (Python's Ctrl-C, :func:`_terminate_as_interrupt`) are put back when the run is over."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with anyio.open_signal_receiver(*before) as signals:
            task_status.started()
            async for signum in signals:
                came[0] = int(signum)
                r.interrupt()
    finally:
        for sig, handler in before.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(sig, handler)


@app.command("report")
def report_(
    journal: Annotated[Path, typer.Argument(help="A run's journal (the JSONL file of --journal).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path("report.html"),
    png: Annotated[
        Path | None,
        typer.Option(help="Also draw the timeline and the money as a PNG here (needs matplotlib).", show_default=False),
    ] = None,
) -> None:
    """Draw a run from its journal: one HTML page that works offline, with a lane per subtask, the money against the
    budget and the deadline, and a table per subtask."""
    import warnings

    from runtime._run_report import report as draw
    from runtime._sinks import TornJournalWarning

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", TornJournalWarning)
        drawn = _guard(lambda: draw(journal, out=out, png=png))
    for w in said:  # a process killed mid-line: the page shows the run up to there, marked unfinished
        _err.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
    outcome = "unfinished" if drawn.end is None else "success" if drawn.end.success else drawn.end.reason
    wrote = " and ".join(escape(str(p)) for p in (out, png) if p is not None)
    summary = f"wrote {wrote}: run of {escape(drawn.workflow)}, {len(drawn.lanes)} subtasks, {outcome}"
    _out.print(summary, highlight=False, soft_wrap=True)


RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Spread the runs over Ray (pip install 'ontime\\[ray]'): a cluster address, 'auto', or 'local' to start "
        "one here with --workers CPUs. Same numbers as processes.",
        show_default=False,
    ),
]


@app.command("eval")
def eval_(
    spec: Spec,
    budget: Budget,
    deadline: Deadline,
    planner: PlannerOpt = None,
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Number of runs (seeds SEED..SEED+N-1).")] = 1000,
    seed: Seed = 0,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Worker processes (default: one per CPU).", show_default=False),
    ] = None,
    json_out: JsonOut = False,
    rounds: Rounds = False,
    ray: RayOpt = None,
) -> None:
    """Estimate the probability of finishing: N independent runs in virtual time, summarized."""
    wf = _guard(lambda: load_workflow(spec))
    report = _with_progress("eval", runs, lambda step: evaluate(wf, budget, deadline, planner=planner, runs=runs,
                            seed=seed, workers=workers, progress=step, rounds=rounds, ray=ray))  # fmt: skip
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    table = Table(show_header=False, show_edge=False)
    for key, value in report.to_dict().items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()) or "-"
        table.add_row(key, str(value))
    _out.print(table)


@app.command()
def predict(
    spec: Spec,
    budget: Annotated[
        float | None, typer.Option("--budget", "-b", help="Budget in US dollars.", show_default=False)
    ] = None,
    deadline: Annotated[
        float | None, typer.Option("--deadline", "-d", help="Deadline in seconds.", show_default=False)
    ] = None,
    budgets: Annotated[
        str | None,
        typer.Option(help="A map over budgets instead, in US dollars, comma-separated: 0.5,1,2,4.", show_default=False),
    ] = None,
    deadlines: Annotated[
        str | None,
        typer.Option(help="A map over deadlines instead, in seconds, comma-separated: 300,600.", show_default=False),
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="Write the map as a heatmap PNG here (needs matplotlib).", show_default=False)
    ] = None,
    planner: PlannerOpt = None,
    runs: Annotated[
        int, typer.Option("--runs", "-n", min=1, help="Closed-loop simulations at most (per cell of a map).")
    ] = 1000,
    precision: Annotated[
        float | None,
        typer.Option(help="Stop once the 95% interval's half-width is at most this (e.g. 0.03).", show_default=False),
    ] = None,
    seed: Seed = 0,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="Threads (kernel) or processes (executor); default: all cores, or 1.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOut = False,
    rounds: Rounds = False,
    ray: RayOpt = None,
) -> None:
    """Predict the chance of finishing before spending anything: closed-loop simulations of the planner.

    With --budgets or --deadlines (or both), a map: the chance, its interval and the expected cost at every
    budget x deadline, the answer to "how much money and time does this workflow need?".
    """
    wf = _guard(lambda: load_workflow(spec))
    if budgets is None and deadlines is None and png is None:
        if budget is None or deadline is None:
            _fail("predict needs --budget and --deadline (or --budgets / --deadlines for a map)")
        result = _with_progress("predict", runs, lambda step: predict_run(wf, budget, deadline, planner=planner,
                                runs=runs, precision=precision, seed=seed, workers=workers, progress=step,
                                rounds=rounds, ray=ray))  # fmt: skip
        if json_out:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        _out.print(_prediction_table(result))
        return
    levels = _map_levels("budget", budget, budgets), _map_levels("deadline", deadline, deadlines)
    total = runs * len(levels[0]) * len(levels[1])
    grid = _with_progress("map", total, lambda step: predict_map(wf, *levels, planner=planner, runs=runs,
                          precision=precision, seed=seed, workers=workers, progress=step, rounds=rounds,
                          ray=ray))  # fmt: skip
    if png is not None:
        _err.print(f"wrote {escape(str(_guard(lambda: grid.to_png(png))))}", highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(grid.rows(), indent=2))
        return
    _out.print(_map_table(grid))


def _prediction_table(result: Prediction) -> Table:
    lo, hi = result.ci95
    table = Table(show_header=False, show_edge=False)
    table.add_row("planner", result.planner)
    table.add_row("p_success", f"{result.p_success:.3f}  (95% CI {lo:.3f}-{hi:.3f}, {result.runs} runs)")
    table.add_row("expected_cost", f"${result.expected_cost:.4f} of ${result.budget:g}")
    table.add_row("expected_elapsed", f"{result.expected_elapsed:.1f} s of {result.deadline:g} s")
    table.add_row("took", f"{result.wall_s:.1f} s ({result.method})")
    return table


def _map_levels(name: str, one: float | None, many: str | None) -> list[float]:
    """A map's budgets or deadlines: the comma-separated list, or the single --budget / --deadline."""
    if many is None:
        if one is None:
            _fail(f"a map needs --{name} or --{name}s")
        return [one]
    if one is not None:
        _fail(f"give --{name} or --{name}s, not both")
    try:
        return [float(x) for x in many.split(",")]
    except ValueError:
        _fail(f"--{name}s must be numbers separated by commas, not {many!r}")


def _map_table(grid: PredictionMap) -> Table:
    """Budgets down, deadlines across; each cell its chance, 95% interval and expected cost."""
    table = Table(title=escape(f"P(finish within both) with {grid.cells[0].planner}, {grid.cells[0].runs} runs a cell"))
    table.add_column("budget \\ deadline", justify="right")
    for d in grid.deadlines:
        table.add_column(f"{d:g} s", justify="right")
    for b in grid.budgets:
        cells = [grid.cell(b, d) for d in grid.deadlines]
        table.add_row(f"${b:g}", *(f"{c.p_success:.3f} ({c.ci95[0]:.2f}-{c.ci95[1]:.2f}) ${c.expected_cost:.3g}"
                                   for c in cells))  # fmt: skip
    return table


@app.command()
def validate(spec: Spec) -> None:
    """Check a workflow spec and print what it holds, with a warning for each subtask that can never succeed."""
    wf = _guard(lambda: load_workflow(spec))
    typer.echo(f"{spec}: ok: workflow {wf.name!r}, {len(wf.subtasks)} subtasks, models {', '.join(wf.models)}")
    for warning in never_succeeds(wf):
        _err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


@app.command()
def qa(
    question: Annotated[str, typer.Argument(help="The question.", show_default=False)],
    corpus: Annotated[Path, typer.Option(help="Corpus: JSONL rows {id, title, text}.", show_default=False)],
    tool_calls: Annotated[int, typer.Option("--tool-calls", min=0, help="Hard cap on searches.")] = 3,
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="Hard cap on output tokens.")] = 500,
    controller: Annotated[str, typer.Option(help="voi, bavt, bats, search-o1, search-then-answer.")] = "voi",
    finalize: Annotated[bool, typer.Option(help="Apply the risk-controlled finalizer.")] = True,
    backbone: Annotated[
        str, typer.Option(help="Simulated backbone: qwen3-32b, gpt-5.4-mini, qwen3.5-122b.")
    ] = "qwen3-32b",
    seed: Seed = 0,
    json_out: JsonOut = False,
    log: Annotated[str | None, typer.Option(help="Log every event as JSON lines to this file ('-': stderr).")] = None,
    journal: Annotated[Path | None, typer.Option(help="Write every event to this JSONL file.")] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="Run the model on this OpenAI- or Anthropic-compatible base URL.", show_default=False),
    ] = None,
    provider: Annotated[str, typer.Option(help="With --endpoint: openai or anthropic.")] = "openai",
    model: Annotated[str, typer.Option(help="With --endpoint: the endpoint's model id.")] = "gpt-4o-mini",
    api_key_env: Annotated[
        str | None, typer.Option(help="With --endpoint: the variable holding the key.", show_default=False)
    ] = None,
) -> None:
    """Answer a multi-hop question with the search agent under a tool-call cap and an output-token cap."""
    if endpoint is None:
        who = f"the simulated {backbone} search agent (no model is called; --endpoint URL runs a real one)"
    else:
        who = f"{model} at {endpoint}"

    async def ask(stack: ExitStack) -> QAResult:
        agent = None if endpoint is None else _endpoint_agent(endpoint, provider, model, api_key_env, tokens)
        try:
            return await aanswer(question, tool_calls=tool_calls, tokens=tokens, controller=controller,
                                 corpus=read_corpus(corpus), model=agent, finalize=finalize, seed=seed,
                                 backbone=backbone, log=_event_logger(log, stack), journal=journal)  # fmt: skip
        finally:
            if agent is not None:
                await agent.aclose()

    with ExitStack() as stack:
        r = _guard(lambda: anyio.run(ask, stack))
    if json_out:
        steps = [{"action": s.action, "directive": s.directive, "output_tokens": s.output_tokens, "query": s.query,
                  "hits": [h.title for h in s.hits], "answer": s.answer} for s in r.trace.steps]  # fmt: skip
        typer.echo(json.dumps({"answer": r.answer, "base_answer": r.base_answer, "refined": r.refined,
                               "finalized": r.finalized, "tool_calls": r.tool_calls, "output_tokens": r.output_tokens,
                               "reason": r.reason, "detail": r.detail, "controller": r.controller, "model": who,
                               "steps": steps}, indent=2))  # fmt: skip
    else:
        _print_answer(r, f"{r.controller}: {tool_calls} tool calls, {tokens} output tokens; answered by {who}")
    if r.reason is StopReason.UNREACHABLE:
        _fail_with(1, f"{who} could not be reached: {r.detail}")


def _endpoint_agent(endpoint: str, provider: str, model: str, api_key_env: str | None, tokens: int) -> ChatAgentModel:
    """The search agent's model on a real endpoint, behind its retries; the key comes from the environment."""
    if provider not in ("openai", "anthropic"):
        raise UsageError(f"--provider must be openai or anthropic, not {provider!r}")
    ep = Endpoint(model=model, base_url=endpoint, api_key_env=api_key_env)
    return ChatAgentModel(make_backend(ModelSpec(model, provider, 0.0, 0.0, 1.0, 0.0, tokens, ep)), model)


def _print_answer(r: QAResult, title: str) -> None:
    table = Table(title=title)
    for col in ("#", "told", "did", "tokens", "query / answer", "retrieved"):
        table.add_column(col)
    for k, s in enumerate(r.trace.steps, 1):
        table.add_row(str(k), s.directive or "-", s.action, str(s.output_tokens), escape(s.answer or s.query or ""),
                      escape(", ".join(h.title for h in s.hits[:3])))  # fmt: skip
    console = _out
    console.print(table)
    note = f" (finalizer: {r.base_answer!r} -> {r.answer!r})" if r.finalized else ""
    spent = f"{r.tool_calls} tool calls, {r.output_tokens} output tokens"
    console.print(f"answer: [bold]{escape(r.answer)}[/]{escape(note)}; {spent}", highlight=False)


@app.command("qa-eval")
def qa_eval(
    dataset: Annotated[Path, typer.Option(help="HotpotQA, MuSiQue or 2WikiMultihopQA JSONL.", show_default=False)],
    ladder: Annotated[bool, typer.Option(help="The paper's budget ladder (1,100) (2,200) (2,300) (3,500).")] = True,
    tool_calls: Annotated[
        int | None, typer.Option("--tool-calls", min=0, help="One cell instead of the ladder.")
    ] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", min=1, help="With --tool-calls.")] = None,
    controllers: Annotated[
        str, typer.Option(help="Comma-separated controllers.")
    ] = "voi,bavt,bats,search-o1,search-then-answer",
    ablations: Annotated[bool, typer.Option(help="Add the Stage-1 ablations of VOI (Table 1).")] = False,
    finalizer: Annotated[str, typer.Option(help="both, on or off.")] = "both",
    limit: Annotated[int | None, typer.Option(min=1, help="First N questions only.", show_default=False)] = None,
    backbone: Annotated[str, typer.Option(help="Simulated backbone.")] = "qwen3-32b",
    seed: Seed = 0,
    json_out: JsonOut = False,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Replay the model turns recorded by ontime qa-record instead of the simulated model (default "
            "budgets: the recording's).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Evaluate controllers on a QA data set: EM, F1 (95% intervals), tool calls, output tokens, cap violations."""
    names = [c.strip() for c in controllers.split(",") if c.strip()] + (list(ABLATIONS) if ablations else [])
    fins = {"both": (False, True), "on": (True,), "off": (False,)}.get(finalizer)
    if fins is None:
        _fail("--finalizer is both, on or off")
    examples = _guard(lambda: load_qa(dataset, limit=limit))
    if (tool_calls is None) != (tokens is None):
        _fail("give both --tool-calls and --tokens for a single cell")
    grid = list(LADDER) if tool_calls is None or tokens is None else [(tool_calls, tokens)]
    agent, index, who = None, None, f"backbone {backbone}"
    if replay is not None:
        recording = _guard(lambda: read_recording(replay))
        agent, who = ReplayModel(recording), f"replay of {recording.header['model']} ({replay.name})"
        grid = [(b[0], b[1]) for b in recording.header["budgets"]] if tool_calls is None else grid
        index = _guard(lambda: _recorded_index(recording, dataset))
    total = len(examples) * len(grid) * len(names) * len(fins)
    rows = _with_progress("qa-eval", total, lambda step: evaluate_qa(examples, controllers=names, ladder=grid,
                          finalize=fins, backbone=backbone, seed=seed, progress=step, model=agent,
                          search=index))  # fmt: skip
    if json_out:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = Table(title=escape(f"{dataset.name}: {len(examples)} questions, {who}"))
    for col in ("budget", "controller", "stage 2", "EM", "F1 [95% CI]", "tools", "tokens", "violations", "finalized"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.budget, r.controller, "on" if r.finalizer else "off", f"{r.em:.3f}",
                      f"{r.f1:.3f} [{r.f1_lo:.3f}, {r.f1_hi:.3f}]", f"{r.tool_calls:.2f}",
                      f"{r.output_tokens:.0f}", str(r.cap_violations), str(r.finalized))  # fmt: skip
    _out.print(table)


def _recorded_index(recording: Recording, dataset: Path) -> BM25Search:
    """The index the recording searched: the paragraphs of the questions it was made on, from ``dataset``."""
    by_id = {ex.id: ex for ex in load_qa(dataset)}
    ids = recording.header["questions"]
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise UsageError(f"{dataset} lacks question {missing[0]!r} of the recording: it was made on another data set")
    return BM25Search(pool_corpus(by_id[i] for i in ids))


@app.command("qa-record")
def qa_record(
    endpoint: Annotated[
        str, typer.Option(help="The model's OpenAI- or Anthropic-compatible base URL.", show_default=False)
    ],
    model: Annotated[str, typer.Option(help="The endpoint's model id.", show_default=False)],
    dataset: Annotated[Path, typer.Option(help="HotpotQA, MuSiQue or 2WikiMultihopQA JSONL.", show_default=False)],
    out: Annotated[Path, typer.Option(help="The recording to write (JSONL; must not exist).", show_default=False)],
    budgets: Annotated[
        list[str] | None,
        typer.Option(
            help='A budget TOOL_CALLS,TOKENS to record at; repeat it, or give several in one ("1,100 2,200").',
            show_default="the ladder 1,100 2,200 2,300 3,500",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="First N questions only.", show_default=False)] = None,
    controllers: Annotated[
        str, typer.Option(help="Comma-separated controllers whose own runs are recorded (default: all, ablations too).")
    ] = ",".join([*CONTROLLERS, *ABLATIONS]),
    explore: Annotated[
        bool,
        typer.Option(
            help="Also record every directive at every reachable step, so that any controller replays (exponential: "
            "over 10,000 calls a question at the default ladder); by default only the named controllers' runs."
        ),
    ] = False,
    provider: Annotated[str, typer.Option(help="openai or anthropic.")] = "openai",
    api_key_env: Annotated[
        str | None, typer.Option(help="The variable holding the key (never written).", show_default=False)
    ] = None,
) -> None:
    """Record a real model's search-agent turns once, for ontime qa-eval --replay to compare controllers offline."""
    grid = _guard(lambda: _budgets(budgets))
    examples = _guard(lambda: load_qa(dataset, limit=limit))
    names = [c.strip() for c in controllers.split(",") if c.strip()]

    async def go(step: Callable[[int], None]) -> RecordSummary | ProviderError:
        agent = _endpoint_agent(endpoint, provider, model, api_key_env, max(t for _, t in grid))
        try:
            return await record_qa(examples, model=agent, out=out, model_id=model, dataset=dataset.name, ladder=grid,
                                   controllers=names, explore=explore, progress=step)  # fmt: skip
        except ProviderError as exc:  # not bad input: exit status 1, as ontime qa does for an endpoint out of reach
            return exc
        finally:
            await agent.aclose()

    done = _with_progress("qa-record", len(examples) * len(grid), lambda step: anyio.run(go, step))
    if isinstance(done, ProviderError):
        _fail_with(1, f"{model} at {endpoint} failed ({done}); {out} keeps the questions recorded until then")
    _out.print(
        f"{escape(str(out))}: {done.total} endpoint calls for {len(done.calls)} questions "
        f"(per question: mean {done.total / len(done.calls):.1f}, max {max(done.calls)}); {done.runs} agent runs",
        highlight=False,
    )


def _budgets(values: list[str] | None) -> list[tuple[int, int]]:
    """``["1,100 2,200", "3,500"]`` as budgets; none given: the ladder."""
    if not values:
        return list(LADDER)
    grid = []
    for item in (w for v in values for w in v.split()):
        tools, _, tokens = item.partition(",")
        if not (tools.isdigit() and tokens.isdigit() and int(tokens) > 0):
            raise UsageError(f"--budgets {item!r}: a budget is TOOL_CALLS,TOKENS (like 2,200)")
        grid.append((int(tools), int(tokens)))
    return grid


@app.command("serve-sim")
def serve_sim(
    spec: Annotated[
        Path | None,
        typer.Argument(
            help="Workflow spec file (.json, .yaml); optional with --recorded-answers or --workflowgen.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    speed: Annotated[
        float, typer.Option(help="Divide every latency (the profiles' and the answering models') by this.")
    ] = 1.0,
    seed: Seed = 0,
    faults: Annotated[float, typer.Option(help="Fault rate per request, split evenly over the five kinds.")] = 0.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="One kind's rate, e.g. --fault rate_limit=0.1 (kinds: rate_limit, server_error, drop, "
            "hang, malformed); overrides --faults for that kind."
        ),
    ] = None,
    retry_after: Annotated[float, typer.Option(help="Seconds a simulated 429 asks clients to wait.")] = 0.2,
    api_key_env: Annotated[
        str | None, typer.Option(help="Require the key held by this environment variable.", show_default=False)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print a line per request.")] = False,
    qa_agent: Annotated[
        bool, typer.Option("--qa-agent", help="Also answer search-agent turns (ontime qa --endpoint), simulated.")
    ] = False,
    backbone: Annotated[str, typer.Option(help="Simulated search-agent backbone, with --qa-agent.")] = "qwen3-32b",
    ignore_max_tokens: Annotated[
        bool, typer.Option(help="Answer search-agent turns past their max_tokens (to test the cap audit).")
    ] = False,
    recorded_answers: Annotated[
        Path | None,
        typer.Option(
            help="Also serve the reflection data's real models (DIR holds renze_attempts.csv and exams/, or "
            "reflection/ with them): exam prompts get each model's recorded answer and tokens.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    workflowgen: Annotated[
        str | None,
        typer.Option(
            help="Also serve a SIMULATED executor (models claude-3-7-sonnet and qwen2.5-7b-instruct) on the paper's "
            "data sets: DIR holds their split files (gsm8k_test.jsonl, ...) or a workflowgen/ folder of them; "
            "`sample` is the shipped slice. Its answers, tokens and latencies are simulated, not a real model's "
            "(adapters/sim_solver.py documents each problem's difficulty).",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a workflow's profiles, real models' recorded exam answers, or a simulated executor on the paper's
    data sets over the OpenAI and Anthropic APIs, with injected faults, until Ctrl-C.

    Only the recorded answers are real; with --workflowgen the answers, token counts and latencies are simulated
    (a documented model of each problem's difficulty and each model's skill), and so is any score measured on
    them."""

    def build() -> tuple[SimServer, list[str]]:
        rates = dict.fromkeys(FAULT_KINDS, faults / len(FAULT_KINDS))
        for item in fault or []:
            kind, _, value = item.partition("=")
            if kind not in FAULT_KINDS:
                raise UsageError(f"unknown fault kind {kind!r} (kinds: {', '.join(FAULT_KINDS)})")
            try:
                rates[kind] = float(value)
            except ValueError:
                raise UsageError(f"--fault {item!r}: the rate must be a number") from None
        key = None
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise UsageError(f"--api-key-env {api_key_env}: that variable is not set")
        if spec is None and recorded_answers is None and workflowgen is None:
            raise UsageError("give a workflow spec, --recorded-answers DIR or --workflowgen DIR (or several)")
        sources: list[_AnswerSource] = []
        if recorded_answers is not None:
            book = AnswerBook.load(find_data_dir(recorded_answers))
            sources.append(("recorded answers", partial(recorded_adapters, book, seed=seed)))
        if workflowgen is not None:
            sources.append(_workflowgen_source(workflowgen, seed))
        answers, what = _answering(sources, RealClock(speed))
        server = SimServer(
            None if spec is None else load_workflow(spec),
            seed=seed,
            speed=speed,
            faults=Faults(**rates, retry_after_s=retry_after),
            api_key=key,
            on_served=None if quiet else _print_served,
            agent=SimAgentModel(backbone, seed) if qa_agent else None,
            ignore_max_tokens=ignore_max_tokens,
            answers=answers,
        )
        return server, ([] if server.workflow is None else [f"workflow {server.workflow.name!r}"]) + what

    server, what = _guard(build)
    url = f"http://{host}:{port}"
    urls = f"(OpenAI base_url {url}/v1, Anthropic base_url {url})"
    banner = f"serve-sim: {' and '.join(what)} on {url} {urls}; Ctrl-C to stop"
    try:
        # aiohttp's own runner: it handles SIGINT and SIGTERM and gives requests in flight a second to end
        web.run_app(
            server.app(),
            host=host,
            port=port,
            handler_cancellation=True,
            shutdown_timeout=1.0,
            access_log=None,
            print=lambda _: _err.print(banner, highlight=False),
        )
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    _err.print(f"serve-sim: stopped after {len(server.record)} requests", highlight=False)


def _answering(sources: list[_AnswerSource], clock: Clock) -> tuple[dict[str, Adapter], list[str]]:
    """Every source's adapters, all on the one clock given (the server's speed, so their latencies scale as its
    profiles' do), and a line for the banner per source.

    Raises:
        UsageError: two sources answer a model of the same name.
    """
    answers: dict[str, Adapter] = {}
    owner: dict[str, str] = {}
    what = []
    for label, make in sources:
        built = make(clock)
        for model in built:
            if model in owner:
                raise UsageError(f"model {model!r} is served twice: by {owner[model]} and by {label}")
            owner[model] = label
        answers.update(built)
        what.append(f"{label} of {len(built)} models ({', '.join(built)})")
    return answers, what


def _workflowgen_source(where: str, seed: int) -> _AnswerSource:
    """The simulated executor's models over every split of every data set in ``where`` (see ``--workflowgen``).

    Raises:
        UsageError: no such folder, no data set in it, or a malformed split file.
    """
    from adapters.sim_solver import MODELS as SOLVERS
    from adapters.sim_solver import SimSolver
    from tools.workflowgen import DATASETS, EXAMPLES, load_dataset

    folder = EXAMPLES if where == "sample" else Path(where)
    if (folder / "workflowgen").is_dir():
        folder = folder / "workflowgen"
    if not folder.is_dir():
        raise UsageError(f"--workflowgen {where}: no such folder (`sample`: the shipped slice)")
    problems = []
    for name in DATASETS:  # the validation file is <name>_validate.jsonl or, for MMLU-Pro, _validation.jsonl
        if any(folder.glob(f"{name}_valid*.jsonl")):
            problems += load_dataset(name, folder, "validate")
        if any(folder.glob(f"{name}_test*.jsonl")):
            problems += load_dataset(name, folder, "test")
    if not problems:
        raise UsageError(f"--workflowgen {where}: no split file of the paper's data sets (like gsm8k_test.jsonl)")
    label = f"SIMULATED answers ({len(problems)} workflowgen problems)"
    return label, lambda clock: {m: SimSolver(problems, m, clock=clock, seed=seed) for m in SOLVERS}


@app.command("generate")
def generate_(
    task: Annotated[
        str,
        typer.Option(
            "--task",
            "-t",
            help="exam:<exam> (recorded real answers) or gsm8k, math, drop, hotpotqa, "
            "mbpp, humaneval, mmlu_pro (simulated executor).",
            show_default=False,
        ),
    ],
    budget: Annotated[
        float,
        typer.Option("--budget", "-b", help="The search's budget in dollars (never exceeded).", show_default=False),
    ],
    deadline: Annotated[
        float, typer.Option("--deadline", "-d", help="The search's deadline in (virtual) seconds.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the workflow program.")] = Path("wf.py"),
    method: Annotated[str, typer.Option(help="bayesflow, aflow (AFlow-style MCTS) or random.")] = "bayesflow",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="A folder laid out like shared/data (default: $ONTIME_DATA_DIR, else the repo's sample).",
            show_default=False,
        ),
    ] = None,
    serve_url: Annotated[
        str,
        typer.Option(
            help="The written program's models are served here (an `ontime serve-sim --recorded-answers` "
            "for exam tasks)."
        ),
    ] = "http://127.0.0.1:8765/v1",
    executors: Annotated[
        Path | None,
        typer.Option(
            help="The models a workflow may call, as a JSON models block of real endpoints (default: the "
            "task's recorded or simulated ones).",
            show_default=False,
        ),
    ] = None,
    meta: Annotated[
        Path | None,
        typer.Option(
            help="The meta-LLM as a JSON model entry of a spec (an OpenAI or Anthropic endpoint with its "
            "prices); default: the simulated meta-LLM, in virtual time.",
            show_default=False,
        ),
    ] = None,
    seed: Seed = 0,
    journal: Annotated[Path | None, typer.Option(help="Write every event of the search to this JSONL file.")] = None,
    json_out: JsonOut = False,
) -> None:
    """Generate a workflow for a task by BayesFlow (or AFlow-style MCTS, or random search) with the simulated
    meta-LLM, within a budget and a deadline for the whole search, and write the best one as a program that
    `ontime run` runs."""
    from runtime._generate import METHODS, generate, load_task, program_file

    if method not in METHODS:
        _fail(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    models_block = None if executors is None else _guard(lambda: _json_object(executors, "--executors"))
    gen_task = _guard(lambda: load_task(task, data_dir=data_dir, seed=seed, executors=models_block))
    meta_entry = None if meta is None else _guard(lambda: _json_object(meta, "--meta"))
    columns = (TextColumn(method), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=_err, transient=True, disable=json_out) as bar:
        rounds = bar.add_task("starting", total=gen_task.spec.max_steps if method == "bayesflow" else None)

        def step(stats: RoundStats) -> None:
            bar.update(rounds, completed=stats.round, description=f"best {stats.best_reward:.3f}, "
                       f"{stats.meta_calls} meta calls")  # fmt: skip

        found = _guard(lambda: anyio.run(partial(generate, gen_task, budget, deadline, method=method, seed=seed,
                                                 journal=journal, on_round=step, meta=meta_entry)))  # fmt: skip
    if found.best is None:
        _fail(f"the search found no workflow ({found.search.stop}; spent ${found.run.cost:.4f})")
    models = gen_task.served(serve_url)
    out.write_text(program_file(found.best, gen_task, models=models, method=method), encoding="utf-8")
    best = found.search.best
    assert best is not None
    summary = {"task": task, "method": method, "out": str(out), "validation_score": best.score.value,
               "cost_per_question_usd": best.score.cost_usd, "optimizer_cost_usd": found.run.cost,
               "elapsed_s": found.run.elapsed, "workflows_scored": len(found.search.pool),
               "meta_calls": found.search.meta_calls, "stop": found.search.stop}  # fmt: skip
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    _out.print(
        f"{method} on {escape(task)}: validation score {best.score.value:.3f} at ${best.score.cost_usd:.5f} per "
        f"question; {len(found.search.pool)} workflows scored, {found.search.meta_calls} meta calls, search spent "
        f"${found.run.cost:.4f} in {found.run.elapsed:.0f} s ({found.search.stop}); wrote {escape(str(out))}",
        highlight=False,
    )


def _json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object read from ``path``.

    Raises:
        UsageError: the file cannot be read or holds something else.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{what} {path}: {unreadable(exc)}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path}: a JSON object (a spec's model entry), not {type(data).__name__}")
    return data


@app.command("profile")
def profile_(
    spec: Spec,
    budget: Annotated[
        float, typer.Option("--budget", "-b", help="Profiling budget in dollars (never exceeded).", show_default=False)
    ],
    deadline: Annotated[
        float, typer.Option("--deadline", "-d", help="Profiling deadline in seconds.", show_default=False)
    ],
    questions: Annotated[
        int | None,
        typer.Option("--questions", "-q", help="Questions (fresh runs) per subtask at most.", show_default="no limit"),
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option("--depth", "-k", help="Invocations per path of a loop subtask at most.", show_default="horizon"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the measured spec.", show_default="SPEC.measured.json"),
    ] = None,
    against: Annotated[
        str,
        typer.Option(help="endpoints (the spec's), serve-sim (started on loopback from SPEC), recorded:FILE."),
    ] = "endpoints",
    attempts: Annotated[
        Path | None, typer.Option(help="The attempts file of --against recorded.", show_default=False)
    ] = None,
    estimator: Annotated[str, typer.Option(help="vinelm_lite, vinelm or vinelm_eb.")] = "vinelm_lite",
    seed: Seed = 0,
    speed: Annotated[float, typer.Option(help="With --against serve-sim: divide its latencies by this.")] = 50.0,
    json_out: JsonOut = False,
) -> None:
    """Measure SPEC's profiles by running its models (cascade sampling) and write a spec of the measured ones."""
    from runtime._profile import AGAINST, profile, write

    kind, _, path = against.partition(":")
    if kind not in AGAINST or (path and kind != "recorded"):
        _fail(f"--against must be endpoints, serve-sim or recorded:FILE, not {against!r}")
    recorded = Path(path) if path else attempts
    target = out if out is not None else spec.with_name(spec.stem + ".measured.json")
    columns = (TextColumn("profile"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=_err, transient=True) as bar:
        task = bar.add_task("$0", total=max(budget, 1e-12))

        def step(spent_pusd: int, invocations: int) -> None:
            spent = to_usd(spent_pusd)
            bar.update(task, completed=spent, description=f"${spent:.4f} of ${budget:g}, {invocations} invocations")

        report = _guard(lambda: profile(spec, budget=budget, deadline=deadline, questions=questions, depth=depth,
                                        against=kind, recorded=recorded, estimator=estimator,  # type: ignore[arg-type]
                                        seed=seed, speed=speed, progress=step))  # fmt: skip
    _guard(lambda: write(report, target))
    if json_out:
        typer.echo(json.dumps({**report.to_dict(), "out": str(target)}, indent=2))
        return
    table = Table("subtask", "path", "rate", "95% interval", "count", show_edge=False)
    for m in report.subtasks:
        for key, r in m.rates_dict().items():
            table.add_row(m.id, key, f"{r['rate']:.3f}", f"[{r['low']:.3f}, {r['high']:.3f}]", str(r["count"]))
    _out.print(table)
    _out.print(
        f"spent ${report.spent:.6f} of ${budget:g} in {report.elapsed:.1f} s, {report.invocations} invocations, "
        f"stopped: {report.stopped}; wrote {escape(str(target))}",
        highlight=False,
    )


def _print_served(r: Any) -> None:
    _err.print(
        f"{r.api} {r.model} {r.subtask} n={r.n}: {r.status}, {r.input_tokens} in, {r.total_output_tokens} out",
        highlight=False,
    )


for _plugin in entry_points(group="ontime.commands"):
    app.add_typer(_plugin.load(), name=_plugin.name)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
