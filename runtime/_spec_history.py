"""The spec's repair loops and history-dependent success (README "Repair loops"): parsing and checks.

A subtask may carry ``"loop": {"horizon": H}`` and one history form:

- ``"difficulty": {"spread": S, "classes": C, "repairs": "any" | "own"}``: a hidden difficulty; each profile's
  ``p`` is the model's first-attempt rate and an optional ``repair_p`` its repair's rate after its own failure;
- ``"cascade": {"a": 0.7, "a>a": 0.2, "a>b": 0.6}``: P(the last model succeeds | the ones before it failed);
- ``"replay": {"first": {"a": [1, 0, ...]}, "repair": {"a": [0, 1, ...]}}``: recorded outcomes, a question each.

A loop may have a tool stage on every output, ``"tool": {"latency_s": S, "cost_usd": C}`` (SQL execution, say).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from runtime.types import CascadeTable, LatentClasses, Loop, SpecError
from runtime.types._history import is_rate

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.types import History, Subtask

__all__ = ["HISTORY_KEYS", "check_history", "parse_history"]

HISTORY_KEYS = {"loop", "difficulty", "cascade", "replay"}
MAX_HORIZON = 10_000
MAX_TOOL_SECONDS = 10**6
MAX_TOOL_USD = 1_000.0


def parse_history(
    spec: Mapping[str, Any], profiles: Mapping[str, Any], src: str | None, sid: str
) -> tuple[Loop | None, History | None, dict[str, Any]]:
    """The subtask's loop and history, and its profiles without the ``repair_p`` entries they may carry."""
    at: dict[str, Any] = {"source": src, "subtask": sid}
    loop = None
    if spec.get("loop") is not None:
        raw = spec["loop"]
        if not isinstance(raw, dict) or "horizon" not in raw or not set(raw) <= {"horizon", "tool"}:
            raise SpecError('must be {"horizon": H, "tool": {"latency_s": S, "cost_usd": C}}', **at, field="loop")
        tool = raw.get("tool") or {}
        if not isinstance(tool, dict) or not set(tool) <= {"latency_s", "cost_usd"}:
            raise SpecError('must be {"latency_s": S, "cost_usd": C}', **at, field="loop.tool")
        loop = Loop(horizon=raw["horizon"], tool_latency_s=tool.get("latency_s", 0.0),
                    tool_cost_usd=tool.get("cost_usd", 0.0))  # fmt: skip
    forms = [k for k in ("difficulty", "cascade", "replay") if spec.get(k) is not None]
    if len(forms) > 1:
        raise SpecError(f"give one of difficulty, cascade, replay, not {' and '.join(forms)}", **at, field=forms[1])
    repair_p: dict[str, Any] = {}
    cleaned: dict[str, Any] = {}
    for m, prof in profiles.items():
        if isinstance(prof, dict) and "repair_p" in prof:
            if forms != ["difficulty"]:
                raise SpecError("repair_p goes with a difficulty model", **at, field=f"profiles.{m}.repair_p")
            repair_p[m] = prof["repair_p"]
            prof = {k: v for k, v in prof.items() if k != "repair_p"}
        cleaned[m] = prof
    history: History | None = None
    try:
        if forms == ["difficulty"]:
            history = _difficulty(spec["difficulty"], cleaned, repair_p, at)
        elif forms == ["cascade"]:
            history = _cascade(spec["cascade"], at)
        elif forms == ["replay"]:
            history = _replay(spec["replay"], at)
    except SpecError as exc:
        if exc.subtask is None:  # raised by the types' constructors: say where
            raise SpecError(exc.message, **at, field=exc.field) from None
        raise
    return loop, history, cleaned


def _difficulty(raw: Any, profiles: Mapping[str, Any], repair_p: dict[str, Any], at: dict[str, Any]) -> History:
    if not isinstance(raw, dict) or not set(raw) <= {"spread", "classes", "repairs"} or "spread" not in raw:
        raise SpecError('must be {"spread": S, "classes": C, "repairs": "any" or "own"}', **at, field="difficulty")
    repairs = raw.get("repairs", "any")
    if repairs not in ("any", "own"):
        raise SpecError(f'{repairs!r} is not "any" or "own"', **at, field="difficulty.repairs")
    first = {}
    for m, prof in profiles.items():
        p = prof.get("p") if isinstance(prof, dict) else None
        if p is None:
            raise SpecError("a difficulty model needs a rate p on every profile", **at, field=f"profiles.{m}")
        first[m] = p
    spread, classes = raw["spread"], raw.get("classes", 32)
    if isinstance(spread, bool) or not isinstance(spread, int | float):
        raise SpecError(f"must be a number, not {spread!r}", **at, field="difficulty.spread")
    return LatentClasses.difficulty(first, spread=float(spread), repair=repair_p, classes=classes, repairs=repairs)


def _cascade(raw: Any, at: dict[str, Any]) -> History:
    if not isinstance(raw, dict) or not raw:
        raise SpecError('must be a non-empty object like {"a": 0.7, "a>b": 0.5}', **at, field="cascade")
    rates = {}
    for key, p in raw.items():
        path = tuple(str(key).split(">"))
        if not all(path):
            raise SpecError(f"{key!r} is not a path of model names joined by '>'", **at, field="cascade")
        rates[path] = p
    return CascadeTable(rates)


def _replay(raw: Any, at: dict[str, Any]) -> History:
    if not isinstance(raw, dict) or not set(raw) <= {"first", "repair"} or "first" not in raw:
        raise SpecError('must be {"first": {model: [0 or 1, ...]}, "repair": {...}}', **at, field="replay")
    parts: dict[str, dict[str, list[bool]]] = {}
    for part in ("first", "repair"):
        rows = raw.get(part, {})
        if not isinstance(rows, dict):
            raise SpecError("must map models to lists of 0 and 1", **at, field=f"replay.{part}")
        parts[part] = {}
        for m, xs in rows.items():
            if not isinstance(xs, list) or not all(x in (0, 1) and not isinstance(x, float) for x in xs):
                raise SpecError("must be a list of 0 and 1", **at, field=f"replay.{part}.{m}")
            parts[part][m] = [bool(x) for x in xs]
    return LatentClasses.replay(parts["first"], parts["repair"])


def check_history(s: Subtask, at: dict[str, Any]) -> None:
    """Check a (possibly hand-built) subtask's loop and history against its profiles."""
    if s.loop is not None:
        h = s.loop.horizon
        if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_HORIZON:
            raise SpecError(f"horizon={h!r} must be an integer in [1, {MAX_HORIZON:,}]", **at, field="loop.horizon")
        for name, v, top in (("latency_s", s.loop.tool_latency_s, MAX_TOOL_SECONDS),
                             ("cost_usd", s.loop.tool_cost_usd, MAX_TOOL_USD)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and 0 <= v <= top):
                raise SpecError(f"{v!r} must be a number in [0, {top:g}]", **at, field=f"loop.tool.{name}")
    hist = s.history
    if hist is None:
        return
    if isinstance(hist, LatentClasses):
        w = hist.weights
        if not w or len(w) > 100_000 or not all(is_rate(x) for x in w) or abs(sum(w) - 1.0) > 1e-6:
            raise SpecError("class weights must be probabilities that sum to 1", **at, field="difficulty")
        if hist.repairs not in ("any", "own"):
            raise SpecError(f'{hist.repairs!r} is not "any" or "own"', **at, field="difficulty.repairs")
        for part, rates in (("first", hist.first), ("repair", hist.repair)):
            for m, xs in rates.items():
                if m not in s.profiles:
                    raise SpecError(f"model {m!r} has no profile here", **at, field=f"{part}.{m}")
                if len(xs) != len(w) or not all(is_rate(x) for x in xs):
                    raise SpecError(f"needs {len(w)} rates in [0, 1]", **at, field=f"{part}.{m}")
        missing = [m for m in s.profiles if m not in hist.first or m not in hist.repair]
        if missing:
            raise SpecError(f"no class rates for {', '.join(missing)}", **at, field="difficulty")
    elif isinstance(hist, CascadeTable):
        for path, p in hist.rates.items():
            where = f"cascade.{'>'.join(path)}"
            if not path or any(m not in s.profiles for m in path):
                raise SpecError("names a model without a profile here", **at, field=where)
            if not is_rate(p):
                raise SpecError(f"{p!r} is not a probability in [0, 1]", **at, field=where)
    else:
        raise SpecError("unknown history type", **at, field="history")
