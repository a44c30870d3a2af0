"""Small helpers shared by the executor tests."""

from __future__ import annotations

from typing import Any

import runtime


def run_collect(wf: Any, budget: float, deadline: float, **kw: Any) -> tuple[runtime.RunResult, list[runtime.Event]]:
    """Run once in virtual time and return the result with every event it emitted."""
    events: list[runtime.Event] = []
    result = runtime.run(wf, budget, deadline, on_event=events.append, log=False, **kw)
    return result, events


def of(events: list[runtime.Event], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def comparable(events: list[runtime.Event]) -> list[dict[str, Any]]:
    """Events without the fields that legitimately differ between two runs of one seed."""
    out = []
    for e in events:
        d = e.to_dict()
        d.pop("run_id", None)
        d.pop("planner_ms", None)
        out.append(d)
    return out
