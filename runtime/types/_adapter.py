"""The model backend interface: one async method that runs a batch of k samples and reports each one's end.

Adapters never see budgets or verifiers: the executor reserves the batch's worst case (hence ``max_tokens``),
prices the usage each sample reports and decides whether its output passes. How the k samples reach the
model (one request with ``n=k``, k parallel requests, a simulation) is the adapter's own business.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from runtime.types._errors import ProviderError

__all__ = ["Adapter", "Batch", "Finish", "Message", "Report", "SampleEnd"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message of a prompt."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """k samples of one subtask's prompt on one model, launched together.

    Attributes:
        id: the batch's number in its run; with a sample's index it keys the simulated backend's draws and
            orders its wake-ups, so a run does not depend on the order tasks happen to start in.
        subtask: the subtask's row in the run's profile table (what the simulated backend draws from).
        tag: the subtask's id, sent to endpoints in the ``x-ontime-subtask`` header (serve-sim reads it).
        model: the model's column in the profile table.
        k: how many samples.
        max_tokens: output tokens each sample may produce at most: what the ledger reserved.
        input_tokens: the input tokens reserved for the prompt (:meth:`Adapter.input_tokens`).
        messages: the rendered prompt (None for a simulated subtask without one).
        deadline: the run's deadline on ``time.monotonic()`` (None on a virtual clock): no request or retry
            starts after it.
        history: the models of the subtask's earlier batches, all failed, in order: what a repair follows (the
            simulated backend draws history-dependent success from it).
        history_names: the same models by name: endpoints are sent them in the ``x-ontime-history`` header
            (serve-sim draws a loop subtask's history-dependent success from it; real endpoints ignore it).
        run: the run's id, sent in the ``x-ontime-run`` header (serve-sim draws a subtask's hidden class once
            per run from it).
    """

    id: int
    subtask: int
    tag: str
    model: int
    k: int
    max_tokens: int
    input_tokens: int
    messages: tuple[Message, ...] | None = None
    deadline: float | None = None
    history: tuple[int, ...] = ()
    history_names: tuple[str, ...] = ()
    run: str | None = None


class Finish(StrEnum):
    """How a sample ended, as its backend saw it."""

    COMPLETE = "complete"  # it ended by itself: its output may be checked
    CUT_OFF = "cut_off"  # stopped at max_tokens (or by a content filter): it cannot pass
    CANCELLED = "cancelled"  # the executor stopped it: a sibling succeeded, or the deadline passed
    ERROR = "error"  # its endpoint failed


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleEnd:
    """One sample's end: what it produced and the usage to charge for it.

    ``passed`` is set only by a simulated backend, whose profile says whether the attempt succeeds; for any
    other backend it is None and the executor checks ``output`` with the subtask's verifier.
    """

    index: int
    finish: Finish
    input_tokens: int
    output_tokens: int
    output: str | None = None
    passed: bool | None = None
    error: ProviderError | None = None


Report = Callable[[SampleEnd], None]


class Adapter(ABC):
    """A model backend. The executor holds one per model (one object may serve several models).

    Attributes:
        simulated: the backend draws each sample's success from the profiles (``SampleEnd.passed``), so
            no verifier runs and none is paid for.
    """

    simulated: ClassVar[bool] = False

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        """The input tokens to reserve for a prompt: the spec's ``estimate``, or a bound on ``messages``.

        Raises:
            UsageError: the backend cannot run a subtask without a prompt.
        """
        return estimate

    async def aclose(self) -> None:  # noqa: B027 (optional hook: the simulated backend holds nothing)
        """Close connections; called once by whoever opened the adapter, when its run is over."""

    @abstractmethod
    async def run(self, batch: Batch, report: Report) -> None:
        """Run the batch's k samples and call ``report`` once per sample index as that sample ends.

        ``report`` is synchronous and never blocks; the call returns once every sample has been reported.
        If it is cancelled (a sibling succeeded, the deadline passed), each sample not yet reported must be
        reported as :attr:`Finish.CANCELLED` with the usage it had reached, from a ``finally``, without
        awaiting. An endpoint failure is a sample that ended in :attr:`Finish.ERROR` (with its usage and the
        :class:`runtime.ProviderError`); raising a ``ProviderError`` instead ends every sample not yet
        reported in that error with nothing charged. Any other exception is a bug and stops the run.
        """
