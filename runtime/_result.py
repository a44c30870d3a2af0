"""What a run returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.types import Reason

__all__ = ["RunResult", "SubtaskOutcome"]


@dataclass(frozen=True, slots=True)
class SubtaskOutcome:
    """How one subtask went: which model completed it and when, and what it cost over all its batches."""

    id: str
    completed: bool
    model: str | None
    completed_at: float | None
    batches: int
    samples: int
    cost: float
    output: str | None


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one run.

    ``success`` means every subtask completed before the deadline within the budget. Otherwise
    ``reason`` (a :class:`runtime.Reason`) says why not, and ``detail`` names the cause where there is one
    to name (the endpoint that could not be reached, and its last error). Money is in US dollars
    (``cost_pusd`` is the exact amount in pico-dollars), times in seconds.
    """

    success: bool
    reason: Reason | None
    cost: float
    cost_pusd: int
    elapsed: float
    budget: float
    deadline: float
    seed: int
    planner: str
    subtasks: Mapping[str, SubtaskOutcome]
    planner_ms: tuple[float, ...]
    run_id: str
    detail: str | None = None
    answer: str | None = None  # the answer subtask's output after the finalizer (workflows with one)
    base_answer: str | None = None  # that output as the subtask produced it

    @property
    def outputs(self) -> dict[str, str | None]:
        """The output of each completed subtask (None for the others)."""
        return {sid: o.output for sid, o in self.subtasks.items()}

    @property
    def completed(self) -> int:
        return sum(o.completed for o in self.subtasks.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``ontime run --json`` prints)."""
        return {
            "run_id": self.run_id,
            "success": self.success,
            **({"answer": self.answer, "base_answer": self.base_answer} if self.base_answer is not None else {}),
            "reason": self.reason,
            "detail": self.detail,
            "cost": self.cost,
            "cost_pusd": self.cost_pusd,
            "elapsed": self.elapsed,
            "budget": self.budget,
            "deadline": self.deadline,
            "seed": self.seed,
            "planner": self.planner,
            "completed": self.completed,
            "decisions": len(self.planner_ms),
            "planner_ms_total": sum(self.planner_ms),
            "subtasks": {sid: {k: v for k, v in asdict(o).items() if k != "id"} for sid, o in self.subtasks.items()},
        }
