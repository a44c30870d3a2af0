"""The model backend interface: one async method that runs one sample.

Adapters never see budgets: the executor reserves the worst case before it calls :meth:`Adapter.sample`
and passes ``max_tokens`` from that reservation; it turns the usage reported back into cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.chat import Message

__all__ = ["Adapter", "SampleOutcome", "SampleProgress", "SampleRequest"]


@dataclass(frozen=True, slots=True)
class SampleRequest:
    """One sample of one subtask on one model.

    ``key`` identifies the sample within the run (batch number, sample index); the simulated adapter
    derives its random draws from it, so a run does not depend on the order tasks happen to start in.
    ``input_tokens`` is what the ledger reserved for the prompt (:meth:`Adapter.input_tokens`),
    ``check_pusd`` what it reserved for checking the output; ``messages`` is the rendered prompt (None for
    a subtask without one), ``k`` the batch's width and ``deadline`` the run's deadline on
    ``time.monotonic()`` (None on a virtual clock).
    """

    subtask: int
    subtask_id: str
    model: int
    model_name: str
    input_tokens: int
    max_tokens: int
    key: tuple[int, int]
    k: int = 1
    messages: tuple[Message, ...] | None = None
    deadline: float | None = None
    check_pusd: int = 0


@dataclass(slots=True)
class SampleProgress:
    """The sample's usage, which the executor charges once the adapter's call has ended.

    The call may end by being cancelled (a sibling succeeded, or the deadline passed), so adapters must
    leave it right on every way out: in a ``finally``, or by setting it before each await that may be
    cancelled.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    check_pusd: int = 0


@dataclass(frozen=True, slots=True)
class SampleOutcome:
    """How a finished sample went: whether it passed its verifier, its usage and its output.

    ``check_pusd`` is what verifying it cost (an LLM judge), charged with the sample.
    """

    success: bool
    input_tokens: int
    output_tokens: int
    output: str | None = None
    check_pusd: int = 0


class Adapter(ABC):
    """A model backend."""

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        """The input tokens to reserve for a prompt: the spec's ``estimate``, or a bound on ``messages``."""
        return estimate

    def check_pusd(self, subtask: int, max_tokens: int) -> int:
        """The most checking one output of ``subtask`` may cost (an LLM judge's worst case)."""
        return 0

    async def aclose(self) -> None:  # noqa: B027 (optional hook: the simulated adapter holds nothing)
        """Close connections; called once the run has finished."""

    @abstractmethod
    async def sample(self, request: SampleRequest, progress: SampleProgress) -> SampleOutcome:
        """Run one sample to completion and say whether it succeeded.

        Must honour cancellation promptly, leaving ``progress`` with the usage so far. Raising an
        exception marks the sample as an error (a failed sample, charged per ``progress``).
        """
