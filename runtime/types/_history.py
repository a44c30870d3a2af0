"""Attempts that are not independent: repair loops and success that depends on what was tried before.

Real attempts at one subtask are correlated. A question that defeated one model is harder for the next, and a
repair sees the failure it repairs: on the reflection data GPT-4 answers 79% of questions at once but only 20% of
those it got wrong on a retry. A subtask's success may therefore depend on its history (the models of its earlier
failed batches, in order), in one of two forms:

- :class:`LatentClasses`: a hidden class per run and subtask (a difficulty level, or one recorded question) drawn
  once from ``weights``; given the class every sample succeeds independently at the rate of its model and of its
  invocation's kind (fresh or repair). Failures are informative (a planner updates its belief over the class by
  Bayes' rule), and the k samples of one batch share the class. :meth:`LatentClasses.difficulty` builds one from
  marginal rates a user can measure; :meth:`LatentClasses.replay` from recorded outcomes (one class per question).
- :class:`CascadeTable`: the success rate of model m after a given sequence of failed models, looked up with
  back-off (the oldest failures are forgotten first) down to the model's first-attempt rate.

A :class:`Loop` bounds how many invocations a subtask gets. Independent draws are the special case of no history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

from runtime.types._errors import SpecError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["CascadeTable", "History", "LatentClasses", "Loop"]

_NORMAL = NormalDist()
MAX_CLASSES = 100_000  # a replay of a whole data set has one class per question


@dataclass(frozen=True, slots=True)
class Loop:
    """A repair loop: the subtask gets at most ``horizon`` invocations (batches); once they all failed, it failed.

    Every invocation after a failure is a repair: on a real endpoint its prompt carries the failed output and why
    it failed. A tool stage (executing the SQL a model wrote, say) runs on every output that ends by itself: it
    adds ``tool_latency_s`` to the attempt and ``tool_cost_usd`` to what it is charged (reserved with the batch);
    on a real endpoint, the verifier is that stage and takes the time it really takes.
    """

    horizon: int
    tool_latency_s: float = 0.0
    tool_cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class LatentClasses:
    """Success given a hidden class drawn once per run and subtask.

    Attributes:
        weights: the prior probability of each class (they sum to 1).
        first: per model, its success rate in each class on a fresh invocation.
        repair: per model, its success rate in each class on a repair (defaults to ``first``).
        repairs: which invocations are repairs: ``"any"``, every one after the subtask's first failure (a repair
            prompt shows the failure, whoever made it); ``"own"``, a model's invocation on a subtask it already
            failed (another model answers afresh), as in self-reflection.
    """

    weights: tuple[float, ...]
    first: Mapping[str, tuple[float, ...]]
    repair: Mapping[str, tuple[float, ...]]
    repairs: Literal["any", "own"] = "any"

    @property
    def n_classes(self) -> int:
        return len(self.weights)

    def marginal(self, model: str) -> float:
        """The model's success rate on a subtask's first invocation."""
        return sum(w * p for w, p in zip(self.weights, self.first[model], strict=True))

    @classmethod
    def difficulty(
        cls,
        first: Mapping[str, float],
        *,
        spread: float,
        repair: Mapping[str, float] | None = None,
        classes: int = 32,
        repairs: Literal["any", "own"] = "any",
    ) -> LatentClasses:
        """A probit model of one hidden difficulty z ~ N(0, 1): P(success | z) = Phi(a - spread * z).

        ``first[m]`` is model m's first-attempt rate; ``repair[m]``, if given, its repair's rate after its own
        first attempt failed. Each model's intercepts are solved so that the model reproduces both rates exactly;
        ``spread`` (>= 0) is how much difficulty varies between runs: 0 gives independent attempts, larger values
        make a failure stronger evidence of a hard case. ``classes`` equal-mass quantiles of z stand for the
        continuum, so everything stays an exact finite mixture.
        """
        if not (math.isfinite(spread) and spread >= 0):
            raise SpecError(f"spread={spread!r} must be finite and >= 0", field="difficulty.spread")
        if not (isinstance(classes, int) and 1 <= classes <= 1000):
            raise SpecError(f"classes={classes!r} must be an integer in [1, 1000]", field="difficulty.classes")
        z = [_NORMAL.inv_cdf((c + 0.5) / classes) for c in range(classes)]
        weights = (1.0 / classes,) * classes
        firsts: dict[str, tuple[float, ...]] = {}
        repairs_: dict[str, tuple[float, ...]] = {}
        for m, p in first.items():
            _check_rate(p, f"profiles.{m}.p")
            f = _solve(spread, z, (1.0,) * classes, p)
            firsts[m] = f
            q = None if repair is None else repair.get(m)
            if q is None:
                repairs_[m] = f
                continue
            _check_rate(q, f"profiles.{m}.repair_p")
            if p >= 1.0:
                raise SpecError("a model that never fails has no repair rate", field=f"profiles.{m}.repair_p")
            repairs_[m] = _solve(spread, z, tuple(1.0 - x for x in f), q)  # over the classes where it failed
        return cls(weights, firsts, repairs_, repairs)

    @classmethod
    def replay(
        cls,
        first: Mapping[str, Sequence[bool]],
        repair: Mapping[str, Sequence[bool]],
        *,
        repairs: Literal["any", "own"] = "own",
    ) -> LatentClasses:
        """Recorded outcomes, one class per question: ``first[m][q]`` whether model m answered question q right at
        once, ``repair[m][q]`` whether its repair was right. Each run draws one question. By default a repair
        follows its own model's failure (``repairs="own"``), as self-reflection data are recorded; ``"any"`` makes
        every invocation after the first failure a repair, whoever failed (a repair prompt that shows the failure)."""
        if repairs not in ("any", "own"):
            raise SpecError(f"repairs={repairs!r} must be 'any' or 'own'", field="replay.repairs")
        n = len(next(iter(first.values()), ()))
        if n == 0:
            raise SpecError("a replay needs at least one question", field="replay")
        for m, rows in (*first.items(), *repair.items()):
            if len(rows) != n:
                raise SpecError(f"model {m!r} has {len(rows)} outcomes, not {n}", field="replay")
        as_rates = {m: tuple(float(x) for x in rows) for m, rows in first.items()}
        return cls(
            (1.0 / n,) * n,
            as_rates,
            {m: tuple(float(x) for x in repair[m]) if m in repair else as_rates[m] for m in first},
            repairs,
        )


@dataclass(frozen=True, slots=True)
class CascadeTable:
    """``rates[(f1, ..., fk, m)]``: P(model m succeeds | models f1 .. fk failed this subtask, in that order).

    A missing entry backs off to the entry without the oldest failure, down to ``(m,)``; a model without even that
    uses its profile's rate. A table of depth-1 entries only is independent attempts.
    """

    rates: Mapping[tuple[str, ...], float]

    @property
    def depth(self) -> int:
        """The longest history an entry conditions on (failures before the model)."""
        return max((len(k) - 1 for k in self.rates), default=0)

    def rate(self, failed: Sequence[str], model: str, fallback: float) -> float:
        """P(``model`` succeeds after ``failed``), with back-off."""
        key = (*failed, model)
        for start in range(len(key)):
            p = self.rates.get(key[start:])
            if p is not None:
                return p
        return fallback


History = LatentClasses | CascadeTable


def is_rate(x: object) -> bool:
    """Whether ``x`` is a probability: a finite number in [0, 1], not a bool."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and 0.0 <= x <= 1.0


def _check_rate(p: float, field: str) -> None:
    if not is_rate(p):
        raise SpecError(f"{p!r} is not a probability in [0, 1]", field=field)


def _solve(spread: float, z: Sequence[float], given: Sequence[float], target: float) -> tuple[float, ...]:
    """The class rates Phi(a - spread * z) whose mean weighted by ``given`` hits ``target``, by bisection on the
    intercept a (the mean rises with it); the ends 0 and 1 are exact."""
    total = sum(given)

    def stat(r: Sequence[float]) -> float:
        return sum(g * x for g, x in zip(given, r, strict=True)) / total

    def rates(a: float) -> tuple[float, ...]:
        return tuple(_NORMAL.cdf(a - spread * x) for x in z)

    if target <= 0.0 or target >= 1.0:
        return (float(target >= 1.0),) * len(z)
    lo, hi = -40.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if stat(rates(mid)) < target:
            lo = mid
        else:
            hi = mid
    return rates((lo + hi) / 2)
