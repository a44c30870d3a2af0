"""The one exception hierarchy of ontime.

    OntimeError                     root: ``except OntimeError`` catches everything we raise
    ├── UsageError                  the caller's mistake, raised before any money is spent
    │   ├── SpecError               a workflow spec is malformed or inconsistent
    │   │   ├── CycleError          the dependency graph has a cycle
    │   │   ├── UnknownDependencyError
    │   │   └── UnknownModelError
    │   ├── LimitError              a budget, deadline or cap is negative, zero or not finite
    │   └── PlannerSpecError        an unknown planner or bad planner options
    └── RunError                    something went wrong while a run was under way
        ├── PlannerError            a planner returned a decision the executor cannot carry out
        └── InvariantError          a safety invariant would be broken (a bug: please report it)

Run *outcomes* such as "the deadline passed" or "the budget ran out" are not exceptions: they are
reported in ``RunResult.reason``.
"""

from __future__ import annotations

__all__ = [
    "CycleError",
    "InvariantError",
    "LimitError",
    "OntimeError",
    "PlannerError",
    "PlannerSpecError",
    "RunError",
    "SpecError",
    "UnknownDependencyError",
    "UnknownModelError",
    "UsageError",
]


class OntimeError(Exception):
    """Root of every error ontime raises."""


class UsageError(OntimeError, ValueError):
    """The caller passed something ontime cannot use."""


class SpecError(UsageError):
    """A workflow spec is malformed; the message names the file, the subtask and the field."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        subtask: str | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.subtask = subtask
        self.field = field
        where = []
        if source:
            where.append(source)
        if subtask is not None:
            where.append(f"subtask {subtask!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class CycleError(SpecError):
    """The dependency graph is not acyclic."""


class UnknownDependencyError(SpecError):
    """A subtask depends on a subtask id that does not exist."""


class UnknownModelError(SpecError):
    """A profile or option names a model the workflow does not declare."""


class LimitError(UsageError):
    """A budget, deadline or cap is negative, zero or not finite."""


class PlannerSpecError(UsageError):
    """The planner name or its options are invalid."""


class RunError(OntimeError):
    """A run could not be carried out as the execution model requires."""


class PlannerError(RunError):
    """A planner returned a decision that is not a valid action in the current state."""


class InvariantError(RunError):
    """A safety invariant (budget, deadline, accounting) would be broken."""
