"""The workflow model: models, subtasks and their (subtask, model) profiles.

Plain frozen dataclasses built by :func:`runtime.load_workflow` or by hand (a run checks a hand-built one
with :func:`runtime.validate_workflow`); planners read them as arrays through :class:`runtime.ProfileTable`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.types._history import History, Loop

__all__ = [
    "Endpoint",
    "FixedTokens",
    "LogNormalTokens",
    "ModelSpec",
    "ParametricProfile",
    "PoolProfile",
    "Profile",
    "Subtask",
    "VerifierSpec",
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
    endpoint: Endpoint | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a real model (``provider`` openai or anthropic) is served, and how to talk to it.

    Attributes:
        model: the endpoint's model id (defaults to the spec's model name).
        base_url: an OpenAI- or Anthropic-compatible server; None for the vendor's own API.
        api_key_env: the environment variable holding the key (default ``OPENAI_API_KEY`` or
            ``ANTHROPIC_API_KEY``). Keys are read when a run starts and never logged.
        api_key: a key given directly (from code; never put one in a spec file you commit).
        timeout_s: the longest to wait for the next byte of a reply before retrying.
        retries: attempts per sample while nothing has been produced (1: no retry).
        concurrency: most requests open at once on this model (None: no limit).
        requests_per_s: most request starts per second (None: no limit).
        max_batch: most samples of one batch on this model; a wider launch is narrowed (None: the executor's
            own cap, 10,000).
        temperature: sampling temperature, if the endpoint should not use its default.
    """

    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    retries: int = 4
    concurrency: int | None = None
    requests_per_s: float | None = None
    max_batch: int | None = None
    temperature: float | None = None


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
class VerifierSpec:
    """How a real model's output is checked: ``kind`` is exact, regex, json_schema, python_tests, judge or sql.

    ``arg`` is the expected text, the pattern, the schema, the test code, the judge's model name, or (sql) a mapping
    of ``database`` (a SQLite file), ``gold`` (the query whose result the output's must equal) and ``max_rows``;
    ``rubric`` is the judge's question; ``timeout_s`` bounds a sandboxed test run or a query, and ``setup`` is code run
    before the output under test (imports or helpers the tests assume).
    """

    kind: str
    arg: Any
    rubric: str | None = None
    timeout_s: float = 10.0
    setup: str = ""


@dataclass(frozen=True, slots=True)
class Subtask:
    """A node of the workflow DAG. ``profiles`` maps the models usable here to their profile."""

    id: str
    deps: tuple[str, ...]
    input_tokens: int
    profiles: Mapping[str, Profile]
    prompt: str | None = None  # the user message; {{dep_id}} is replaced by that dependency's output
    system: str | None = None
    verifier: VerifierSpec | None = None
    reference: str | None = None  # a correct output: what the simulator server returns on success
    wrong: tuple[str, ...] = ()  # outputs that fail the verifier: what it returns on failure
    answer: bool = False  # its output is the run's answer: the finalizer may refine it (``RunResult.answer``)
    loop: Loop | None = None  # a repair loop: at most ``loop.horizon`` invocations
    history: History | None = None  # success that depends on earlier failures (None: independent attempts)


@dataclass(frozen=True, slots=True)
class Workflow:
    """A DAG of subtasks and the models that may run them; subtasks are kept in topological order."""

    name: str
    models: Mapping[str, ModelSpec]
    subtasks: tuple[Subtask, ...]
    source: str | None = field(default=None, compare=False)

    @property
    def subtask_ids(self) -> tuple[str, ...]:
        """Subtask ids in topological order."""
        return tuple(s.id for s in self.subtasks)

    @property
    def real_models(self) -> dict[str, ModelSpec]:
        """The models served by a real endpoint (not simulated), by name."""
        return {name: m for name, m in self.models.items() if m.endpoint is not None}
