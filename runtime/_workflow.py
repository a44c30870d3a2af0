"""The workflow model: models, subtasks and their (subtask, model) profiles.

These are plain frozen dataclasses built by :func:`runtime.load_workflow` (or by hand, then checked with
:meth:`Workflow.validate`). Planners and the simulator read the same data as numpy arrays through
:class:`runtime.ProfileTable`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "FixedTokens",
    "LogNormalTokens",
    "ModelSpec",
    "ParametricProfile",
    "PoolProfile",
    "Profile",
    "Subtask",
    "Workflow",
]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model a workflow may call, with its list prices and speed.

    Prices are in US dollars per million tokens; ``tokens_per_s`` and ``ttft_s`` give the latency of an
    attempt whose latency was not recorded: ``ttft_s + output_tokens / tokens_per_s``.
    """

    name: str
    provider: str
    input_price_per_mtok: float
    output_price_per_mtok: float
    tokens_per_s: float
    ttft_s: float
    max_output_tokens: int


@dataclass(frozen=True, slots=True)
class LogNormalTokens:
    """Output length drawn from a lognormal distribution with this mean and standard deviation."""

    mean: float
    std: float

    @property
    def mu_sigma(self) -> tuple[float, float]:
        """The (mu, sigma) of the underlying normal distribution."""
        if self.std <= 0:
            return math.log(self.mean), 0.0
        s2 = math.log1p((self.std / self.mean) ** 2)
        return math.log(self.mean) - s2 / 2, math.sqrt(s2)


@dataclass(frozen=True, slots=True)
class FixedTokens:
    """Every attempt produces exactly this many output tokens."""

    tokens: int


@dataclass(frozen=True, slots=True)
class ParametricProfile:
    """Independent success with probability ``p`` and a parametric output length."""

    p: float
    output_tokens: LogNormalTokens | FixedTokens


@dataclass(frozen=True, slots=True)
class PoolProfile:
    """An empirical pool of recorded attempts, drawn uniformly with replacement.

    Each row is ``(success, output_tokens, latency_s or None)``, as in the MCP paper's 512-sample pools.
    """

    samples: tuple[tuple[bool, int, float | None], ...]

    @property
    def p(self) -> float:
        """The pool's empirical success rate."""
        return sum(1 for s in self.samples if s[0]) / len(self.samples)


Profile = ParametricProfile | PoolProfile


@dataclass(frozen=True, slots=True)
class Subtask:
    """A node of the workflow DAG. ``profiles`` maps the models usable here to their profile."""

    id: str
    deps: tuple[str, ...]
    input_tokens: int
    profiles: Mapping[str, Profile]


@dataclass(frozen=True, slots=True)
class Workflow:
    """A DAG of subtasks and the models that may run them; subtasks are kept in topological order."""

    name: str
    models: Mapping[str, ModelSpec]
    subtasks: tuple[Subtask, ...]
    source: str | None = field(default=None, compare=False)

    def validate(self) -> Workflow:
        """Check the workflow; return it in topological order, or raise a :class:`SpecError`."""
        from runtime._spec import validate_workflow

        return validate_workflow(self)

    @property
    def subtask_ids(self) -> tuple[str, ...]:
        """Subtask ids in topological order."""
        return tuple(s.id for s in self.subtasks)
