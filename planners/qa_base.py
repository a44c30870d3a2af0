"""The search-agent controller interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime._qa_types import Directive, QABudget, Trace

__all__ = ["QAController"]


class QAController(ABC):
    """Decides the next directive of a search agent from its trace and the budget left."""

    name: str = "controller"

    @abstractmethod
    def decide(self, trace: Trace, budget: QABudget) -> Directive:
        """The next turn's directive. Must not ask for more tokens than ``budget.tokens_left``."""
