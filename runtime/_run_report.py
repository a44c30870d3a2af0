"""A run as its journal tells it, drawn: ``runtime.report(journal, out="report.html")`` writes one page that works
offline, and ``png=`` the same charts through matplotlib.

A journal is untrusted input (any file may be handed in). Only the fields named here are read, so no other field (a
key's, say) can reach the page; every text is escaped where it is drawn; and an event whose fields are missing or of
the wrong type is a :class:`UsageError`, never a ``KeyError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from runtime._run_report_html import render_html
from runtime._sinks import read_journal
from runtime.types import Event, SampleStatus, UsageError

__all__ = ["BatchBar", "Lane", "MoneyPoint", "Rejection", "RunEnd", "RunReport", "read_run", "report"]

_MAX_S = 1e9  # about 32 years: no run lasts longer, and later times would overflow the drawing
Journal = str | PathLike[str] | Iterable[Event | Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class BatchBar:
    """One batch: launched at ``start_s``, over when its last sample ended (``end_s``; None if the journal stops
    first). ``outcome`` is ``won`` (it completed its subtask), ``failed`` (every sample ended without
    a success), ``cancelled`` (the deadline or the run's end cut samples off) or ``open``."""

    batch: int
    model: str
    k: int
    start_s: float
    end_s: float | None
    outcome: str
    succeeded: int
    failed: int
    errored: int
    cancelled: int
    cost_pusd: int
    error: str | None  # the first sample error the endpoint gave, if any


@dataclass(frozen=True, slots=True)
class Lane:
    """A subtask's batches, in launch order, and when it completed (None: never)."""

    subtask: str
    batches: tuple[BatchBar, ...]
    completed_s: float | None

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b.model for b in self.batches))

    def total(self, what: str) -> int:
        """The sum of one of the batches' counts over the lane (``succeeded``, ``cost_pusd``, ``k``...)."""
        return sum(int(getattr(b, what)) for b in self.batches)


@dataclass(frozen=True, slots=True)
class MoneyPoint:
    """The ledger right after an event: money spent and money held by reservations, in pico-dollars."""

    t: float
    spent_pusd: int
    held_pusd: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """A launch the executor refused (``reason``: budget or deadline)."""

    t: float
    subtask: str
    model: str
    k: int
    reason: str


@dataclass(frozen=True, slots=True)
class RunEnd:
    """What ``run_finished`` said."""

    t: float
    success: bool
    reason: str | None
    detail: str | None
    spent_pusd: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class RunReport:
    """A run rebuilt from its events: the header, one lane per subtask (those never launched too), the planner's
    decisions and the ledger over time. ``end`` is None when the journal stops before ``run_finished`` (a killed
    process); ``unnamed`` counts subtasks the run had but no event names (a journal older than ``subtask_ids``)."""

    run_id: str
    workflow: str
    planner: str
    seed: int
    budget_pusd: int
    deadline_s: float
    models: tuple[str, ...]
    lanes: tuple[Lane, ...]
    decisions: tuple[float, ...]
    rejections: tuple[Rejection, ...]
    money: tuple[MoneyPoint, ...]
    deadline_hit_s: float | None
    end: RunEnd | None
    unnamed: int

    @property
    def last_s(self) -> float:
        """The latest time any event mentions."""
        ends = [b.end_s or b.start_s for lane in self.lanes for b in lane.batches]
        return max([0.0, *ends, *self.decisions, *(m.t for m in self.money), self.end.t if self.end else 0.0])

    def html(self) -> str:
        """The report as one self-contained HTML page."""
        return render_html(self)


def report(
    journal: Journal, *, out: str | PathLike[str] | None = None, png: str | PathLike[str] | None = None
) -> RunReport:
    """Draw a run from its journal: a JSONL file (``journal=`` of a run) or the events themselves.

    Args:
        journal: the journal's path, or the run's events (:class:`runtime.Event` objects or their ``to_dict()``).
        out: where to write the HTML page (overwritten), or None for none (:meth:`RunReport.html` makes it).
        png: where to write the timeline and the money as a PNG (needs matplotlib: ``pip install 'ontime[bench]'``).

    Raises:
        UsageError: the journal cannot be read, is not one workflow run's, or holds a malformed event; a file cannot
            be written; matplotlib is missing for ``png``.
    """
    drawn = read_run(journal)
    if out is not None:
        _write(out, lambda p: p.write_text(drawn.html(), encoding="utf-8"))
    if png is not None:
        from runtime._run_report_png import draw_png  # matplotlib loads only when a PNG is asked for

        _write(png, lambda p: draw_png(drawn, p))
    return drawn


def _write(path: str | PathLike[str], write: Callable[[Path], object]) -> None:
    """``write(path)``, a file that cannot be written said as a :class:`UsageError`."""
    try:
        write(Path(path))
    except OSError as exc:
        raise UsageError(f"cannot write the report {str(path)!r}: {exc.strerror or exc}") from None


def read_run(journal: Journal) -> RunReport:
    """The :class:`RunReport` of a journal file or of a run's events (see :func:`report`)."""
    if isinstance(journal, str | PathLike):
        events: Iterable[Event | Mapping[str, Any]] = read_journal(journal)
        where = str(journal)
    elif isinstance(journal, Iterable):
        events, where = journal, "events"
    else:
        raise UsageError(f"report takes a journal's path or a run's events, not {type(journal).__name__}")
    reader = _Reader(where)
    for n, e in enumerate(events, 1):
        reader.read(_Fields(e.to_dict() if isinstance(e, Event) else e, f"{where}: event {n}"))
    return reader.result()


class _Fields:
    """One event's fields, each checked for its type as it is read."""

    __slots__ = ("_d", "_where", "kind")

    def __init__(self, d: object, where: str) -> None:
        if not isinstance(d, Mapping) or not isinstance(d.get("event"), str):
            raise UsageError(f"{where} is not an event")
        self._d, self._where, self.kind = d, where, str(d["event"])

    def _get(self, name: str, types: type | tuple[type, ...]) -> Any:
        v = self._d.get(name)
        if not isinstance(v, types) or isinstance(v, bool) != (types is bool):  # JSON's true is no count
            raise UsageError(f"{self._where} ({self.kind}): {name!r} is missing or not a {_names(types)}")
        return v

    def has(self, name: str) -> bool:
        return name in self._d

    def items(self, name: str) -> list[Any]:
        return list(self._get(name, list))

    def text(self, name: str) -> str:
        return str(self._get(name, str))

    def maybe_text(self, name: str) -> str | None:
        return None if self._d.get(name) is None else self.text(name)

    def int(self, name: str) -> int:
        v = int(self._get(name, int))
        if abs(v) >= 2**63:  # what the ledger counts in; a larger number would not even convert to a float
            raise UsageError(f"{self._where} ({self.kind}): {name!r} is out of range")
        return v

    def flag(self, name: str) -> bool:
        return bool(self._get(name, bool))

    def time(self, name: str = "t") -> float:
        v = float(self._get(name, (int, float)))
        if not 0 <= v <= _MAX_S:  # NaN too
            raise UsageError(f"{self._where} ({self.kind}): {name!r} is {v}, not a time")
        return v

    def texts(self, name: str) -> tuple[str, ...]:
        items = self.items(name)
        if not all(isinstance(s, str) for s in items):
            raise UsageError(f"{self._where} ({self.kind}): {name!r} is not a list of names")
        return tuple(items)


def _names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


@dataclass(slots=True)
class _Batch:
    """A batch while its events are read."""

    subtask: str
    model: str
    k: int
    start_s: float
    end_s: float | None = None
    ended: int = 0
    won: bool = False
    failed: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    cost_pusd: int = 0
    error: str | None = None

    def bar(self, batch: int) -> BatchBar:
        n = self.statuses.get
        if self.won or not (self.failed or self.ended >= self.k):
            outcome = "won" if self.won else "open"
        else:  # the executor says a batch the deadline cut off failed too: the page tells the two apart
            outcome = "cancelled" if n(SampleStatus.CANCELLED) else "failed"
        return BatchBar(batch, self.model, self.k, self.start_s, self.end_s if self.ended else None, outcome,
                        n(SampleStatus.SUCCEEDED, 0), n(SampleStatus.FAILED, 0), n(SampleStatus.ERROR, 0),
                        n(SampleStatus.CANCELLED, 0), self.cost_pusd, self.error)  # fmt: skip


class _Reader:
    """Folds a run's events into a :class:`RunReport`, one event at a time."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.start: _Fields | None = None
        self.subtasks: dict[str, float | None] = {}  # every name seen, in order, with when it completed
        self.models: dict[str, None] = {}
        self.batches: dict[int, _Batch] = {}
        self.decisions: list[float] = []
        self.rejections: list[Rejection] = []
        self.money: list[MoneyPoint] = []
        self.held = self.spent = 0
        self.deadline_hit: float | None = None
        self.end: RunEnd | None = None

    def read(self, e: _Fields) -> None:
        if e.kind == "run_started":
            self._started(e)
        elif self.start is None:
            raise UsageError(f"{self.where} is not a workflow run's journal: its first event is {e.kind!r}")
        else:
            handler = _HANDLERS.get(e.kind)
            if handler is not None:
                handler(self, e)

    def _started(self, e: _Fields) -> None:
        if self.start is not None:
            raise UsageError(f"{self.where} holds more than one run (a report draws one)")
        self.start = e
        self.models.update(dict.fromkeys(e.texts("models")))
        self.subtasks.update(dict.fromkeys(e.texts("subtask_ids") if e.has("subtask_ids") else ()))

    def _name(self, subtask: str, model: str) -> None:
        self.subtasks.setdefault(subtask, None)
        self.models.setdefault(model, None)

    def _decision(self, e: _Fields) -> None:
        self.decisions.append(e.time())
        for launch in e.items("launches"):
            if not (
                isinstance(launch, list | tuple) and len(launch) == 3 and all(isinstance(s, str) for s in launch[:2])
            ):
                raise UsageError(f"{self.where}: decision_made at t={e.time()} has a malformed launch")
            self._name(launch[0], launch[1])

    def _rejected(self, e: _Fields) -> None:
        r = Rejection(e.time(), e.text("subtask"), e.text("model"), e.int("k"), e.text("reason"))
        self._name(r.subtask, r.model)
        self.rejections.append(r)

    def _launched(self, e: _Fields) -> None:
        subtask, model = e.text("subtask"), e.text("model")
        self._name(subtask, model)
        self.batches[e.int("batch")] = _Batch(subtask, model, max(e.int("k"), 0), e.time())

    def _batch(self, e: _Fields) -> _Batch:
        b = self.batches.get(e.int("batch"))
        if b is None:
            raise UsageError(f"{self.where}: {e.kind} at t={e.time()} names batch {e.int('batch')}, never launched")
        return b

    def _sample(self, e: _Fields) -> None:
        b, status = self._batch(e), e.text("status")
        b.statuses[status] = b.statuses.get(status, 0) + 1
        b.ended += 1
        b.end_s = max(b.end_s or 0.0, e.time())
        b.error = b.error or e.maybe_text("error")

    def _reserved(self, e: _Fields) -> None:
        self.held += e.int("pusd")
        self._money(e)

    def _settled(self, e: _Fields) -> None:
        pusd = e.int("pusd")
        self.held -= pusd + e.int("released_pusd")
        self.spent += pusd
        b = self.batches.get(e.int("batch"))
        if b is not None:
            b.cost_pusd += pusd
        self._money(e)

    def _money(self, e: _Fields) -> None:
        self.money.append(MoneyPoint(e.time(), self.spent, max(self.held, 0)))

    def _completed(self, e: _Fields) -> None:
        self._batch(e).won = True
        self._name(e.text("subtask"), e.text("model"))
        self.subtasks[e.text("subtask")] = e.time()

    def _failed(self, e: _Fields) -> None:
        self._batch(e).failed = True

    def _deadline(self, e: _Fields) -> None:
        self.deadline_hit = e.time()

    def _finished(self, e: _Fields) -> None:
        reason = e.maybe_text("reason")
        self.end = RunEnd(e.time(), e.flag("success"), reason, e.maybe_text("detail"), e.int("spent_pusd"),
                          e.time("elapsed_s"))  # fmt: skip

    def result(self) -> RunReport:
        s = self.start
        if s is None:
            raise UsageError(f"{self.where} is not a workflow run's journal: it has no run_started")
        by_lane: dict[str, list[BatchBar]] = {name: [] for name in self.subtasks}
        for batch, b in self.batches.items():
            by_lane[b.subtask].append(b.bar(batch))
        lanes = tuple(Lane(name, tuple(bars), self.subtasks[name]) for name, bars in by_lane.items())
        return RunReport(
            run_id=s.maybe_text("run_id") or "-",
            workflow=s.maybe_text("workflow") or "-",
            planner=s.maybe_text("planner") or "-",
            seed=s.int("seed"),
            budget_pusd=s.int("budget_pusd"),
            deadline_s=s.time("deadline_s"),
            models=tuple(self.models),
            lanes=lanes,
            decisions=tuple(self.decisions),
            rejections=tuple(self.rejections),
            money=tuple(self.money),
            deadline_hit_s=self.deadline_hit,
            end=self.end,
            unnamed=max(s.int("subtasks") - len(lanes), 0),
        )


_HANDLERS = {
    "decision_made": _Reader._decision,
    "launch_rejected": _Reader._rejected,
    "batch_launched": _Reader._launched,
    "sample_finished": _Reader._sample,
    "budget_reserved": _Reader._reserved,
    "budget_settled": _Reader._settled,
    "subtask_completed": _Reader._completed,
    "batch_failed": _Reader._failed,
    "deadline_hit": _Reader._deadline,
    "run_finished": _Reader._finished,
}
