"""The 8 multiple-choice exams of the reflection data (Renze & Guven 2024) as tasks for generated workflows.

A data folder is laid out like the shared data's ``reflection/``: an attempts file (``renze_attempts.csv``; the
slice shipped in ``examples/reflection`` calls it ``attempts_sample.csv``) and ``exams/<exam>.jsonl``, one
question a line (``id``, ``question``, ``context``, ``choices``, ``answer``; ``solution`` and the source fields
are never read). A workflow sees a question as :func:`render` writes it and is scored by :func:`score`; the
questions are split into validation and test 1:4 per exam (:func:`split`), as BayesFlow does. An
:class:`ExamTask` bundles what a benchmark needs for one exam: its questions, the models that answered every
one of them, their list prices, and the ``models`` block of a run (served by
:class:`adapters.recorded_answers.RecordedAnswers`).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.types import UsageError
from runtime.types._errors import unreadable
from tools.reflection_data import load_attempts

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from tools.reflection_data import Attempt

__all__ = ["ATTEMPTS_FILES", "MAX_OUTPUT_TOKENS", "TOKENS_PER_S", "TTFT_S", "ExamQuestion", "ExamTask",
           "attempts_file", "find_data_dir", "load_exams", "load_tasks", "per_question_cost", "render", "score",
           "split"]  # fmt: skip

ATTEMPTS_FILES = ("renze_attempts.csv", "attempts_sample.csv")  # the shared data's name, then the shipped slice's
# The data holds no timings. Assumed for every model, and used both by the models block (what planners predict
# from) and by the recorded-answer adapter (what the run's clock sees): a deadline study should vary them.
TTFT_S = 0.5  # seconds to the first token
TOKENS_PER_S = 50.0  # output tokens per second after it
# Above every recorded first answer (the longest: 1,562 tokens, mistral-large) and all but two retries (6,039 and
# 7,780 tokens: runaway generations, which a real deployment's cap cuts off too).
MAX_OUTPUT_TOKENS = 4096
_LETTERS = "ABCDE"


@dataclass(frozen=True, slots=True)
class ExamQuestion:
    """One question: ``id`` is the attempts file's ``problem_id``; ``choices`` are (letter, text) in order."""

    exam: str
    id: str
    question: str
    context: str
    choices: tuple[tuple[str, str], ...]
    answer: str

    @property
    def key(self) -> tuple[str, str]:
        """(exam, id): what :attr:`tools.reflection_data.Attempt.question` holds."""
        return self.exam, self.id

    @property
    def letters(self) -> str:
        return "".join(letter for letter, _ in self.choices)


def render(q: ExamQuestion) -> str:
    """The problem text a workflow receives: ``[context\\n\\n]question\\n\\nChoices:\\nA. ..\\nB. ..``."""
    head = f"{q.context}\n\n" if q.context else ""
    return f"{head}{q.question}\n\nChoices:\n" + "\n".join(f"{letter}. {text}" for letter, text in q.choices)


_LABELLED = re.compile(r"answer[*_\s]*:[*_\s(\[]*([a-e])(?![a-z0-9])", re.IGNORECASE)
# A capital A-E not inside a word (\u2019: a typographic apostrophe) nor an article before a word.
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'\u2019])([A-E])(?![A-Za-z0-9'\u2019])(?! [a-z])")


def score(output: str, q: ExamQuestion) -> float:
    """1.0 if the output's answer is the key, else 0.0 (never raises).

    The answer is the letter of the last ``Answer: X`` (the label in any case, with markdown or a bracket
    around the letter allowed: ``**Answer:** (b)``; a lowercase letter there counts as its capital). Without
    one, it is the last standalone capital A-E; lowercase letters are words there, and an ``A`` followed by
    a lowercase word is the article. When several answers are given (ties included) the last one counts, as
    a reader takes a reasoner's final word. No letter at all, or one outside the choices, scores 0.
    """
    labelled = _LABELLED.findall(output)
    if labelled:
        letter = labelled[-1].upper()
    else:
        loose = _STANDALONE.findall(output)
        if not loose:
            return 0.0
        letter = loose[-1]
    return 1.0 if letter == q.answer else 0.0


def split(
    questions: Iterable[ExamQuestion], seed: int, validation_fraction: float = 0.2
) -> tuple[list[ExamQuestion], list[ExamQuestion]]:
    """(validation, test): per exam, a seeded shuffle cut at ``round(n x validation_fraction)`` (the paper's 1:4).

    Stratified so that every exam keeps its share in both parts; the same seed gives the same split whatever
    order the questions come in.

    Raises:
        UsageError: the fraction is outside [0, 1].
    """
    if not (isinstance(validation_fraction, int | float) and 0.0 <= validation_fraction <= 1.0):
        raise UsageError(f"validation_fraction must be in [0, 1], not {validation_fraction!r}")
    by_exam: dict[str, list[ExamQuestion]] = {}
    for q in questions:
        by_exam.setdefault(q.exam, []).append(q)
    validation: list[ExamQuestion] = []
    test: list[ExamQuestion] = []
    for exam in sorted(by_exam):
        qs = sorted(by_exam[exam], key=_order)
        random.Random(f"{seed}:{exam}").shuffle(qs)
        cut = round(len(qs) * validation_fraction)
        validation += sorted(qs[:cut], key=_order)
        test += sorted(qs[cut:], key=_order)
    return validation, test


def _order(q: ExamQuestion) -> tuple[bool, int, str]:
    return not q.id.isdigit(), int(q.id) if q.id.isdigit() else 0, q.id


def load_exams(data_dir: str | Path, exams: Sequence[str] | None = None) -> list[ExamQuestion]:
    """The questions of ``data_dir/exams/*.jsonl`` (only ``exams``, by file stem, if given), exam by exam.

    Raises:
        UsageError: no such folder or exam, or a file that is unreadable or malformed (named with its line).
    """
    folder = Path(data_dir) / "exams"
    found = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not found:
        raise UsageError(f"{folder}: no exams (*.jsonl) there")
    names = {p.stem: p for p in found}
    wanted = list(names) if exams is None else list(exams)
    unknown = [e for e in wanted if e not in names]
    if unknown:
        raise UsageError(f"no exam {unknown[0]!r} in {folder} (exams: {', '.join(names)})")
    return [q for exam in wanted for q in _read_exam(names[exam], exam)]


def _read_exam(path: Path, exam: str) -> list[ExamQuestion]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the exam ({unreadable(exc)})") from None
    out: list[ExamQuestion] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(_question(json.loads(line), exam))
        except (ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"{path}: line {n}: not a question ({exc})") from None
    ids = [q.id for q in out]
    if len(set(ids)) != len(ids):
        raise UsageError(f"{path}: question ids repeat")
    if not out:
        raise UsageError(f"{path}: no questions")
    return out


def _question(row: Any, exam: str) -> ExamQuestion:
    if not isinstance(row, dict):
        raise TypeError("a line must be a JSON object")
    qid, question, context, choices = row["id"], row["question"], row.get("context") or "", row["choices"]
    if isinstance(qid, bool) or not isinstance(qid, int | str) or not str(qid):
        raise ValueError(f"bad id {qid!r}")
    if not (isinstance(question, str) and question.strip() and isinstance(context, str)):
        raise ValueError("question must be non-empty text, context text")
    if not isinstance(choices, dict) or not 2 <= len(choices) <= len(_LETTERS):
        raise ValueError("choices must map 2 to 5 letters to their texts")
    if "".join(choices) != _LETTERS[: len(choices)] or not all(isinstance(t, str) for t in choices.values()):
        raise ValueError(f"choices must be lettered {_LETTERS[: len(choices)]} in order, each with its text")
    if row["answer"] not in choices:
        raise ValueError(f"answer {row['answer']!r} is not a choice")
    pairs = tuple((letter, " ".join(text.split())) for letter, text in choices.items())
    return ExamQuestion(exam, str(qid), question.strip(), context.strip(), pairs, row["answer"])


def find_data_dir(given: str | Path | None = None) -> Path:
    """The data folder: ``given``, else ``$ONTIME_DATA_DIR``, else the slice shipped in ``examples/reflection``.

    ``given`` and the variable may name the reflection folder itself or a folder holding ``reflection/`` (as
    ``$ONTIME_DATA_DIR`` does: the shared data's root).

    Raises:
        UsageError: ``given`` holds neither layout (an unusable ``$ONTIME_DATA_DIR`` falls through to the slice).
    """
    env = os.environ.get("ONTIME_DATA_DIR")
    for place, strict in ((given, True), (env, False)):
        if place is None:
            continue
        for d in (Path(place), Path(place) / "reflection"):
            if (d / "exams").is_dir() and any((d / name).is_file() for name in ATTEMPTS_FILES):
                return d
        if strict:
            raise UsageError(f"{place}: not a reflection data folder ({' or '.join(ATTEMPTS_FILES)} and exams/)")
    return Path(__file__).resolve().parent.parent / "examples" / "reflection"


def attempts_file(data_dir: str | Path) -> Path:
    """The attempts file of a data folder.

    Raises:
        UsageError: it has none.
    """
    for name in ATTEMPTS_FILES:
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    raise UsageError(f"{data_dir}: no attempts file ({' or '.join(ATTEMPTS_FILES)})")


@dataclass(frozen=True, slots=True)
class ExamTask:
    """One exam as a benchmark task.

    Attributes:
        exam: the exam's name (its file stem).
        questions: its questions, in id order.
        attempts: the clean recorded attempts on them (``baseline`` and the redacted second attempts; never the
            agents that leak the answer), for :class:`adapters.recorded_answers.AnswerBook`.
        prices: each model's (input, output) list price in dollars per million tokens (genai-prices, through
            :func:`tools.reflection_cascade.price_per_million`); the models are those that answered every
            question of the exam, in name order.
    """

    exam: str
    questions: tuple[ExamQuestion, ...]
    attempts: tuple[Attempt, ...]
    prices: Mapping[str, tuple[float, float]]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.prices)

    def models_block(
        self,
        *,
        tokens_per_s: float = TOKENS_PER_S,
        ttft_s: float = TTFT_S,
        max_output_tokens: int = MAX_OUTPUT_TOKENS,
        base_url: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """The ``models`` block of a workflow spec or program for these models.

        Without ``base_url`` each model is declared ``provider: "sim"`` (no endpoint, no key): the run is given
        :class:`adapters.recorded_answers.RecordedAnswers` for it with ``adapters=``, which replaces the built-in
        simulator. With ``base_url`` (a serve-sim started with ``--recorded-answers``) each is an OpenAI model
        at that URL, under its own name, with a placeholder key serve-sim accepts.
        """
        block: dict[str, dict[str, Any]] = {}
        for name, (inp, out) in self.prices.items():
            entry: dict[str, Any] = {"provider": "sim"}
            if base_url is not None:
                entry = {"provider": "openai", "model": name, "base_url": base_url, "api_key": "serve-sim"}
            block[name] = {
                **entry,
                "input_price_per_mtok": inp,
                "output_price_per_mtok": out,
                "tokens_per_s": tokens_per_s,
                "ttft_s": ttft_s,
                "max_output_tokens": max_output_tokens,
            }
        return block

    def split(self, seed: int, validation_fraction: float = 0.2) -> tuple[list[ExamQuestion], list[ExamQuestion]]:
        """(validation, test) of this exam (:func:`split`)."""
        return split(self.questions, seed, validation_fraction)


def load_tasks(data_dir: str | Path, exams: Sequence[str] | None = None) -> list[ExamTask]:
    """One :class:`ExamTask` per exam of ``data_dir`` that some model answered in full.

    Raises:
        UsageError: as :func:`load_exams` and :func:`tools.reflection_data.load_attempts`, or a model without a
            list price.
    """
    from tools.reflection_cascade import price_per_million

    questions = load_exams(data_dir, exams)
    attempts = load_attempts(attempts_file(data_dir))
    tasks = []
    for exam in dict.fromkeys(q.exam for q in questions):
        qs = tuple(q for q in questions if q.exam == exam)
        ids = {q.id for q in qs}
        rows = tuple(a for a in attempts if a.exam == exam and a.problem in ids)
        answered: dict[str, set[str]] = {}
        for a in rows:
            if a.attempt == 1:
                answered.setdefault(a.model, set()).add(a.problem)
        models = sorted(m for m, seen in answered.items() if seen == ids)
        if models:
            tasks.append(ExamTask(exam, qs, rows, {m: price_per_million(m) for m in models}))
    if not tasks:
        raise UsageError(f"{data_dir}: no model answered every question of any exam")
    return tasks


def per_question_cost(task: ExamTask, model: str) -> float:
    """The model's mean recorded first-answer cost per question of the task, in dollars."""
    inp, out = task.prices[model]
    rows = [a for a in task.attempts if a.model == model and a.attempt == 1]
    return math.fsum(a.input_tokens * inp + a.output_tokens * out for a in rows) / 1e6 / len(rows)
