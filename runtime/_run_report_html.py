"""The run report as one HTML page: inline SVG and CSS, no script, no fetch (a Content-Security-Policy says so to
the browser), so it opens offline and a name in the journal can only ever be text."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

from runtime.types import to_usd

if TYPE_CHECKING:
    from collections.abc import Iterable

    from runtime._run_report import BatchBar, Lane, MoneyPoint, RunReport

__all__ = ["FAILED", "HELD", "PALETTE", "SPENT", "colors", "render_html", "span_s", "ticks"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
FAILED, SPENT, HELD = "#d62728", "#1f3b73", "#f5a623"  # red is for failures and the deadline only
_W, _LEFT, _RIGHT = 1100, 210, 40
_LANE, _BAR = 24, 14
_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1160px}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 6px}
dl.facts{display:grid;grid-template-columns:repeat(4,auto 1fr);gap:2px 12px;margin:0}
dl.facts dt{color:#666}dl.facts dd{margin:0;font-weight:600}
.ok{color:#1a7f37}.bad{color:#d62728}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin:6px 0;font-size:13px}
.legend span.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
svg{display:block;font:11px system-ui,sans-serif}svg text{fill:#333}svg text.warn{fill:#d62728}
svg text.muted{fill:#888}
.grid{stroke:#e6e6e6}.axis{stroke:#999}.decision{stroke:#444}.rejected{fill:#f5a623}
.deadline{stroke:#d62728;stroke-width:1.5;stroke-dasharray:6 3}.end{stroke:#555;stroke-dasharray:2 3}
.bar{stroke:#fff;stroke-width:1}.bar.failed{stroke:#d62728;stroke-width:2}
.bar.cancelled{stroke:#333;stroke-width:1.5;stroke-dasharray:3 2}
.bar.open{stroke:#333;stroke-dasharray:1 2}.mark{stroke:#d62728;stroke-width:2}
.lane:nth-child(odd) rect.stripe{fill:#f7f7f7}.lane rect.stripe{fill:#fff}
.budget{stroke:#222;stroke-width:1.5;stroke-dasharray:8 4}.spent{fill:none;stroke:#1f3b73;stroke-width:2}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
"""


def colors(models: Iterable[str]) -> dict[str, str]:
    """A colour per model, in the run's order of models, the same in the page and the PNG."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


def span_s(r: RunReport) -> float:
    """The time axis' end: the run's last event, stretched to the deadline unless it is over twice as far."""
    last = r.last_s
    reach = r.deadline_s if last == 0 or r.deadline_s <= 2 * last else last
    return max(last, reach, 1e-9) * 1.02


def ticks(top: float, n: int = 8) -> list[float]:
    """Round values from 0 to ``top``, about ``n`` of them (steps of 1, 2 or 5 times a power of ten)."""
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def render_html(r: RunReport) -> str:
    """The whole page."""
    title = escape(f"ontime run report: {r.workflow}")
    return "".join((
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}"><title>{title}</title>',
        f"<style>{_CSS}</style></head><body>\n<h1>{title}</h1>\n",
        _facts(r),
        "<h2>Timeline</h2>\n",
        _legend(r),
        _timeline(r),
        "<h2>Money: spent and held against the budget</h2>\n",
        _money(r),
        "<h2>Subtasks</h2>\n",
        _table(r),
        "</body></html>\n",
    ))  # fmt: skip


def _usd(pusd: int) -> str:
    usd = to_usd(pusd)
    if abs(usd) >= 10:
        return f"${usd:,.2f}"
    whole, _, cents = f"{usd:.6f}".rstrip("0").partition(".")  # to the micro-dollar, at least to the cent
    return f"${whole}.{cents:0<2}"


def _outcome(r: RunReport) -> str:
    if r.end is None:
        return '<span class="bad">unfinished: the journal stops before run_finished (the process stopped?)</span>'
    if r.end.success:
        return '<span class="ok">success</span>'
    detail = f" ({r.end.detail})" if r.end.detail else ""
    said = f"failed: {r.end.reason or '-'}{detail}"
    return f'<span class="bad">{escape(said)}</span>'


def _facts(r: RunReport) -> str:
    done = sum(lane.completed_s is not None for lane in r.lanes)
    spent = r.end.spent_pusd if r.end else (r.money[-1].spent_pusd if r.money else 0)
    elapsed = f"{r.end.elapsed_s:.1f} s" if r.end else f"{r.last_s:.1f} s so far"
    facts = [
        ("workflow", escape(r.workflow)), ("run", escape(r.run_id)), ("planner", escape(r.planner)),
        ("seed", str(r.seed)), ("budget", _usd(r.budget_pusd)), ("deadline", f"{r.deadline_s:g} s"),
        ("outcome", _outcome(r)), ("spent", _usd(spent)), ("elapsed", elapsed),
        ("subtasks done", f"{done} of {len(r.lanes) + r.unnamed}"),
        ("batches", str(sum(len(lane.batches) for lane in r.lanes))),
        ("samples", str(sum(lane.total("k") for lane in r.lanes))), ("decisions", str(len(r.decisions))),
        ("launches refused", str(len(r.rejections))),
    ]  # fmt: skip
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return f'<dl class="facts">{items}</dl>\n'


def _legend(r: RunReport) -> str:
    swatch = '<span><span class="sw" style="background:{}"></span>{}</span>'
    models = [swatch.format(c, escape(m)) for m, c in colors(r.models).items()]
    marks = [
        '<span><span class="sw" style="border:2px solid #d62728"></span>failed batch (hatched)</span>',
        '<span><span class="sw" style="border:2px dashed #333"></span>cut off (hatched)</span>',
        f'<span style="color:{FAILED}">&#x2715;</span> samples cancelled',
        "<span>&#x25CF; subtask completed</span>", "<span>| decision</span>",
        '<span style="color:#f5a623">&#x25BC; launch refused</span>',
        f'<span style="color:{FAILED}">- - deadline</span>',
    ]  # fmt: skip
    return f'<div class="legend">{"".join(models + marks)}</div>\n'


class _Axis:
    """Seconds to x pixels."""

    __slots__ = ("span", "width")

    def __init__(self, span: float) -> None:
        self.span, self.width = span, _W - _LEFT - _RIGHT

    def x(self, t: float) -> float:
        return round(_LEFT + min(t, self.span) / self.span * self.width, 1)

    def grid(self, top: float, bottom: float) -> str:
        """Vertical grid lines with their labels under ``bottom``, and the deadline line."""
        parts = []
        for t in ticks(self.span):
            x = self.x(t)
            parts.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"/>'
                         f'<text x="{x}" y="{bottom + 14}" text-anchor="middle">{t:g}</text>')  # fmt: skip
        parts.append(f'<text x="{_W - _RIGHT}" y="{bottom + 26}" text-anchor="end">seconds</text>')
        return "".join(parts)

    def deadline(self, r: RunReport, top: float, bottom: float, label_y: float) -> str:
        """The deadline's line from ``top`` to ``bottom``, or an arrow at the right edge when it is off the axis."""
        text = f'<text y="{label_y}" text-anchor="end" class="warn"'
        if r.deadline_s > self.span:
            return f'{text} x="{_W - 4}">deadline {r.deadline_s:g} s &#x2192;</text>'
        x = self.x(r.deadline_s)
        hit = f", hit at {r.deadline_hit_s:g} s" if r.deadline_hit_s is not None else ""
        line = f'<line class="deadline" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"/>'
        return f'{line}{text} x="{x - 4}">deadline {r.deadline_s:g} s{hit}</text>'


def _timeline(r: RunReport) -> str:
    axis = _Axis(span_s(r))
    top = 30
    bottom = top + _LANE * max(len(r.lanes), 1) + 4
    palette = colors(r.models)
    lanes = "".join(_lane(lane, i, top + i * _LANE, axis, palette) for i, lane in enumerate(r.lanes))
    end = ""
    if r.end is not None:
        x = axis.x(r.end.elapsed_s)
        end = f'<line class="end" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"><title>run ended</title></line>'
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{bottom + 32}" '
        f'viewBox="0 0 {_W} {bottom + 32}" role="img" aria-label="timeline of the run">'
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2.5"/></pattern></defs>'
        f'<g class="lanes">{lanes}</g>{axis.grid(top - 24, bottom)}{_decisions(r, axis)}{end}'
        f"{axis.deadline(r, top - 24, bottom, top - 14)}</svg>\n"
    )


def _decisions(r: RunReport, axis: _Axis) -> str:
    ticks_ = "".join(f'<line class="decision" x1="{axis.x(t)}" x2="{axis.x(t)}" y1="8" y2="22"/>' for t in r.decisions)
    refused = "".join(
        f'<path class="rejected" d="M{axis.x(j.t) - 4},8h8l-4,7z"><title>'
        f"{escape(f'{j.t:g} s: refused {j.subtask} on {j.model} x{j.k} ({j.reason})')}</title></path>"
        for j in r.rejections
    )
    return f'<text x="{_LEFT - 8}" y="19" text-anchor="end">decisions</text><g>{ticks_}{refused}</g>'


def _lane(lane: Lane, i: int, y: float, axis: _Axis, palette: dict[str, str]) -> str:
    name = lane.subtask
    label = name if len(name) <= 30 else name[:29] + "\u2026"
    parts = [
        f'<g class="lane" data-subtask="{escape(name)}"><rect class="stripe" x="0" y="{y}" width="{_W}" '
        f'height="{_LANE}"/><text x="{_LEFT - 8}" y="{y + 16}" text-anchor="end">{escape(label)}'
        f"<title>{escape(name)}</title></text>"
    ]
    if not lane.batches:
        parts.append(f'<text x="{_LEFT + 6}" y="{y + 16}" class="muted">never launched</text>')
    parts += [_bar(b, y + (_LANE - _BAR) / 2, axis, palette[b.model]) for b in lane.batches]
    if lane.completed_s is not None:
        parts.append(f'<circle cx="{axis.x(lane.completed_s)}" cy="{y + _LANE / 2}" r="3.5" fill="#111">'
                     f"<title>completed at {lane.completed_s:g} s</title></circle>")  # fmt: skip
    return "".join(parts) + "</g>"


def _bar(b: BatchBar, y: float, axis: _Axis, color: str) -> str:
    x0 = axis.x(b.start_s)
    x1 = max(axis.x(b.end_s if b.end_s is not None else axis.span), x0 + 2)
    box = f'x="{x0}" y="{y}" width="{round(x1 - x0, 1)}" height="{_BAR}"'
    counts = f"{b.succeeded} succeeded, {b.failed} failed, {b.errored} errored, {b.cancelled} cancelled"
    end = f"{b.end_s:g} s" if b.end_s is not None else "still open"
    error = f"; error: {b.error[:200]}" if b.error else ""
    when = f"{b.start_s:g} s to {end}"
    tip = f"batch {b.batch}: {b.model} x{b.k}, {when}, {b.outcome}; {counts}; {_usd(b.cost_pusd)}{error}"
    out = f'<rect class="bar {b.outcome}" {box} fill="{color}"><title>{escape(tip)}</title></rect>'
    if b.outcome in ("failed", "cancelled"):
        out += f'<rect {box} fill="url(#hatch)" pointer-events="none"/>'
    if b.cancelled:
        ym = y + _BAR / 2
        out += (f'<path class="mark" d="M{x1 - 4},{ym - 4}l8,8m0,-8l-8,8"><title>{b.cancelled} samples cancelled'
                "</title></path>")  # fmt: skip
    return out


def _money(r: RunReport) -> str:
    axis = _Axis(span_s(r))
    top, height = 14, 190
    bottom = top + height
    peak = max([r.budget_pusd, *(m.spent_pusd + m.held_pusd for m in r.money), 1])
    scale = peak * 1.08

    def y(pusd: int) -> float:
        return round(bottom - pusd / scale * height, 1)

    grid = "".join(
        f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(v)}" y2="{y(v)}"/>'
        f'<text x="{_LEFT - 8}" y="{y(v) + 4}" text-anchor="end">{_usd(v)}</text>'
        for v in (round(u) for u in ticks(scale, 5))
    )
    points = _steps(r.money, axis)
    spent = " ".join(f"{x},{y(s)}" for x, s, _ in points)
    held = " ".join([f"{x},{y(s + h)}" for x, s, h in points] + [f"{x},{y(s)}" for x, s, _ in reversed(points)])
    budget = y(r.budget_pusd)
    return (
        f'<svg class="money" xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{bottom + 32}" '
        f'viewBox="0 0 {_W} {bottom + 32}" role="img" aria-label="money over time">{grid}{axis.grid(top, bottom)}'
        f'<polygon points="{held}" fill="{HELD}" fill-opacity="0.45"><title>held by reservations</title></polygon>'
        f'<polyline class="spent" points="{spent}"><title>spent</title></polyline>'
        f'<line class="budget" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{budget}" y2="{budget}"/>'
        f'<text x="{_W - _RIGHT}" y="{budget - 4}" text-anchor="end">budget {_usd(r.budget_pusd)}</text>'
        f"{axis.deadline(r, top, bottom, bottom - 8)}</svg>\n"
        f'<div class="legend"><span><span class="sw" style="background:{SPENT}"></span>spent</span>'
        f'<span><span class="sw" style="background:{HELD}"></span>held (reserved, not yet settled)</span>'
        "<span>- - budget</span></div>\n"
    )


def _steps(money: Iterable[MoneyPoint], axis: _Axis) -> list[tuple[float, int, int]]:
    """The ledger as a step function in pixels: each value holds until the next event changes it."""
    out = [(axis.x(0.0), 0, 0)]
    for m in money:
        x = axis.x(m.t)
        out += [(x, out[-1][1], out[-1][2]), (x, m.spent_pusd, m.held_pusd)]
    return out


def _table(r: RunReport) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("subtask", "models", "batches", "samples", "succeeded", "failed",
                                             "errored", "cancelled", "cost", "completed at"))  # fmt: skip
    rows = []
    for lane in r.lanes:
        cells = [escape(lane.subtask), escape(", ".join(lane.models)) or "-", str(len(lane.batches))]
        cells += [str(lane.total(what)) for what in ("k", "succeeded", "failed", "errored", "cancelled")]
        cells += [_usd(lane.total("cost_pusd")), "-" if lane.completed_s is None else f"{lane.completed_s:.1f} s"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note = ""
    if r.unnamed:
        note = f"<p>{r.unnamed} more subtasks of the run are named by no event of this journal: they have no lane.</p>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>\n{note}"
