"""``ontime report`` (issue 21): a run's journal drawn as one offline HTML page (and a PNG), checked on a real run
with failures, cancellations and a deadline hit, against hostile journals, and in a real headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, assert_type

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import runtime
from runtime.cli import app
from tests.conftest import EXAMPLES

if TYPE_CHECKING:
    from pathlib import Path

EVIL = "<script>alert(1)</script>"
EVIL_MODEL = '"><img src=x onerror=alert(2)>'
DOLLARS = "costs $^{oops$ now"  # what matplotlib would read as mathematics, and fail on
Events = list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[runtime.Event]]:
    """release20 under a deadline too tight for Retry-3 on ``mid``: batches fail, siblings and the work in flight
    at the deadline are cancelled (seed 0 shows all three; the test below checks it)."""
    path = tmp_path_factory.mktemp("report") / "run.jsonl"
    events: list[runtime.Event] = []
    wf = runtime.load_workflow(EXAMPLES / "release20.json")
    runtime.run(wf, budget=2.0, deadline=120, planner="retry:mid:3", seed=0, journal=path, on_event=events.append)
    return path, events


@pytest.fixture
def events(run: tuple[Path, list[runtime.Event]]) -> Events:
    return runtime.read_journal(run[0])


def _write(path: Path, events: Events) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_the_journal_has_failures_cancellations_and_a_deadline_hit(events: Events) -> None:
    kinds = [e["event"] for e in events]
    cancelled = [e for e in events if e["event"] == "sample_finished" and e["status"] == "cancelled"]
    assert "batch_failed" in kinds and "deadline_hit" in kinds
    assert any(e["t"] < 120 for e in cancelled) and any(e["t"] == 120 for e in cancelled)  # siblings, then the deadline
    assert events[-1]["event"] == "run_finished" and events[-1]["reason"] == "deadline"


def test_every_subtask_has_a_lane_those_never_launched_too(run: tuple[Path, list[runtime.Event]]) -> None:
    drawn = runtime.report(run[0])
    assert_type(drawn, runtime.RunReport)
    ids = [s.id for s in runtime.load_workflow(EXAMPLES / "release20.json").subtasks]
    assert [lane.subtask for lane in drawn.lanes] == ids and drawn.unnamed == 0
    assert any(not lane.batches for lane in drawn.lanes)
    assert {b.outcome for lane in drawn.lanes for b in lane.batches} == {"won", "failed", "cancelled"}
    assert drawn.deadline_hit_s == 120 and drawn.end is not None and not drawn.end.success


def test_a_journal_without_subtask_ids_draws_the_subtasks_its_events_name(events: Events) -> None:
    """A journal written before run_started listed the subtasks: a lane for each name an event gives, and a note."""
    rejected = {"event": "launch_rejected", "t": 50.0, "subtask": "tests_api", "model": "large", "k": 2,
                "reason": "budget"}  # fmt: skip
    old = [{k: v for k, v in e.items() if k != "subtask_ids"} for e in events]
    drawn = runtime.report([*old[:-1], rejected, old[-1]])
    launched = {e["subtask"] for e in events if e["event"] == "batch_launched"}
    assert {lane.subtask for lane in drawn.lanes} == launched | {"tests_api"}
    assert drawn.unnamed == 20 - len(drawn.lanes) > 0 and f"{drawn.unnamed} more subtasks" in drawn.html()
    assert "refused tests_api on large x2 (budget)" in drawn.html()


def test_the_report_agrees_with_the_ledger(run: tuple[Path, list[runtime.Event]]) -> None:
    drawn = runtime.report(run[0])
    replay = runtime.replay_ledger(runtime.read_journal(run[0]))
    assert sum(lane.total("cost_pusd") for lane in drawn.lanes) == replay.spent_pusd == drawn.money[-1].spent_pusd
    assert all(m.spent_pusd + m.held_pusd <= drawn.budget_pusd for m in drawn.money)
    assert drawn.money[-1].held_pusd == 0
    samples = [e for e in run[1] if isinstance(e, runtime.SampleFinished)]
    assert sum(lane.total("k") for lane in drawn.lanes) == len(samples)
    assert sum(lane.total("cancelled") for lane in drawn.lanes) == sum(s.status == "cancelled" for s in samples)


def test_events_collected_live_draw_the_same_report(run: tuple[Path, list[runtime.Event]]) -> None:
    assert runtime.report(run[1]) == runtime.report(run[0])
    assert runtime.report(run[1]).html() == runtime.report(run[0]).html()


def test_the_page_is_self_contained(run: tuple[Path, list[runtime.Event]], tmp_path: Path) -> None:
    runtime.report(run[0], out=tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count("://") == 0  # a namespace, never fetched
    assert not any(s in page for s in ("<script", "src=", "href=", "@import", "@font-face"))
    assert page.count("url(") == page.count("url(#")


_COORDINATES = frozenset({"x", "y", "x1", "x2", "y1", "y2", "width", "height", "cx", "cy", "r"})


class _Tags(HTMLParser):
    """The elements of a page, the lanes' ``data-subtask`` values and the SVG coordinates, as a browser's parser
    sees them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.lanes: list[str] = []
        self.handlers: list[str] = []
        self.coordinates: list[float] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.handlers += [k for k, _ in attrs if k.startswith("on")]
        self.lanes += [v or "" for k, v in attrs if k == "data-subtask"]
        self.coordinates += [float(v or "nan") for k, v in attrs if k in _COORDINATES]
        self.coordinates += [
            float(c) for k, v in attrs if k == "points" for p in (v or "").split() for c in p.split(",")
        ]

    def drawable(self) -> bool:
        """Every coordinate is a finite number (a NaN or an infinity in SVG is a console error)."""
        return all(math.isfinite(c) for c in self.coordinates)


def _hostile(events: Events) -> Events:
    """The run with a subtask, a model and an error message that try to inject markup, and fields named like keys."""
    text = json.dumps(events).replace('"requirements"', json.dumps(EVIL)).replace('"mid"', json.dumps(EVIL_MODEL))
    text = text.replace('"api_design"', json.dumps(DOLLARS))
    out = []
    for e in json.loads(text):
        if e["event"] == "run_started":
            e["api_key"] = "sk-SECRET-0123456789"
        if e["event"] == "sample_finished":
            e["error"], e["authorization"] = "</title><script>alert(3)</script>", "Bearer sk-SECRET-0123456789"
        out.append(e)
    return out


def test_text_from_the_journal_is_escaped_and_keys_never_shown(events: Events, tmp_path: Path) -> None:
    page = runtime.report(_write(tmp_path / "evil.jsonl", _hostile(events))).html()
    parsed = _Tags(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags and parsed.handlers == []
    assert EVIL in parsed.lanes and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "alert(3)" in page and "<script>alert(3)" not in page
    assert "SECRET" not in page


def test_a_torn_last_line_draws_the_run_so_far_marked_unfinished(run: tuple[Path, list[runtime.Event]]) -> None:
    data = run[0].read_bytes()
    torn = run[0].with_name("torn.jsonl")
    torn.write_bytes(data[: data.index(b'"event":"deadline_hit"') + 10])
    with pytest.warns(runtime.TornJournalWarning):
        drawn = runtime.report(torn)
    assert drawn.end is None and "unfinished" in drawn.html()
    assert len(drawn.lanes) == 20 and any(b.outcome == "open" for lane in drawn.lanes for b in lane.batches)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe not UTF-8",
        b"[1, 2]\n{}\n",
        b'{"event": "agent_started", "t": 0}\n',
        b'{"event":"run_started","t":0}\n',
        b'{"event":"run_started","t":0,"run_id":"r","workflow":"w","subtasks":1,"models":"mid","budget_pusd":1,'
        b'"deadline_s":1,"planner":"p","seed":0}\n',
    ],
    ids=["empty", "binary", "not-events", "qa-journal", "no-fields", "models-not-a-list"],
)
def test_a_garbage_journal_is_a_usage_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(runtime.UsageError):
        runtime.report(path)


def test_a_line_torn_before_the_last_is_a_usage_error(run: tuple[Path, list[runtime.Event]], tmp_path: Path) -> None:
    lines = run[0].read_text(encoding="utf-8").splitlines()
    path = tmp_path / "torn.jsonl"
    path.write_text("\n".join([*lines[:5], lines[5][:20], *lines[6:]]) + "\n", encoding="utf-8")
    with pytest.raises(runtime.UsageError, match="line 6"):
        runtime.report(path)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_corrupted_event_draws_a_page_or_is_a_usage_error(events: Events, data: st.DataObject) -> None:
    """Any one field of any event replaced by any JSON value (or removed, or events reordered), never a traceback."""
    events = [dict(e) for e in events]
    for _ in range(data.draw(st.integers(1, 3))):
        e = events[data.draw(st.integers(0, len(events) - 1))]
        name = data.draw(st.sampled_from(sorted(e)))
        if data.draw(st.booleans()):
            e[name] = data.draw(_JSON)
        else:
            del e[name]
    if data.draw(st.booleans()):
        events = data.draw(st.permutations(events))
    try:
        page = runtime.report(events).html()
    except runtime.UsageError:
        return
    assert page.startswith("<!DOCTYPE html>") and _Tags(page).drawable()


def test_times_that_are_not_finite_are_refused(events: Events) -> None:
    with pytest.raises(runtime.UsageError, match="not a time"):
        runtime.report([{**e, "t": math.nan} if e["event"] == "batch_launched" else e for e in events])


def test_the_png_holds_the_same_charts_whatever_the_names(events: Events, tmp_path: Path) -> None:
    drawn = runtime.report(_write(tmp_path / "evil.jsonl", _hostile(events)), png=tmp_path / "report.png")
    assert DOLLARS in [lane.subtask for lane in drawn.lanes]
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_png_without_matplotlib_is_a_usage_error(
    run: tuple[Path, list[runtime.Event]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what ``import`` sees when it is not installed
    with pytest.raises(runtime.UsageError, match="matplotlib"):
        runtime.report(run[0], png=tmp_path / "report.png")
    assert not (tmp_path / "report.png").exists()


def test_a_report_that_cannot_be_written_is_a_usage_error(
    run: tuple[Path, list[runtime.Event]], tmp_path: Path
) -> None:
    with pytest.raises(runtime.UsageError, match="cannot write the report"):
        runtime.report(run[0], out=tmp_path / "missing" / "report.html")


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["report", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_writes_the_page_and_the_png(run: tuple[Path, list[runtime.Event]], tmp_path: Path) -> None:
    code, out, err = _cli(str(run[0]), "--out", str(tmp_path / "r.html"), "--png", str(tmp_path / "r.png"))
    assert (code, err) == (0, "") and "20 subtasks, deadline" in out
    assert (tmp_path / "r.html").stat().st_size > 0 and (tmp_path / "r.png").stat().st_size > 0


@pytest.mark.parametrize("content", [b"\x00\x01garbage\n", b"{}\n{\n", b'{"event":"run_started"}\n'])
def test_the_cli_says_what_is_wrong_with_a_journal_in_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.jsonl").write_bytes(content)
    code, out, err = _cli(str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "r.html"))
    assert code == 2 and out == "" and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_the_cli_warns_in_one_line_of_a_torn_journal(run: tuple[Path, list[runtime.Event]], tmp_path: Path) -> None:
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(run[0].read_bytes()[:-7])
    code, out, err = _cli(str(torn), "--out", str(tmp_path / "r.html"))
    assert code == 0 and "unfinished" in out
    assert err.startswith("warning:") and "cut short" in err and len(err.strip().splitlines()) == 1


CHROMIUM = shutil.which("chromium")
# No network: no background services, every host name unresolvable, and any connection sent to a closed loopback port.
OFFLINE = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update", "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0",
    "--dump-dom",
)  # fmt: skip
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")


def _browse(page: Path, profile: Path) -> tuple[_Tags, list[str]]:
    """The DOM Chromium rendered from ``page``, and every console message it logged (errors and warnings too)."""
    assert CHROMIUM is not None
    done = subprocess.run([CHROMIUM, *OFFLINE, f"--user-data-dir={profile}", page.as_uri()], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return _Tags(done.stdout), console


@needs_chromium
def test_the_browser_check_sees_a_console_error(tmp_path: Path) -> None:
    """Not vacuous: a page whose script fails shows up in what :func:`_browse` collects."""
    page = tmp_path / "broken.html"
    page.write_text('<div data-subtask="a"></div><script>undefinedFunction()</script>', encoding="utf-8")
    dom, console = _browse(page, tmp_path / "profile")
    assert dom.lanes == ["a"] and any("undefinedFunction" in line for line in console)


@needs_chromium
@pytest.mark.parametrize("hostile", [False, True], ids=["run", "hostile-names"])
def test_the_page_renders_in_chromium_with_every_lane_and_no_console_error(
    run: tuple[Path, list[runtime.Event]], events: Events, tmp_path: Path, hostile: bool
) -> None:
    source = _write(tmp_path / "evil.jsonl", _hostile(events)) if hostile else run[0]
    drawn = runtime.report(source, out=tmp_path / "report.html")
    dom, console = _browse(tmp_path / "report.html", tmp_path / "profile")
    assert console == [] and dom.drawable()
    assert dom.lanes == [lane.subtask for lane in drawn.lanes] and len(dom.lanes) == 20
    assert {"svg", "table", "rect", "polyline"} <= dom.tags and "script" not in dom.tags and "img" not in dom.tags
