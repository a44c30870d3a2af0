"""SQL execution as a verifier: run a candidate query read-only on SQLite and compare its result with the gold query's.

The comparison is Spider's execution accuracy as its test-suite evaluation computes it: the two results are equal as
multisets of rows (order-insensitive), or as lists when the gold query orders its top level (``ORDER BY``); columns
may come in another order (the candidate's columns are matched to the gold's by permutation, for up to
:data:`MAX_PERMUTED` columns). Floats are compared at 9 significant digits and integral floats equal their integers,
so ``AVG`` computed in another order, or ``3.0`` against ``3``, still match.

The database is opened read-only twice over (URI ``mode=ro`` and ``PRAGMA query_only``), and an authorizer lets a
statement only read tables and call functions: ``ATTACH``, ``PRAGMA``, writes and schema changes are refused before
they run. One statement only (sqlite3 refuses a second). A progress handler aborts a query past its time limit, and
more rows than the row limit fail the check. Everything fails closed: a check that cannot decide says no, and its
``detail`` (what a repair prompt would show) says why.
"""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from runtime.types import UsageError, Verdict, Verifier

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MAX_PERMUTED", "Outcome", "SqlVerifier", "check_sql", "execute", "ordered", "same_result"]

MAX_PERMUTED = 6  # the most columns whose order is searched (6! = 720 permutations)
_TICKS = 1_000  # SQLite VM instructions between two looks at the clock
_MAX_VALUE = 1_000_000  # the longest string or blob a query may make, in bytes
_SHOWN = 160  # the longest row or error shown in a detail
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n(.*?)```", re.DOTALL)
_ORDER = re.compile(r"\border\s+by\b", re.IGNORECASE)
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What running one query gave: its rows and column count, or why it has none (``error``)."""

    rows: tuple[Row, ...] = ()
    columns: int = 0
    error: str | None = None


def execute(database: Path | str, sql: str, *, timeout_s: float = 2.0, max_rows: int = 10_000) -> Outcome:
    """Run ``sql`` on ``database`` read-only, within ``timeout_s`` seconds and ``max_rows`` rows.

    Never raises for anything in ``sql``: an error, a write, a second statement, a timeout or too many rows come back
    as :attr:`Outcome.error`. A database that cannot be opened is an error too.
    """
    deadline = time.monotonic() + timeout_s
    timed_out = False

    def progress() -> int:
        nonlocal timed_out
        timed_out = time.monotonic() > deadline
        return int(timed_out)

    try:
        conn = sqlite3.connect(Path(database).resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
    except (sqlite3.Error, ValueError, OSError) as exc:
        return Outcome(error=f"cannot open the database: {_short(exc)}")
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE)  # no giant strings or blobs
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(progress, _TICKS)
        cursor = conn.execute(sql)
        if cursor.description is None:
            return Outcome(error="not a query: it returns no columns (only one SELECT may run)")
        rows = cursor.fetchmany(max_rows + 1)
        if len(rows) > max_rows:
            return Outcome(error=f"returned more than {max_rows} rows (the limit); a condition or LIMIT is missing")
        return Outcome(tuple(tuple(r) for r in rows), len(cursor.description))
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError, RecursionError) as exc:
        if timed_out:
            return Outcome(error=f"timed out after {timeout_s:g} s")
        message = _short(exc)
        if any(w in message for w in ("not authorized", "authorization denied", "prohibited", "readonly")):
            message = f"only a read-only SELECT may run ({message})"
        elif "one statement at a time" in message:
            message = f"only one statement may run ({message})"
        return Outcome(error=f"SQLite error: {message}")
    finally:
        conn.close()


def ordered(gold_sql: str) -> bool:
    """Whether the gold query's result is ordered: its top level (outside parentheses) has ORDER BY."""
    depth, top = 0, []
    for ch in re.sub(r"'(?:[^']|'')*'", "''", gold_sql):
        depth += (ch == "(") - (ch == ")")
        top.append(ch if depth == 0 else " ")
    return _ORDER.search("".join(top)) is not None


def same_result(got: Outcome, gold: Outcome, *, in_order: bool) -> Verdict:
    """Spider's execution match of two results (see the module docstring), with the first difference as detail."""
    if got.error is not None:
        return Verdict(False, got.error)
    if got.columns != gold.columns:
        return Verdict(False, f"returned {got.columns} columns, expected {gold.columns}")
    want = [_norm(r) for r in gold.rows]
    rows = [_norm(r) for r in got.rows]
    if len(rows) != len(want):
        return Verdict(False, f"returned {len(rows)} rows, expected {len(want)}{_sample(rows, want)}")
    for perm in _permutations(rows, want, gold.columns):
        moved = [tuple(r[i] for i in perm) for r in rows]
        if (moved == want) if in_order else Counter(moved) == Counter(want):
            return Verdict(True)
    if Counter(rows) == Counter(want):
        return Verdict(False, f"the right {len(rows)} rows in the wrong order{_first_diff(rows, want)}")
    return Verdict(False, f"returned {len(rows)} rows as expected, but different ones{_sample(rows, want)}")


def check_sql(
    database: Path | str, candidate: str, gold_sql: str, *, timeout_s: float = 2.0, max_rows: int = 10_000
) -> Verdict:
    """Whether ``candidate`` returns what ``gold_sql`` returns on ``database`` (blocking; see :class:`SqlVerifier`).

    Raises:
        UsageError: the gold query itself fails (no candidate can be judged against it).
    """
    return SqlVerifier(database, gold_sql, timeout_s=timeout_s, max_rows=max_rows).check_sync(candidate)


class SqlVerifier(Verifier):
    """Passes an output whose SQL (the first fenced block, else all of it) returns the gold query's result.

    The gold result is computed on the first check and kept. Raises :class:`runtime.types.UsageError` from
    ``check`` when the gold query fails, and at construction when the database file does not exist.
    """

    def __init__(self, database: Path | str, gold_sql: str, *, timeout_s: float = 2.0, max_rows: int = 10_000) -> None:
        self.database = Path(database)
        if not self.database.is_file():
            raise UsageError(f"no SQLite database at {self.database}")
        if not (timeout_s > 0 and max_rows > 0):
            raise UsageError(f"timeout_s={timeout_s!r} and max_rows={max_rows!r} must be > 0")
        self.gold_sql = gold_sql
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self._gold: Outcome | None = None
        self._lock = threading.Lock()

    def gold(self) -> Outcome:
        with self._lock:
            if self._gold is None:
                gold = execute(self.database, self.gold_sql, timeout_s=self.timeout_s, max_rows=self.max_rows)
                if gold.error is not None:
                    raise UsageError(f"the gold query fails on {self.database.name}: {gold.error}")
                self._gold = gold
            return self._gold

    def check_sync(self, output: str) -> Verdict:
        gold = self.gold()
        got = execute(self.database, extract_sql(output), timeout_s=self.timeout_s, max_rows=self.max_rows)
        return same_result(got, gold, in_order=ordered(self.gold_sql))

    async def check(self, output: str, allowance_pusd: int = 0) -> Verdict:
        # The progress handler bounds the thread's work by timeout_s, so it is never abandoned.
        return await anyio.to_thread.run_sync(self.check_sync, output)


def extract_sql(text: str) -> str:
    """The first Markdown-fenced block of ``text``, or all of it."""
    m = _FENCE.search(text)
    return m.group(1) if m else text


def _authorize(action: int, *args: object) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def _norm(row: Row) -> Row:
    return tuple(_value(v) for v in row)


def _value(v: Any) -> Any:
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer():
            return int(v)
        return float(f"{v:.9g}") if math.isfinite(v) else v
    return v


def _permutations(rows: Sequence[Row], want: Sequence[Row], n: int) -> list[tuple[int, ...]]:
    """Column orders of ``rows`` that could match ``want``: the identity first, then (for few columns) every order
    whose columns hold the same values as the gold's, column by column."""
    identity = tuple(range(n))
    if n > MAX_PERMUTED or n < 2:
        return [identity]
    got_cols = [Counter(map(repr, (r[i] for r in rows))) for i in range(n)]
    want_cols = [Counter(map(repr, (r[i] for r in want))) for i in range(n)]
    perms = [p for p in itertools.permutations(range(n)) if all(got_cols[p[i]] == want_cols[i] for i in range(n))]
    return [identity, *(p for p in perms if p != identity)]


def _sample(rows: Sequence[Row], want: Sequence[Row]) -> str:
    missing = Counter(want) - Counter(rows)
    extra = Counter(rows) - Counter(want)
    if missing:
        return f"; e.g. expected row {_show(next(iter(missing)))} is missing"
    if extra:
        return f"; e.g. row {_show(next(iter(extra)))} is not expected"
    return ""


def _first_diff(rows: Sequence[Row], want: Sequence[Row]) -> str:
    for i, (a, b) in enumerate(zip(rows, want, strict=True)):
        if a != b:
            return f"; row {i + 1} is {_show(a)}, expected {_show(b)}"
    return ""


def _show(row: Row) -> str:
    text = repr(row)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
