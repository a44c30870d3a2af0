"""Typed, immutable run events; ``to_dict`` is the flat form the structlog and journal sinks write.

Every event carries ``t``, seconds since the run started on the run's clock. Money is in integer
pico-dollars (``*_pusd``) so that a journal replays the ledger exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from runtime.types._qa import Action, StopReason

__all__ = [
    "AgentFinished",
    "AgentStarted",
    "AgentStep",
    "BatchFailed",
    "BatchLaunched",
    "BudgetReserved",
    "BudgetSettled",
    "DeadlineHit",
    "DecisionMade",
    "Event",
    "LaunchRejected",
    "Reason",
    "RunFinished",
    "RunStarted",
    "SampleFinished",
    "SampleStatus",
    "SubtaskCompleted",
]


class Reason(StrEnum):
    """Why a run ended without success, or why a launch was refused."""

    DEADLINE = "deadline"  # time ran out (or no attempt could end before the deadline)
    BUDGET = "budget"  # no affordable launch was left
    PLANNER_GAVE_UP = "planner_gave_up"  # the planner launched nothing while nothing was in flight
    PROVIDER_REJECTED = "provider_rejected"  # an endpoint refused the key, the permission or the model
    UNREACHABLE = "unreachable"  # the only models left failed to answer several requests in a row
    EXHAUSTED = "exhausted"  # a repair loop's every allowed invocation failed
    CANCELLED = "cancelled"  # the caller stopped the run (Ctrl-C, a cancelled task, leaving a stream)
    INTERRUPTED = "interrupted"  # Run.interrupt() stopped it (``ontime run`` on SIGINT or SIGTERM)
    ERROR = "error"  # an exception stopped the run (an invalid decision, or a bug in ontime or a plug-in)


class SampleStatus(StrEnum):
    """How one sample ended."""

    SUCCEEDED = "succeeded"  # it passed its verifier (or the simulated draw)
    FAILED = "failed"  # it ended by itself and did not pass, or was cut off at max_tokens
    CANCELLED = "cancelled"  # the executor stopped it: a sibling succeeded, or the deadline passed
    ERROR = "error"  # its endpoint failed


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of run events."""

    kind: ClassVar[str] = "event"
    t: float

    def to_dict(self) -> dict[str, Any]:
        """The event as a flat dict: ``{"event": kind, "t": ..., field: value, ...}``."""
        d: dict[str, Any] = {"event": self.kind}
        names = _FIELDS.get(type(self))
        if names is None:
            names = _FIELDS[type(self)] = tuple(f.name for f in dataclasses.fields(self))
        for name in names:
            v = getattr(self, name)
            d[name] = list(v) if isinstance(v, tuple) else v
        return d


_FIELDS: dict[type, tuple[str, ...]] = {}  # each event class's field names, which to_dict reads often


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_id: str
    workflow: str
    subtasks: int
    models: tuple[str, ...]
    budget_pusd: int
    deadline_s: float
    planner: str
    seed: int
    clock: str
    cancel_siblings: bool
    rounds: bool = False
    started_at: float | None = None  # wall time at the start (Unix seconds): what a resumed run's deadline counts from
    spec: str | None = None  # the spec file the workflow was loaded from (absolute), if any
    resumed_from: str | None = None  # the run this one resumes (runtime.resume), if any
    spent_before_pusd: int = 0  # what the resumed run had spent or held at its crash, charged outside this ledger
    output_token_cap: int | None = None  # the run's cap on output tokens, if any
    subtask_ids: tuple[str, ...] = ()  # every subtask of the workflow, so a report draws those never launched too


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionMade(Event):
    """The planner's decision: ``launches`` is ``(subtask, model, k)`` for each batch it asked for."""

    kind: ClassVar[str] = "decision_made"
    launches: tuple[tuple[str, str, int], ...]
    planner_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchRejected(Event):
    """The executor refused a launch the planner asked for (``reason``: budget, deadline)."""

    kind: ClassVar[str] = "launch_rejected"
    subtask: str
    model: str
    k: int
    reason: Reason


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetReserved(Event):
    kind: ClassVar[str] = "budget_reserved"
    reservation: int
    batch: int
    pusd: int
    output_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLaunched(Event):
    kind: ClassVar[str] = "batch_launched"
    batch: int
    subtask: str
    model: str
    k: int
    max_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleFinished(Event):
    """One sample ended, with the tokens it was charged for."""

    kind: ClassVar[str] = "sample_finished"
    batch: int
    sample: int
    subtask: str
    model: str
    status: SampleStatus
    input_tokens: int
    output_tokens: int
    latency_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSettled(Event):
    """A sample's realized cost debited (``pusd``) and the rest of its share released."""

    kind: ClassVar[str] = "budget_settled"
    reservation: int
    batch: int
    sample: int
    pusd: int
    output_tokens: int
    released_pusd: int
    released_output_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SubtaskCompleted(Event):
    """A subtask's batch succeeded; ``output`` is the text that completed it (what a resumed run keeps)."""

    kind: ClassVar[str] = "subtask_completed"
    subtask: str
    batch: int
    model: str
    output: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchFailed(Event):
    """Every sample of the batch ended and none succeeded: the subtask is ready again."""

    kind: ClassVar[str] = "batch_failed"
    batch: int
    subtask: str
    model: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlineHit(Event):
    kind: ClassVar[str] = "deadline_hit"
    cancelled_samples: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    """The run is over; ``detail`` names the cause of an unreachable endpoint or a cancellation."""

    kind: ClassVar[str] = "run_finished"
    success: bool
    reason: Reason | None
    spent_pusd: int
    cost_usd: float
    elapsed_s: float
    completed: int
    subtasks: int
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStarted(Event):
    """A search agent started on a question under its two caps."""

    kind: ClassVar[str] = "agent_started"
    question: str
    controller: str
    tool_calls: int
    tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStep(Event):
    """One model turn of a search agent: what it was told, what it did, what is left of the caps."""

    kind: ClassVar[str] = "agent_step"
    step: int  # the turn's number, and the id of the tree node it made
    parent: int  # the node it extended: 0 is the question, ``step - 1`` on a linear run, any earlier one in a tree
    directive: Action | None
    action: Action
    output_tokens: int
    query: str | None
    hits: tuple[str, ...]
    answer: str | None
    tool_calls_left: int
    tokens_left: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFinished(Event):
    """The agent's final answer (after the finalizer) and its realized usage."""

    kind: ClassVar[str] = "agent_finished"
    answer: str
    base_answer: str
    finalized: bool
    tool_calls: int
    output_tokens: int
    reason: StopReason
