"""Where events go: structlog (JSON lines), a JSONL journal file, and a replay of the ledger from either.

A sink is any callable taking an :class:`Event`. The journal holds every event's ``to_dict()`` on its
own line, so :func:`replay_ledger` can rebuild the ledger of a run from the file alone (invariant 3).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

from runtime.types import Event, InvariantError, SinkError, UsageError
from runtime.types._errors import unreadable

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = [
    "JournalSink",
    "LedgerAudit",
    "LedgerReplay",
    "Sink",
    "StructlogSink",
    "TornJournalWarning",
    "read_journal",
    "replay_ledger",
    "check_sinks",
    "user_sinks",
]

Sink = Callable[[Event], None]


class StructlogSink:
    """Logs every event through structlog as ``logger.info(kind, run_id=..., **fields)``.

    How the lines look (JSON, console) is the application's structlog configuration; the ``ontime``
    CLI renders JSON lines. A completed subtask's output is logged as its length (``output_chars``), not its
    text: a log line is for watching a run, and outputs can be long or private (the journal keeps them).
    """

    __slots__ = ("_log",)

    def __init__(self, run_id: str, logger: FilteringBoundLogger | None = None) -> None:
        self._log = (logger or structlog.get_logger("ontime")).bind(run_id=run_id)

    def __call__(self, event: Event) -> None:
        d = event.to_dict()
        kind = d.pop("event")
        if "output" in d:
            output = d.pop("output")
            d["output_chars"] = None if output is None else len(output)
        self._log.info(kind, **d)


class JournalSink:
    """Writes every event as one JSON line to a new file. Each line reaches the operating system when it is
    written (line buffering: a reservation is on file before its request is sent, and a killed process loses
    nothing); :meth:`close` also fsyncs the file, so a finished run survives a power cut too. A run stopped
    before its first event (a signal as it opens) leaves no file, which would only block the path.

    Raises:
        UsageError: the file exists (a journal is never overwritten) or cannot be written (a directory, a
            missing folder, no permission), before the run starts.
    """

    __slots__ = ("_broken", "_f", "_written", "path")

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path).absolute()  # what close() may remove, whatever the working directory is by then
        try:
            self._f: IO[str] = self.path.open("x", encoding="utf-8", buffering=1)
        except FileExistsError:
            raise _exists(path) from None
        except OSError as exc:
            raise UsageError(f"cannot write the journal {str(path)!r}: {exc.strerror or exc}") from None
        self._written = self._broken = False

    def __call__(self, event: Event) -> None:
        try:
            self._f.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
        except OSError:
            self._broken = True  # the run stops with a SinkError; close() must not raise over it
            raise
        self._written = True

    def close(self) -> None:
        """Flush and fsync the file; remove it if the run wrote nothing. Raises :class:`SinkError` if what was
        written cannot be put on disk, unless a write already failed (the run has said so). Idempotent."""
        if self._f.closed:
            return
        already, failed = self._broken, None
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            self._broken, failed = True, exc
        finally:
            with contextlib.suppress(OSError):
                self._f.close()
        if not self._written and not self._broken:
            self.path.unlink(missing_ok=True)
        if failed is not None and not already:
            raise SinkError(f"cannot put the journal {str(self.path)!r} on disk: {failed.strerror or failed}")


def check_sinks(log: object, on_event: object, journal: object) -> None:
    """Raise :class:`UsageError` for sink options of the wrong type, before anything is opened."""
    if not isinstance(log, bool) and not hasattr(log, "bind"):
        raise UsageError(f"log must be True, False or a structlog logger, not {log!r}")
    if on_event is not None and not callable(on_event):
        raise UsageError(f"on_event must be a function of one event, not {on_event!r}")
    if journal is not None and not isinstance(journal, str | PathLike):
        raise UsageError(f"journal must be a file path, not {journal!r}")
    if journal is not None and os.path.lexists(journal):  # said at once, not after a planner is built
        raise _exists(journal)


def _exists(journal: str | PathLike[str]) -> UsageError:
    return UsageError(f"the journal {str(journal)!r} exists: a journal is never overwritten")


def user_sinks(
    run_id: str, log: bool | FilteringBoundLogger, on_event: Sink | None, journal: str | PathLike[str] | None
) -> tuple[Sink, Callable[[], None]]:
    """One sink for what a caller asked for (as :class:`runtime.RunOptions` documents ``log``, ``on_event`` and
    ``journal``), and the function that closes the journal, which the caller must call. Every event reaches
    every sink, the journal first, even when one raises; the first error is raised once all have been called."""
    check_sinks(log, on_event, journal)
    journal_sink = JournalSink(journal) if journal is not None else None
    sinks: list[Sink] = [] if journal_sink is None else [journal_sink]
    if log is not False:
        sinks.append(StructlogSink(run_id, None if log is True else log))
    if on_event is not None:
        sinks.append(on_event)
    close = journal_sink.close if journal_sink is not None else _nothing
    if len(sinks) == 1:  # most runs: the one sink, called directly
        return sinks[0], close

    def emit(event: Event) -> None:
        failed: BaseException | None = None
        for sink in sinks:
            try:
                sink(event)
            except BaseException as exc:  # a Ctrl-C too: the other sinks still get the event
                failed = failed or exc
        if failed is not None:
            raise failed

    return emit, close


def _nothing() -> None:
    return None


class TornJournalWarning(UserWarning):
    """A journal's last line was cut short (its process was killed while writing it); it is left out."""


def read_journal(path: str | PathLike[str]) -> list[dict[str, Any]]:
    """The events of a journal file, as dicts. A torn last line is left out with a :class:`TornJournalWarning`.

    Raises:
        UsageError: the file cannot be read, or a line before the last is not an event.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the journal {str(path)!r}: {unreadable(exc)}") from None
    lines = [line for line in lines if line.strip()]
    events = []
    for n, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            event = None
        if isinstance(event, dict) and "event" in event:
            events.append(event)
        elif n == len(lines):
            warnings.warn(f"{path}: the last line is cut short and left out", TornJournalWarning, stacklevel=2)
        else:
            raise UsageError(f"{path}: line {n} is not an event of a journal")
    return events


@dataclass(frozen=True, slots=True)
class LedgerReplay:
    """The ledger rebuilt from a run's events (money in pico-dollars, times in run seconds)."""

    budget_pusd: int
    spent_pusd: int
    reserved_pusd: int
    peak_committed_pusd: int  # the largest spent + reserved seen at any event
    settlements: int
    reported_spent_pusd: int | None  # what run_finished said, if the log has it
    deadline_s: float
    last_launch_s: float | None  # when the last batch was launched
    last_activity_s: float  # when the last sample ended


class LedgerAudit:
    """A sink that rebuilds the ledger event by event and checks it as it goes.

    Raises:
        InvariantError: a settlement for an unknown reservation, or more settled than was reserved.
    """

    __slots__ = (
        "_budget",
        "_deadline",
        "_held",
        "_last_end",
        "_last_launch",
        "_peak",
        "_reported",
        "_reserved",
        "_settles",
        "_spent",
    )

    def __init__(self) -> None:
        self._budget = self._spent = self._reserved = self._peak = self._settles = 0
        self._reported: int | None = None
        self._held: dict[int, int] = {}
        self._deadline = 0.0
        self._last_launch: float | None = None
        self._last_end = 0.0

    def __call__(self, event: Event | Mapping[str, Any]) -> None:
        d = event.to_dict() if isinstance(event, Event) else event
        kind = d["event"]
        if kind == "run_started":
            self._budget = d["budget_pusd"]
            self._deadline = d["deadline_s"]
        elif kind == "budget_reserved":
            self._held[d["reservation"]] = d["pusd"]
            self._reserved += d["pusd"]
        elif kind == "budget_settled":
            r = d["reservation"]
            share = d["pusd"] + d["released_pusd"]
            if self._held.get(r, -1) < share:
                raise InvariantError(f"settlement of {share} pusd from reservation {r} holding {self._held.get(r)}")
            self._held[r] -= share
            self._reserved -= share
            self._spent += d["pusd"]
            self._settles += 1
        elif kind == "batch_launched":
            self._last_launch = d["t"]
        elif kind == "sample_finished":
            self._last_end = max(self._last_end, d["t"])
        elif kind == "run_finished":
            self._reported = d["spent_pusd"]
        self._peak = max(self._peak, self._spent + self._reserved)

    def result(self) -> LedgerReplay:
        return LedgerReplay(
            budget_pusd=self._budget,
            spent_pusd=self._spent,
            reserved_pusd=self._reserved,
            peak_committed_pusd=self._peak,
            settlements=self._settles,
            reported_spent_pusd=self._reported,
            deadline_s=self._deadline,
            last_launch_s=self._last_launch,
            last_activity_s=self._last_end,
        )


def replay_ledger(events: Iterable[Mapping[str, Any] | Event]) -> LedgerReplay:
    """Rebuild the dollar ledger of one run from its events (a journal, or events collected live)."""
    audit = LedgerAudit()
    for e in events:
        audit(e)
    return audit.result()
