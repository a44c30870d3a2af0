"""How much money and time a workflow needs: :func:`runtime.predict` over a grid of budgets x deadlines.

Every cell is the prediction :func:`runtime.predict` gives for its budget and deadline, with the same seed,
so neighbouring cells compare on the same simulated runs (common random numbers: the map is smoother than
its intervals suggest, and a cell equals a lone ``predict`` of it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from runtime._eval import check_many
from runtime._predict import PREDICT_SEED_OFFSET, Prediction, predict
from runtime.types import UsageError
from runtime.types._errors import unreadable
from runtime.types._money import check_budget, check_limit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from os import PathLike

    from runtime._api import PlanOptions, WorkflowLike

__all__ = ["MAX_MAP_CELLS", "PredictionMap", "predict_map"]

MAX_MAP_CELLS = 400  # budgets x deadlines: a bigger grid is a typo more often than a plan


@dataclass(frozen=True, slots=True)
class PredictionMap:
    """Predictions over budgets x deadlines (both ascending); ``cells`` budget-major."""

    budgets: tuple[float, ...]
    deadlines: tuple[float, ...]
    cells: tuple[Prediction, ...]

    def cell(self, budget: float, deadline: float) -> Prediction:
        """The prediction at one of the map's budgets and deadlines.

        Raises:
            UsageError: the map has no such budget or deadline.
        """
        if budget not in self.budgets or deadline not in self.deadlines:
            raise UsageError(f"the map has no cell at budget {budget!r} and deadline {deadline!r}")
        return self.cells[self.budgets.index(budget) * len(self.deadlines) + self.deadlines.index(deadline)]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per cell, budget-major (what ``ontime predict --budgets ... --json`` prints)."""
        return [
            {
                "budget": c.budget,
                "deadline": c.deadline,
                "p_success": c.p_success,
                "ci95": list(c.ci95),
                "expected_cost": c.expected_cost,
            }
            for c in self.cells
        ]

    def to_png(self, path: str | PathLike[str]) -> Path:
        """Write the map as a heatmap PNG (deadlines across, budgets up; each cell its chance, interval and
        expected cost) and return its path.

        Raises:
            UsageError: matplotlib is not installed (``pip install 'ontime[bench]'``), or the file cannot be
                written.
        """
        try:
            import matplotlib as mpl

            mpl.use("Agg")  # no display: a file only
            import matplotlib.pyplot as plt
        except ImportError:
            raise UsageError("a map's PNG needs matplotlib: pip install 'ontime[bench]'") from None
        out = Path(path)
        grid = [[self.cells[b * len(self.deadlines) + d].p_success for d in range(len(self.deadlines))]
                for b in range(len(self.budgets))]  # fmt: skip
        fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(self.deadlines), 1.2 + 0.8 * len(self.budgets)))
        try:
            image = ax.imshow(grid, origin="lower", cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
            for b, d in ((b, d) for b in range(len(self.budgets)) for d in range(len(self.deadlines))):
                c = self.cells[b * len(self.deadlines) + d]
                text = f"{c.p_success:.2f}\n[{c.ci95[0]:.2f}, {c.ci95[1]:.2f}]\n${c.expected_cost:.3g}"
                ax.text(d, b, text, ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(self.deadlines)), [f"{d:g} s" for d in self.deadlines])
            ax.set_yticks(range(len(self.budgets)), [f"${b:g}" for b in self.budgets])
            ax.set_xlabel("deadline")
            ax.set_ylabel("budget")
            ax.set_title(f"P(finish within both), [95% interval], expected cost\n{self.cells[0].planner}", fontsize=8)
            fig.colorbar(image, ax=ax, label="p_success")
            fig.tight_layout()
            fig.savefig(out, dpi=120)
        except OSError as exc:
            raise UsageError(f"cannot write the map to {str(out)!r}: {unreadable(exc)}") from None
        finally:
            plt.close(fig)
        return out


def predict_map(
    workflow: WorkflowLike,
    budgets: Iterable[float],
    deadlines: Iterable[float],
    *,
    runs: int = 1000,
    precision: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    ray: str | None = None,
    **options: Unpack[PlanOptions],
) -> PredictionMap:
    """:func:`runtime.predict` at every budget x deadline: the answer to "how much money and time does this
    workflow need?". Budgets and deadlines are sorted, duplicates dropped; the other arguments are
    :func:`runtime.predict`'s, for every cell (``progress`` counts the runs of all cells).

    Raises:
        UsageError: bad input (a budget or deadline that is not a positive number, an empty list, more than
            :data:`MAX_MAP_CELLS` cells), before any simulation.
    """
    b = _levels("budgets", budgets, check_budget)
    d = _levels("deadlines", deadlines, lambda x: check_limit("deadline", x))
    if len(b) * len(d) > MAX_MAP_CELLS:
        raise UsageError(f"a map has at most {MAX_MAP_CELLS} cells, not {len(b)} x {len(d)}")
    check_many(runs, workers, progress, seed, PREDICT_SEED_OFFSET)
    cells = tuple(
        predict(workflow, budget, deadline, runs=runs, precision=precision, seed=seed, workers=workers,
                progress=progress, ray=ray, **options)
        for budget in b
        for deadline in d
    )  # fmt: skip
    return PredictionMap(b, d, cells)


def _levels(name: str, values: Iterable[float], check: Callable[[float], object]) -> tuple[float, ...]:
    """``values`` checked one by one, as sorted distinct floats."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise UsageError(f"{name} must be a list of numbers, not {values!r}")
    got = list(itertools.islice(values, MAX_MAP_CELLS + 1))  # a generator without end stops here
    if len(got) > MAX_MAP_CELLS:
        raise UsageError(f"{name} must hold at most {MAX_MAP_CELLS} numbers")
    if not got:
        raise UsageError(f"{name} must hold at least one number")
    for v in got:
        check(v)
    return tuple(sorted({float(v) for v in got}))
