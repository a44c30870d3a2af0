"""The data sets BayesFlow, AFlow and MaAS report on, as workflow inputs with gold answers and scorers.

    problems = load_dataset("gsm8k", data_dir, split="validate")
    score(problems[0], workflow_output)          # in [0, 1]; code sets run the hidden tests in the sandbox
    await ascore(problems[0], workflow_output)   # the same from async code (cancelling it kills the tests)

``data_dir`` is a folder of AFlow's split files (``<name>_validate.jsonl``, ``<name>_test.jsonl``, the code sets'
``<name>_public_test.jsonl``; MASArena's copy, MIT) or a folder that holds such a ``workflowgen/`` folder.
:data:`EXAMPLES` is a few rows of each, shipped so that tests and demos run without the data. HotpotQA has a
validation split only.

A problem's ``text`` is the one string a workflow gets (AFlow's input for each set; a multiple-choice question is
rendered as the recorded exams are: question, a blank line, ``Choices:``, one ``X. option`` line per option).
``answer`` is the gold, which a workflow never sees: the number (GSM8K), the last boxed answer of the reference
solution (MATH), the gold spans joined by ``|`` (DROP), the span (HotpotQA), the letter (MMLU-Pro), the reference
solution's code (MBPP, HumanEval). Code problems carry ``public_tests`` (a test source ``exec_code`` runs by
default; None where the data set has none) and the hidden ``tests`` that pass@1 runs. The metric of each set is in
:mod:`tools.workflowgen_scorers`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runtime.types import UsageError
from runtime.types._errors import unreadable
from tools.sandbox import arun_tests, run_tests
from tools.workflowgen_scorers import choice_score, extract_code, f1_score, gsm8k_score, last_boxed, math_score

if TYPE_CHECKING:
    from collections.abc import Callable

    from tools.sandbox import Limits, SandboxResult

__all__ = [
    "DATASETS",
    "EXAMPLES",
    "TASK_KIND",
    "Problem",
    "Split",
    "ascore",
    "load_dataset",
    "score",
]

Split = Literal["validate", "test"]
DATASETS = ("gsm8k", "math", "drop", "hotpotqa", "mbpp", "humaneval", "mmlu_pro")
# The task kinds of the meta-LLM's prompt protocol (``Task kind:``), by data set.
TASK_KIND = {"gsm8k": "math", "math": "math", "drop": "qa", "hotpotqa": "qa", "mbpp": "code", "humaneval": "code",
             "mmlu_pro": "exam"}  # fmt: skip
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "workflowgen"
_LETTERS = "ABCDEFGHIJ"
_Public = dict[str, list[list[str]]]
# HumanEval problems whose rows in the public test file fail the reference solution (another problem's asserts, or
# wrong ones; measured on MASArena's copy, see tests/test_workflowgen.py): they get no public tests, as AFlow drops
# the public tests of a list of entry points for the same reason.
_WRONG_PUBLIC = frozenset(f"HumanEval/{i}" for i in (33, 41, 47, 53, 116, 148))
_FILES = {("mmlu_pro", "validate"): ("mmlu_pro_validation.jsonl", "mmlu_pro_validate.jsonl")}


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: the workflow's input and what its output is scored against (see the module docstring)."""

    dataset: str
    id: str
    text: str
    answer: str = field(repr=False)
    public_tests: str | None = None
    entry_point: str | None = None
    tests: str | None = field(default=None, repr=False)


def load_dataset(
    name: str, data_dir: str | Path, split: Split = "validate", *, limit: int | None = None
) -> list[Problem]:
    """The problems of one split of data set ``name`` (one of :data:`DATASETS`), in file order.

    Raises:
        UsageError: an unknown data set or split, a bad ``limit``, a missing or unreadable file, or a malformed
            row.
    """
    if name not in DATASETS:
        raise UsageError(f"unknown data set {name!r}: one of {', '.join(DATASETS)}")
    if split not in ("validate", "test"):
        raise UsageError(f"unknown split {split!r}: validate or test")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise UsageError(f"limit must be a non-negative integer, not {limit!r}")
    folder = Path(data_dir)
    if (folder / "workflowgen").is_dir():
        folder = folder / "workflowgen"
    rows = _rows(_find(folder, _FILES.get((name, split), (f"{name}_{split}.jsonl",))))
    if limit is not None:
        rows = rows[:limit]
    public: _Public = {}
    if TASK_KIND[name] == "code":
        public = _public(_rows(_find(folder, (f"{name}_public_test.jsonl",))), name)
    problems = []
    for where, row in rows:
        try:
            problems.append(_READERS[name](row, split, public))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"{where}: not a {name} row ({type(exc).__name__}: {exc})") from exc
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise UsageError(f"{folder}: {name} {split} has duplicate problem ids")
    return problems


def _find(folder: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise UsageError(f"no data file {names[0]!r} in {folder}")


def _rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {unreadable(exc)}") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{n}: not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{n}: a row must be a JSON object")
        rows.append((f"{path}:{n}", row))
    return rows


def _public(rows: list[tuple[str, dict[str, Any]]], name: str) -> _Public:
    """The public test rows (their asserts on ``candidate``) by problem id (HumanEval) or entry point (MBPP,
    where several problems may share one: ``_mbpp`` tells them apart by their own test lists)."""
    out: _Public = {}
    for where, row in rows:
        tests, entry = row.get("test"), row.get("entry_point")
        if not (isinstance(tests, list) and all(isinstance(t, str) for t in tests) and isinstance(entry, str)):
            raise UsageError(f"{where}: a public test row needs a list of asserts 'test' and an 'entry_point'")
        key = str(row["problem_id"]) if name == "humaneval" and "problem_id" in row else entry
        out.setdefault(key, []).append(tests)
    return out


def _public_source(entry: str, asserts: list[str], imports: str = "") -> str | None:
    """A test source ``exec_code`` can run after a solution: ``candidate`` bound to the entry point, the asserts."""
    head = f"{imports}\ncandidate = {entry}\n" if imports else f"candidate = {entry}\n"
    return head + "\n".join(asserts) + "\n" if asserts else None


def _str(row: dict[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TypeError(f"field {key!r} must be a string")
    return str(value)


def _gsm8k(row: dict[str, Any], split: str, public: _Public) -> Problem:
    return Problem("gsm8k", _str(row, "id"), _str(row, "question"), _str(row, "answer"))


def _math(row: dict[str, Any], split: str, public: _Public) -> Problem:
    gold = last_boxed(_str(row, "solution"))
    if gold is None:
        raise ValueError("the solution has no \\boxed answer")
    ident = row.get("id", row.get("unique_id"))
    text = _str(row, "problem")
    return Problem("math", str(ident) if ident is not None else f"{split}-{_digest(text)}", text, gold)


def _drop(row: dict[str, Any], split: str, public: _Public) -> Problem:
    return Problem("drop", _str(row, "id"), _str(row, "context"), _str(row, "ref_text"))


def _hotpotqa(row: dict[str, Any], split: str, public: _Public) -> Problem:
    paragraphs = [" ".join(sentences) for _, sentences in row["context"]]  # AFlow's input: no titles
    text = "Context: " + "\n".join(paragraphs) + f"\n\nQuestion: {_str(row, 'question')}\n\nAnswer:"
    return Problem("hotpotqa", _str(row, "_id"), text, _str(row, "answer"))


def _mmlu_pro(row: dict[str, Any], split: str, public: _Public) -> Problem:
    options = row["options"]
    if not (isinstance(options, list) and 2 <= len(options) <= len(_LETTERS)):
        raise ValueError("options must be a list of 2 to 10 choices")
    choices = "\n".join(f"{_LETTERS[i]}. {o}" for i, o in enumerate(options))
    answer = _str(row, "answer")
    if answer not in _LETTERS[: len(options)]:
        raise ValueError(f"answer {answer!r} is not one of the choices' letters")
    text = f"{_str(row, 'question')}\n\nChoices:\n{choices}"
    return Problem("mmlu_pro", f"{split}-{_str(row, 'question_id')}", text, answer)


def _mbpp(row: dict[str, Any], split: str, public: _Public) -> Problem:
    entry = _str(row, "entry_point")
    imports = "\n".join(row["test_imports"])
    hidden = f"{imports}\n{_str(row, 'test')}\n\ncheck()\n"
    # A public assert is this problem's if it is one of its own tests (on ``candidate`` or on the entry point):
    # that tells apart problems sharing an entry point and drops the public file's garbled rewrites.
    own = {t.replace(" ", "") for t in row["test_list"]}
    kept = [[t for t in group if t.replace("candidate(", f"{entry}(").replace(" ", "") in own]
            for group in public.get(entry, [])]  # fmt: skip
    tests = _public_source(entry, max(kept, key=len, default=[]), imports)
    return Problem("mbpp", _str(row, "task_id"), _str(row, "prompt"), _str(row, "code"), tests, entry, hidden)


def _humaneval(row: dict[str, Any], split: str, public: _Public) -> Problem:
    entry, task = _str(row, "entry_point"), _str(row, "task_id")
    prompt = _str(row, "prompt")
    hidden = f"{_str(row, 'test')}\n\ncheck({entry})\n"
    key = task.replace("_", "/")
    tests = None if key in _WRONG_PUBLIC else _public_source(entry, next(iter(public.get(key, [])), []))
    return Problem("humaneval", task, prompt, prompt + _str(row, "canonical_solution"), tests, entry, hidden)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_READERS: dict[str, Callable[[dict[str, Any], str, _Public], Problem]] = {
    "gsm8k": _gsm8k, "math": _math, "drop": _drop, "hotpotqa": _hotpotqa, "mbpp": _mbpp, "humaneval": _humaneval,
    "mmlu_pro": _mmlu_pro,
}  # fmt: skip

_TEXT_SCORERS: dict[str, Callable[[str, str], float]] = {
    "gsm8k": gsm8k_score, "math": math_score, "drop": f1_score, "hotpotqa": f1_score, "mmlu_pro": choice_score,
}  # fmt: skip


def score(problem: Problem, output: str, *, limits: Limits | None = None) -> float:
    """The output's score on the problem's metric, in [0, 1]. Code runs in the sandbox (blocking: from async
    code use :func:`ascore`).

    Raises:
        SandboxError: the sandbox itself could not start (never for what the output holds).
    """
    if problem.tests is not None:
        return _passed(run_tests(extract_code(output, problem.entry_point), problem.tests, limits=limits))
    return _TEXT_SCORERS[problem.dataset](output, problem.answer)


async def ascore(problem: Problem, output: str, *, limits: Limits | None = None) -> float:
    """:func:`score` for async code: the sandbox runs in a worker thread and cancelling it kills the tests."""
    if problem.tests is not None:
        return _passed(await arun_tests(extract_code(output, problem.entry_point), problem.tests, limits=limits))
    return _TEXT_SCORERS[problem.dataset](output, problem.answer)


def _passed(result: SandboxResult) -> float:
    return float(result.passed)
