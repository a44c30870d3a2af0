"""Real attempts of real LLMs, first answers and repairs (Renze & Guven 2024, "Self-Reflection in LLM Agents").

The file (``reflection/renze_attempts.csv`` in the shared data; a slice ships in ``examples/reflection``) holds every
model's first answer to every question of 8 multiple-choice exams (``agent = baseline``, attempt 1), and, for every
question a model got wrong, a second attempt by each of 8 self-reflecting agents (attempt 2). A second attempt exists
only after a failure, as in any repair loop: its success rate is conditional on that failure and cannot be read as
the model's rate. :class:`Outcomes` gives the three rates a history-dependent profile needs, each with its count:

- ``first(m)``: the chance that model m answers right at once;
- ``repair(m, agent)``: the chance that m's second attempt is right after its own first was wrong;
- ``after(m, failed)``: the chance that m answers right at once on a question every model in ``failed`` got wrong
  (a cross-model cascade; fully observed, since every model answered every question).

Three agents wrote their reflection with the correct answer in view (``solution``, ``composite``, ``unredacted``);
they leak it and are dropped on load unless asked for. An attempt the endpoint failed (``error = 1``) counts as a
wrong answer, as the file scores it: a call that returned nothing did not answer.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.types import UsageError
from runtime.types._errors import unreadable

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["CLEAN_AGENTS", "LEAKY_AGENTS", "Attempt", "Outcomes", "Rate", "load_attempts"]

CLEAN_AGENTS = ("baseline", "retry", "keywords", "advice", "explanation", "instructions")
LEAKY_AGENTS = ("solution", "composite", "unredacted")  # written with the answer in view
_COLUMNS = ("model", "agent", "exam", "problem_id", "attempt", "answer", "correct", "score", "input_tokens",
            "output_tokens", "error")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Attempt:
    """One recorded answer: who gave it, to which question, on which attempt, whether it was right, its tokens."""

    model: str
    agent: str
    exam: str
    problem: str
    attempt: int
    answer: str
    right: bool
    input_tokens: int
    output_tokens: int
    error: bool

    @property
    def question(self) -> tuple[str, str]:
        return self.exam, self.problem


def load_attempts(path: str | Path, *, leaky: bool = False) -> list[Attempt]:
    """Read an attempts file; rows of :data:`LEAKY_AGENTS` are dropped unless ``leaky``.

    Raises:
        UsageError: the file is missing or unreadable, lacks a column, or has a malformed row (named by number).
    """
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise UsageError(f"{p}: not an attempts file: no column {', '.join(missing)}")
            rows = list(enumerate(reader, 2))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{p}: cannot read the attempts ({unreadable(exc)})") from None
    except csv.Error as exc:
        raise UsageError(f"{p}: not CSV ({exc})") from None
    out = []
    for n, row in rows:
        if row["agent"] not in CLEAN_AGENTS + LEAKY_AGENTS:
            raise UsageError(f"{p}: row {n}: unknown agent {row['agent']!r}")
        if row["agent"] in LEAKY_AGENTS and not leaky:
            continue
        try:
            attempt = Attempt(row["model"], row["agent"], row["exam"], row["problem_id"], int(row["attempt"]),
                              row["answer"], _flag(row["score"]), int(row["input_tokens"]),
                              int(row["output_tokens"]), _flag(row["error"]))  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{p}: row {n}: malformed ({exc})") from None
        if attempt.attempt not in (1, 2) or (attempt.attempt == 1) != (attempt.agent == "baseline"):
            raise UsageError(f"{p}: row {n}: agent {attempt.agent!r} on attempt {attempt.attempt}")
        out.append(attempt)
    if not out:
        raise UsageError(f"{p}: no attempts")
    return out


def _flag(text: str | None) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, not {text!r}")
    return text == "1"


@dataclass(frozen=True, slots=True)
class Rate:
    """A success rate measured on ``trials`` questions."""

    successes: int
    trials: int

    @property
    def mean(self) -> float:
        return self.successes / self.trials if self.trials else math.nan

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """The Wilson score interval (sound at rates near 0 or 1, where repairs live)."""
        if not self.trials:
            return 0.0, 1.0
        n, p = self.trials, self.mean
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # it holds p (no rounding out)


class Outcomes:
    """The attempts indexed by question: first answers, repairs, and cross-model cascades."""

    def __init__(self, attempts: Iterable[Attempt]) -> None:
        self._first: dict[str, dict[tuple[str, str], bool]] = {}
        self._second: dict[tuple[str, str], dict[tuple[str, str], bool]] = {}
        for a in attempts:
            if a.attempt == 1:
                self._first.setdefault(a.model, {})[a.question] = a.right
            else:
                self._second.setdefault((a.model, a.agent), {})[a.question] = a.right

    @property
    def models(self) -> list[str]:
        return sorted(self._first)

    def _firsts(self, model: str) -> dict[tuple[str, str], bool]:
        if model not in self._first:
            raise UsageError(f"no first attempts of model {model!r} (known: {', '.join(self.models)})")
        return self._first[model]

    def answers(self, model: str) -> dict[tuple[str, str], bool]:
        """Whether the model answered each question right at once."""
        return dict(self._firsts(model))

    def second_answers(self, model: str, agent: str = "retry") -> dict[tuple[str, str], bool]:
        """Whether the model's second attempt (by ``agent``) was right, on the questions it got wrong at once."""
        return dict(self._second.get((model, agent), {}))

    def first(self, model: str) -> Rate:
        """P(right at once)."""
        answers = self._firsts(model)
        return Rate(sum(answers.values()), len(answers))

    def repair(self, model: str, agent: str = "retry") -> Rate:
        """P(second attempt right | the model's own first was wrong), over the questions it got wrong."""
        wrong = [q for q, ok in self._firsts(model).items() if not ok]
        second = self._second.get((model, agent), {})
        seen = [second[q] for q in wrong if q in second]
        return Rate(sum(seen), len(seen))

    def after(self, model: str, failed: Sequence[str]) -> Rate:
        """P(right at once | every model in ``failed`` got the question wrong at once)."""
        answers = self._firsts(model)
        others = [self._firsts(f) for f in failed]
        asked = [q for q in answers if all(q in o and not o[q] for o in others)]
        return Rate(sum(answers[q] for q in asked), len(asked))
