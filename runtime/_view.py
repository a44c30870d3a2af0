"""The live progress display of ``ontime run``: a sink that keeps a small picture of the run for rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from runtime._compile import COMPILING
from runtime.types import (
    BatchFailed,
    BatchLaunched,
    BudgetReserved,
    BudgetSettled,
    Event,
    RunFinished,
    RunStarted,
    SubtaskCompleted,
    to_usd,
)

if TYPE_CHECKING:
    from runtime._result import RunResult

__all__ = ["RunView", "result_table"]

# Shown until the first launch; while the planner's numba kernels compile (a first run on this machine, see
# runtime._compile), nothing else would say why the run has not started.
PLANNING = "- (planning the first launch)"


class RunView:
    """Feed it every event (it is a sink); rich renders it through ``__rich__``."""

    def __init__(self) -> None:
        self.title = ""
        self.n = 0
        self.done = 0
        self.budget = 1
        self.deadline = 1.0
        self.spent = 0
        self.reserved = 0
        self.t = 0.0
        self.samples = 0
        self.in_flight: dict[int, str] = {}
        self.finished: RunFinished | None = None
        self.compiling = False  # set by the CLI when the planner's kernels start compiling

    def __call__(self, e: Event) -> None:
        self.t = max(self.t, e.t)
        if isinstance(e, RunStarted):
            self.title = f"{e.workflow} · planner {e.planner} · seed {e.seed}"
            self.n, self.budget, self.deadline = e.subtasks, e.budget_pusd, e.deadline_s
        elif isinstance(e, BudgetReserved):
            self.reserved += e.pusd
        elif isinstance(e, BudgetSettled):
            self.reserved -= e.pusd + e.released_pusd
            self.spent += e.pusd
        elif isinstance(e, BatchLaunched):
            self.in_flight[e.batch] = f"{e.subtask} ({e.model} x{e.k})"
            self.samples += e.k
        elif isinstance(e, SubtaskCompleted):
            self.done += 1
        elif isinstance(e, RunFinished):
            self.finished = e
        if isinstance(e, SubtaskCompleted | BatchFailed):
            self.in_flight.pop(e.batch, None)

    def __rich__(self) -> RenderableType:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", width=9)
        grid.add_column(width=24)
        grid.add_column()
        money = f"${to_usd(self.spent):.4f} + ${to_usd(self.reserved):.4f} held / ${to_usd(self.budget):.2f}"
        rows = (  # name, progress bar (total, completed), text
            ("subtasks", max(1, self.n), self.done, f"{self.done}/{self.n} done, {self.samples} samples"),
            ("budget", self.budget, self.spent + self.reserved, money),
            ("time", self.deadline, min(self.t, self.deadline), f"{self.t:.1f}s / {self.deadline:g}s"),
        )
        for name, total, completed, text in rows:
            grid.add_row(name, ProgressBar(total=total, completed=completed, width=24), text)
        flying = ", ".join(list(self.in_flight.values())[:6]) + (" …" if len(self.in_flight) > 6 else "")
        if not self.samples and self.finished is None:
            flying = f"- ({COMPILING})" if self.compiling else PLANNING
        return Group(Text(self.title, style="bold cyan"), grid, Text(f"in flight: {flying or '-'}", style="dim"))


def result_table(r: RunResult) -> RenderableType:
    """The per-subtask summary printed after a run."""
    table = Table(title=None, show_edge=False, header_style="bold")
    for col in ("subtask", "status", "model", "batches", "samples", "cost $", "done at s"):
        table.add_column(col, justify="right" if col in ("batches", "samples", "cost $", "done at s") else "left")
    for sid, o in r.subtasks.items():
        table.add_row(
            escape(sid),
            "[green]complete[/]" if o.completed else "[red]incomplete[/]",
            escape(o.model or "-"),
            str(o.batches),
            str(o.samples),
            f"{o.cost:.4f}",
            "-" if o.completed_at is None else f"{o.completed_at:.1f}",
        )
    verdict = "[bold green]SUCCESS[/]" if r.success else f"[bold red]FAILED[/] ({r.reason})"
    line = Text.from_markup(
        f"{verdict}: {r.completed}/{len(r.subtasks)} subtasks, cost ${r.cost:.4f} of ${r.budget:.2f}, "
        f"elapsed {r.elapsed:.1f}s of {r.deadline:g}s, {len(r.planner_ms)} decisions"
    )
    if r.detail is None:
        return Group(table, line)
    return Group(table, line, Text(r.detail, style="red"))
