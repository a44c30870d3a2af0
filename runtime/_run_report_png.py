"""The run report's timeline and money chart as a PNG, drawn with matplotlib (an optional dependency: the ``bench``
and ``test`` extras) on a bare ``Figure``, so no pyplot state or GUI backend is touched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime._run_report_html import FAILED, HELD, SPENT, colors, span_s
from runtime.types import UsageError, to_usd

if TYPE_CHECKING:
    from pathlib import Path

    from runtime._run_report import RunReport

__all__ = ["draw_png"]


def draw_png(r: RunReport, path: Path) -> None:
    """Write the timeline (a lane per subtask) above the money over time, on one time axis, to ``path``.

    Raises:
        UsageError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("a PNG report needs matplotlib: pip install 'ontime[bench]'") from None
    lanes = max(len(r.lanes), 1)
    fig = Figure(figsize=(11, 3.2 + 0.28 * lanes), layout="constrained")
    timeline, money = fig.subplots(2, 1, sharex=True, height_ratios=[0.28 * lanes + 0.6, 2.4])
    _draw_timeline(timeline, r)
    _draw_money(money, r)
    for ax in (timeline, money):
        if r.deadline_s <= span_s(r):
            ax.axvline(r.deadline_s, color=FAILED, linestyle="--", linewidth=1.2)
    money.set_xlim(0, span_s(r))
    money.set_xlabel("seconds")
    fig.suptitle(_plain(f"{r.workflow}: {r.planner}, {_outcome(r)}"), fontsize=11)
    fig.savefig(path, dpi=110, format="png")


def _plain(text: str) -> str:
    """Text from the journal, shown as it is (matplotlib reads a pair of dollar signs as mathematics)."""
    return text.replace("$", r"\$")


def _outcome(r: RunReport) -> str:
    if r.end is None:
        return "unfinished"
    said = "success" if r.end.success else f"failed: {r.end.reason or '-'}"
    limits = f"${to_usd(r.budget_pusd):g} and {r.deadline_s:g} s"  # the deadline may lie past the time axis
    return f"{said}, ${to_usd(r.end.spent_pusd):.4f} in {r.end.elapsed_s:.1f} s of {limits}"


def _draw_timeline(ax: Any, r: RunReport) -> None:
    from matplotlib.patches import Patch

    palette = colors(r.models)
    for row, lane in enumerate(r.lanes):
        for b in lane.batches:
            end = b.end_s if b.end_s is not None else span_s(r)
            broken = b.outcome in ("failed", "cancelled")
            ax.broken_barh([(b.start_s, max(end - b.start_s, span_s(r) / 500))], (row - 0.35, 0.7),
                           facecolor=palette[b.model], edgecolor=FAILED if b.outcome == "failed" else "white",
                           hatch="///" if broken else None, linewidth=1.5 if broken else 0.5)  # fmt: skip
            if b.cancelled:
                ax.plot([end], [row], marker="x", color=FAILED, markersize=6)
        if lane.completed_s is not None:
            ax.plot([lane.completed_s], [row], marker="o", color="black", markersize=4)
    ax.vlines(r.decisions, -1.2, -0.7, color="#444", linewidth=1)
    ax.set_yticks(range(-1, len(r.lanes)), ["decisions", *(_plain(lane.subtask[:30]) for lane in r.lanes)])
    ax.set_ylim(len(r.lanes) - 0.5, -1.5)
    handles = [Patch(color=c, label=_plain(m)) for m, c in palette.items()]
    ax.legend(handles=handles, loc="upper right", fontsize=8, ncols=min(len(handles), 6))


def _draw_money(ax: Any, r: RunReport) -> None:
    t = [0.0, *(m.t for m in r.money)]
    spent = [0.0, *(to_usd(m.spent_pusd) for m in r.money)]
    committed = [0.0, *(to_usd(m.spent_pusd + m.held_pusd) for m in r.money)]
    ax.fill_between(t, spent, committed, step="post", color=HELD, alpha=0.45, label="held")
    ax.step(t, spent, where="post", color=SPENT, linewidth=2, label="spent")
    ax.axhline(to_usd(r.budget_pusd), color="black", linestyle="--", linewidth=1.2, label="budget")
    ax.set_ylim(0, max([to_usd(r.budget_pusd), *committed]) * 1.08)
    ax.set_ylabel("US dollars")
    ax.legend(loc="upper left", fontsize=8)
