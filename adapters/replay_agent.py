"""Recorded search-agent turns and the model that replays them (``ontime qa-record``, ``ontime qa-eval --replay``).

A recording is a JSONL file. Its first row is the header::

    {"row": "header", "format": "ontime-qa-recording", "version": 2, "model": "<endpoint model id>",
     "dataset": "<file name>", "questions": ["<question id>", ...], "budgets": [[1, 100], ...],
     "actions": [null, "search", ...], "created": "<ISO 8601 UTC>"}

``questions`` are the data set's questions whose paragraphs make the search index (in order): a replay must search
the same corpus, or the documents, and so the keys, differ. ``actions`` are the directive kinds explored (``null``:
free-running). Then one row per recorded turn::

    {"row": "turn", "question": "...", "trace": [[thought, query, [hit ids], answer, mark], ...], "action": "search",
     "show_budget": true, "budget": [tool_calls, tokens, tool_calls_left, tokens_left], "max_tokens": 230,
     "text": "<the model's output>", "output_tokens": 41, "latency_s": 0.82, "sample": 0}

The first five fields and ``sample`` are the key: what the model's prompt shows (``budget`` is ``null`` unless
``show_budget``, as the prompt carries it only then; ``sample`` is a tree search's new branch from the same prompt,
:attr:`runtime.types.Directive.sample`, 0 when absent). ``max_tokens`` is the allowance the turn was recorded at
(all the tokens left). Last, one row per question whose recording finished:
``{"row": "question", "question": "...", "budgets": [...], "calls": N}``; a question without it (an interrupted
recording) counts as not recorded. A later row for the same key with a larger ``max_tokens`` replaces an earlier one.
No row holds an endpoint's URL or key.

Replaying a turn at allowance ``a``: the recorded output cut to ``a`` (:meth:`ModelTurn.cut`, as the simulated model
cuts) if ``a <= max_tokens``; the output as recorded if the model stopped by itself below ``max_tokens`` (it would
stop there under any larger allowance too); otherwise the turn is unknown, and so is a key never recorded: the replay
fails closed with a :class:`UsageError` naming the question and the step.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from adapters.chat_agent import no_call_mark
from runtime.types import Action, AgentModel, ModelTurn, UsageError
from runtime.types._errors import unreadable

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from runtime.types import Directive, QABudget, Trace

__all__ = ["FORMAT", "VERSION", "Recorded", "Recording", "ReplayModel", "read_recording", "turn_key"]

FORMAT, VERSION = "ontime-qa-recording", 2
_ACTIONS = {a.value: a for a in Action}


def _visible(trace: Trace) -> list[list[Any]]:
    """Each step as the prompt shows it: thought, query, the ids of the documents retrieved, answer, and the mark of
    a step that did neither (a verification, notes, no action)."""
    return [[s.thought, s.query, [h.id for h in s.hits], s.answer,
             no_call_mark(s) if s.query is None and s.answer is None else None] for s in trace.steps]  # fmt: skip


def _shown(directive: Directive, budget: QABudget) -> list[int] | None:
    """The budget numbers the prompt shows: only when it shows the budget."""
    if not directive.show_budget:
        return None
    return [budget.tool_calls, budget.tokens, budget.tool_calls_left, budget.tokens_left]


def turn_key(trace: Trace, directive: Directive, budget: QABudget) -> str:
    """What the model sees in this turn, as one string: its allowance is not part of it."""
    return _key(trace.question, _visible(trace), directive.action, directive.show_budget, _shown(directive, budget),
                directive.sample)  # fmt: skip


def _key(
    question: str, trace: list[list[Any]], action: str | None, show: bool, budget: list[int] | None, sample: int
) -> str:
    return json.dumps([question, trace, action, show, budget, sample], ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded turn: its key's parts, the allowance it was recorded at, and what the model returned."""

    question: str
    trace: list[list[Any]]
    action: str | None
    show_budget: bool
    budget: list[int] | None
    max_tokens: int
    text: str
    output_tokens: int
    latency_s: float
    sample: int = 0

    @classmethod
    def of(cls, trace: Trace, directive: Directive, budget: QABudget, turn: ModelTurn, latency_s: float) -> Recorded:
        """The record of ``turn``, returned for ``directive`` (at its ``max_tokens``)."""
        return cls(trace.question, _visible(trace), directive.action, directive.show_budget,
                   _shown(directive, budget), directive.max_tokens, turn.text, turn.output_tokens,
                   round(latency_s, 4), directive.sample)  # fmt: skip

    @property
    def key(self) -> str:
        return _key(self.question, self.trace, self.action, self.show_budget, self.budget, self.sample)

    def covers(self, max_tokens: int) -> bool:
        """Whether this record says what the model returns under ``max_tokens``."""
        return max_tokens <= self.max_tokens or self.output_tokens < self.max_tokens

    def replay(self, max_tokens: int) -> ModelTurn:
        """The turn under ``max_tokens`` (which it covers); an output over its own allowance is returned as it was,
        so that the agent's audit sees the endpoint that ignored ``max_tokens``."""
        turn = ModelTurn(self.text, self.output_tokens)
        return turn if self.output_tokens > self.max_tokens else turn.cut(max_tokens)

    def to_row(self) -> dict[str, Any]:
        return {"row": "turn", **asdict(self)}


@dataclass(frozen=True, slots=True)
class Recording:
    """A recording file's contents: the header, the turns by key, and each finished question's budgets."""

    header: dict[str, Any]
    turns: dict[str, Recorded]
    finished: dict[str, set[tuple[int, int]]]

    def check_covers(self, questions: Iterable[str], ladder: Sequence[tuple[int, int]]) -> None:
        """Raises UsageError unless every question was recorded to the end at every budget of ``ladder``."""
        for q in questions:
            missing = [b for b in ladder if tuple(b) not in self.finished.get(q.strip(), set())]
            if missing:
                at = ", ".join(f"({t},{k})" for t, k in missing)
                raise UsageError(f"the recording has no finished turns for question {q!r} at budget {at}")


def _field(row: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = row.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise UsageError(f"{where}: field {name!r} is missing or not {getattr(kind, '__name__', 'a number')}")
    return value


def _ints(values: list[Any]) -> bool:
    return all(type(v) is int for v in values)


def _budget(value: Any, where: str) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and _ints(value)):
        raise UsageError(f"{where}: a budget must be [tool calls, tokens], not {value!r}")
    return value[0], value[1]


def _turn(row: dict[str, Any], where: str) -> Recorded:
    trace = _field(row, "trace", list, where)
    for step in trace:
        ok = isinstance(step, list) and len(step) == 5 and isinstance(step[0], str) and isinstance(step[2], list)
        if not ok or not all(isinstance(x, str | None) for x in (step[1], step[3], step[4], *step[2])):
            raise UsageError(f"{where}: a trace step must be [thought, query, [hit ids], answer, mark], not {step!r}")
    action = row.get("action")
    if action is not None and action not in _ACTIONS:
        raise UsageError(f"{where}: unknown action {action!r}")
    budget = row.get("budget")
    if budget is not None and not (isinstance(budget, list) and len(budget) == 4 and _ints(budget)):
        raise UsageError(f"{where}: budget must be null or four integers, not {budget!r}")
    return Recorded(
        _field(row, "question", str, where), trace, action, _field(row, "show_budget", bool, where), budget,
        _field(row, "max_tokens", int, where), _field(row, "text", str, where),
        _field(row, "output_tokens", int, where), float(_field(row, "latency_s", (int, float), where)),
        _field(row, "sample", int, where) if "sample" in row else 0,
    )  # fmt: skip


def read_recording(path: Path) -> Recording:
    """Read a recording (the module docstring gives its format).

    Raises:
        UsageError: the file cannot be read, or a row is malformed (the message names the row).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the recording ({unreadable(exc)})") from None
    header: dict[str, Any] | None = None
    turns: dict[str, Recorded] = {}
    finished: dict[str, set[tuple[int, int]]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: row {n}"
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"{where}: not JSON ({getattr(exc, 'msg', exc)})") from None
        kind = row.get("row") if isinstance(row, dict) else None
        if header is None:
            if kind != "header" or row.get("format") != FORMAT or row.get("version") != VERSION:
                raise UsageError(f"{where}: not a recording header ({FORMAT!r} version {VERSION})")
            header = row
            if not all(isinstance(q, str) for q in _field(row, "questions", list, where)):
                raise UsageError(f"{where}: field 'questions' must list question ids")
            for b in _field(row, "budgets", list, where):
                _budget(b, where)
            _field(row, "model", str, where)
        elif kind == "turn":
            rec = _turn(row, where)
            if rec.key not in turns or turns[rec.key].max_tokens < rec.max_tokens:
                turns[rec.key] = rec
        elif kind == "question":
            budgets = _field(row, "budgets", list, where)
            finished.setdefault(_field(row, "question", str, where).strip(), set()).update(
                _budget(b, where) for b in budgets
            )
        else:
            raise UsageError(f"{where}: unknown row kind {kind!r} (header, turn or question)")
    if header is None:
        raise UsageError(f"{path}: empty: no recording header")
    return Recording(header, turns, finished)


class ReplayModel(AgentModel):
    """The recorded model: every turn is looked up by what the model sees; none calls an endpoint.

    Args:
        recording: a :class:`Recording` or the path of a recording file.
    """

    def __init__(self, recording: Recording | Path) -> None:
        self.recording = recording if isinstance(recording, Recording) else read_recording(recording)

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        rec = self.recording.turns.get(turn_key(trace, directive, budget))
        if rec is None or not rec.covers(directive.max_tokens):
            why = "was never recorded" if rec is None else f"was recorded at max_tokens={rec.max_tokens} only"
            raise UsageError(
                f"replay: question {trace.question!r}, step {len(trace.steps) + 1}: the turn for directive "
                f"{directive.action or 'free'} (show_budget={directive.show_budget}, max_tokens={directive.max_tokens})"
                f" {why}; record it with ontime qa-record"
            )
        return rec.replay(directive.max_tokens)
