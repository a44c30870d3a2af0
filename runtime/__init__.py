"""ontime: run LLM agent workflows that must finish on time and within budget.

import runtime
wf = runtime.load_workflow("examples/release20.json")
result = runtime.run(wf, budget=1.00, deadline=600)
"""

from __future__ import annotations

from runtime._api import DEFAULT_PLANNER, arun, prepare, run, stream
from runtime._clock import Clock, RealClock, VirtualClock
from runtime._errors import (
    CycleError,
    InvariantError,
    LimitError,
    OntimeError,
    PlannerError,
    PlannerSpecError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
    RunError,
    SpecError,
    UnknownDependencyError,
    UnknownModelError,
    UsageError,
)
from runtime._events import (
    AgentFinished,
    AgentStarted,
    AgentStep,
    BatchFailed,
    BatchLaunched,
    BudgetReserved,
    BudgetSettled,
    DeadlineHit,
    DecisionMade,
    Event,
    LaunchRejected,
    RunFinished,
    RunStarted,
    SampleFinished,
    SubtaskCompleted,
)
from runtime._executor import Executor, ExecutorOptions
from runtime._ledger import Ledger, Usage
from runtime._money import PUSD_PER_USD
from runtime._predict import Prediction, predict
from runtime._profiles import ProfileTable
from runtime._qa import QAResult
from runtime._qa_api import answer, evaluate_qa
from runtime._result import RunResult, SubtaskOutcome
from runtime._sinks import JournalSink, LedgerAudit, LedgerReplay, StructlogSink, read_journal, replay_ledger
from runtime._snapshot import Decision, FailedBatch, InFlight, Launch, Snapshot
from runtime._spec import load_workflow, parse_workflow
from runtime._workflow import (
    FixedTokens,
    LogNormalTokens,
    ModelSpec,
    ParametricProfile,
    PoolProfile,
    Subtask,
    Workflow,
)

__all__ = [
    "DEFAULT_PLANNER",
    "PUSD_PER_USD",
    "AgentFinished",
    "AgentStarted",
    "AgentStep",
    "BatchFailed",
    "BatchLaunched",
    "BudgetReserved",
    "BudgetSettled",
    "Clock",
    "CycleError",
    "DeadlineHit",
    "Decision",
    "DecisionMade",
    "Event",
    "Executor",
    "ExecutorOptions",
    "FailedBatch",
    "FixedTokens",
    "InFlight",
    "InvariantError",
    "JournalSink",
    "Launch",
    "LaunchRejected",
    "Ledger",
    "LedgerAudit",
    "LedgerReplay",
    "LimitError",
    "LogNormalTokens",
    "ModelSpec",
    "OntimeError",
    "ParametricProfile",
    "PlannerError",
    "PlannerSpecError",
    "PoolProfile",
    "Prediction",
    "QAResult",
    "ProfileTable",
    "ProviderError",
    "ProviderRejectedError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RealClock",
    "RunError",
    "RunFinished",
    "RunResult",
    "RunStarted",
    "SampleFinished",
    "Snapshot",
    "SpecError",
    "StructlogSink",
    "Subtask",
    "SubtaskCompleted",
    "SubtaskOutcome",
    "UnknownDependencyError",
    "UnknownModelError",
    "Usage",
    "UsageError",
    "VirtualClock",
    "Workflow",
    "answer",
    "arun",
    "evaluate_qa",
    "load_workflow",
    "parse_workflow",
    "prepare",
    "predict",
    "read_journal",
    "replay_ledger",
    "run",
    "stream",
]
