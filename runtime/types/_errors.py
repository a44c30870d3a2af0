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
        ├── InvariantError          a safety invariant would be broken (a bug: please report it)
        ├── SandboxError            the code sandbox could not run a program (its own failures are results)
        ├── SinkError               the journal or log could not be written (a full disk): the run stops
        ├── CallRefusedError        a program's call_llm was refused: raised inside the program, which may catch it
        │   ├── OverBudgetError     the call's worst case does not fit in what is left of the budget
        │   └── PastDeadlineError   the deadline has passed (or would pass before the call could start)
        └── ProviderError           a model endpoint failed; the message never contains an API key
            ├── ProviderRejectedError   4xx other than 429 (bad key, unknown model, bad request): do not retry
            └── ProviderUnavailableError  5xx, timeouts, dropped connections, malformed replies: worth retrying
                └── RateLimitedError    429; ``retry_after`` says how long the endpoint asked us to wait

Run *outcomes* such as "the deadline passed" or "the budget ran out" are not exceptions: they are
reported in ``RunResult.reason``. An exception that is not an :class:`OntimeError` is a bug in ontime or in a
plug-in (planner, adapter, verifier) and propagates as it is.
"""

from __future__ import annotations

__all__ = [
    "CallRefusedError",
    "CycleError",
    "InvariantError",
    "LimitError",
    "OntimeError",
    "OverBudgetError",
    "PastDeadlineError",
    "PlannerError",
    "PlannerSpecError",
    "ProviderError",
    "ProviderRejectedError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RunError",
    "SandboxError",
    "SinkError",
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
        self, message: str, *, source: str | None = None, subtask: str | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.source = source
        self.subtask = subtask
        self.field = field
        parts = (source or "", "" if subtask is None else f"subtask {subtask!r}", f"field {field!r}" if field else "")
        where = [p for p in parts if p]
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


class SandboxError(RunError):
    """The sandbox could not start a program; never raised for the program's own failures, which are results."""


class SinkError(RunError):
    """An event could not be recorded (the journal's or the log's disk is full): a run whose record would have
    a gap stops, settles what is in flight, and raises this."""


class CallRefusedError(RunError):
    """A program's ``call_llm`` (or ``exec_code``) was refused before anything was launched or charged.

    It is raised inside the program, which may catch it and answer with what it has (degrade)."""


class OverBudgetError(CallRefusedError):
    """The call's worst case (n x (input tokens x input price + max_tokens x output price)) does not fit in
    the money left after what is spent and reserved."""


class PastDeadlineError(CallRefusedError):
    """The run's deadline has passed: nothing more may start."""


class ProviderError(RunError):
    """A model endpoint failed. ``provider`` and ``status`` (HTTP status, if any) say where and how."""

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        super().__init__(message)


class ProviderRejectedError(ProviderError):
    """The endpoint refused the request itself (authentication, permissions, unknown model, bad request)."""

    @property
    def fatal(self) -> bool:
        """Whether every request of the run would be refused the same way (401, 403, 404): stop the run."""
        return self.status in (401, 403, 404)


class ProviderUnavailableError(ProviderError):
    """A transient failure: server error, timeout, dropped connection or a reply we could not parse."""


class RateLimitedError(ProviderUnavailableError):
    """HTTP 429: the endpoint asked us to slow down, for ``retry_after`` seconds if it said."""

    def __init__(
        self, message: str, *, provider: str, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, status=status)


def unreadable(exc: OSError | ValueError) -> str:
    """Why a text file could not be read, in a few words: not UTF-8, or the system's reason (a NUL in the
    path is a ValueError too)."""
    return "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(getattr(exc, "strerror", None) or exc)
