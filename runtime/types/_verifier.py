"""The verifier interface: whether a sample's output solves its subtask (no verifier: any complete output does).

A check that may cost money (an LLM judge) states its worst case, reserved with the batch, and reports what
it really cost, charged with the sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["Verdict", "Verifier"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A check's answer; ``detail`` says why an output failed, ``cost_pusd`` what checking it cost."""

    ok: bool
    detail: str = ""
    cost_pusd: int = 0


class Verifier(ABC):
    """Checks one output of a subtask; fails closed (a check that cannot decide says no, and why)."""

    @abstractmethod
    async def check(self, output: str, allowance_pusd: int = 0) -> Verdict:
        """Decide whether ``output`` passes, spending at most ``allowance_pusd`` (what was reserved for it)."""

    def worst_pusd(self, max_output_tokens: int) -> int:
        """The most checking one output of at most ``max_output_tokens`` tokens may cost."""
        return 0
