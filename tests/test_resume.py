"""Resume from the journal: a run killed (SIGKILL) at a random point, then resumed in this process, spends at
most the budget across both, finishes no subtask twice, keeps every output, and its journal replays; on the
simulated backend and on real SDK endpoints (serve-sim on loopback)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import runtime
from runtime._resume import _dollars_within
from runtime.cli import app
from runtime.types import PUSD_PER_USD
from runtime.types._money import MAX_BUDGET_USD, to_pusd
from tests.conftest import EXAMPLES
from tests.helpers import example_spec, server

if TYPE_CHECKING:
    from pathlib import Path

RELEASE20 = EXAMPLES / "release20.json"


def crash(spec: Path, journal: Path, after_s: float, *args: str) -> None:
    """``ontime run`` in a process of its own, killed with SIGKILL ``after_s`` seconds after it wrote its first
    event (a run that finished first is left so)."""
    cmd = [sys.executable, "-m", "runtime.cli", "run", str(spec), "--journal", str(journal), "--json", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end and not (journal.exists() and journal.read_bytes()):
            time.sleep(0.02)
        time.sleep(after_s)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def events_of(journal: Path) -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", runtime.TornJournalWarning)  # the kill may cut the last line
        return runtime.read_journal(journal)


def check_resumed(crashed: Path, resumed: Path, result: runtime.RunResult) -> None:
    """Every promise of a resume, from the two journals and the result."""
    before, after = events_of(crashed), events_of(resumed)
    start, again = before[0], after[0]
    old = runtime.replay_ledger(before)
    new = runtime.replay_ledger(after)  # raises if the resumed journal does not replay
    charged = old.spent_pusd + old.reserved_pusd  # in flight at the crash: charged their whole reservation
    assert again["resumed_from"] == start["run_id"] and again["spent_before_pusd"] == charged
    assert again["budget_pusd"] + charged == start["budget_pusd"]
    assert charged + new.spent_pusd <= start["budget_pusd"]  # both runs together: within the budget
    assert new.peak_committed_pusd <= again["budget_pusd"] and new.reserved_pusd == 0
    assert new.spent_pusd == new.reported_spent_pusd == result.cost_pusd
    assert again["deadline_s"] <= start["deadline_s"] - max(e["t"] for e in before) + 1e-9  # the deadline stands
    done_before = {e["subtask"]: e for e in before if e["event"] == "subtask_completed"}
    done_after = {e["subtask"] for e in after if e["event"] == "subtask_completed"}
    relaunched = {e["subtask"] for e in after if e["event"] == "batch_launched"} & done_before.keys()
    assert not relaunched and not done_after & done_before.keys()  # nothing finished twice
    for sid, e in done_before.items():  # no output lost
        kept = result.subtasks[sid]
        assert kept.completed and kept.output == e["output"] and kept.model == e["model"]
    assert result.success == (len(done_before) + len(done_after) == start["subtasks"])


def resume_or_nothing(crashed: Path, out: Path, **options: Any) -> runtime.RunResult | None:
    """``runtime.resume``, or None where there is nothing to resume (no journal yet, or a run that finished,
    or no money or time left), which must be said with a UsageError."""
    if not crashed.exists():
        return None
    finished = any(e["event"] == "run_finished" for e in events_of(crashed))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", runtime.TornJournalWarning)  # the kill may cut the last line
            return runtime.resume(crashed, journal=out, **options)
    except runtime.UsageError as exc:
        assert finished or "left" in str(exc) or "no run_started" in str(exc), exc  # killed before its first line
        return None


MID_RUN_S = 0.5  # after the first event: mid-run in both tests below (each run takes 1-4 s of wall time)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(after_s=st.floats(0.0, 3.0), planner=st.sampled_from(["mcp", "retry:mid:2"]))
@example(after_s=MID_RUN_S, planner="mcp")
def test_a_killed_run_on_the_simulated_backend_resumes_within_its_limits(
    tmp_path_factory: pytest.TempPathFactory, after_s: float, planner: str
) -> None:
    tmp = tmp_path_factory.mktemp("crash")
    crashed, resumed = tmp / "run.jsonl", tmp / "resumed.jsonl"
    crash(RELEASE20, crashed, after_s, "-b", "2", "-d", "1200", "--speed", "300", "-p", planner)
    result = resume_or_nothing(crashed, resumed, speed=300.0)
    assert result is not None or after_s != MID_RUN_S
    if result is not None:
        check_resumed(crashed, resumed, result)


@given(st.integers(1, MAX_BUDGET_USD * PUSD_PER_USD))
@example(1_002_560_000_000)  # what a crash once left: its float times 10**12 lands just under it
def test_a_resumed_budget_is_what_the_crash_left_never_more(pusd: int) -> None:
    got = to_pusd(_dollars_within(pusd))
    assert got <= pusd
    assert got == pusd or pusd >= 2**48  # past $281 a float cannot say every pico-dollar


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(after_s=st.floats(0.0, 4.0), seed=st.integers(0, 100))
@example(after_s=MID_RUN_S, seed=5)
def test_a_killed_run_on_real_endpoints_resumes_within_its_limits(
    tmp_path_factory: pytest.TempPathFactory, after_s: float, seed: int
) -> None:
    """The run talks to serve-sim through the OpenAI and Anthropic SDKs, with faults; so does its resume."""
    tmp = tmp_path_factory.mktemp("crash")
    crashed, resumed, spec = tmp / "run.jsonl", tmp / "resumed.jsonl", tmp / "codegen.json"
    data = example_spec("mixed", timeout_s=2.0)
    with server(data, seed=seed, speed=1.0, faults=runtime_faults()) as (srv, _):
        spec.write_text(json.dumps(with_urls(data, srv.url or "")))
        crash(spec, crashed, after_s, "-b", "0.05", "-d", "60", "-p", "retry:mini:2")
        result = resume_or_nothing(crashed, resumed)
        assert result is not None or after_s != MID_RUN_S
        if result is not None:
            check_resumed(crashed, resumed, result)


def runtime_faults() -> Any:
    from adapters.sim_server import Faults

    return Faults.every_kind(0.1, 0.01)


def with_urls(data: dict[str, Any], url: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(data))
    for m in out["models"].values():
        m["base_url"] = url + "/v1" if m["provider"] == "openai" else url
    return out


def test_the_journal_names_its_spec_and_keeps_outputs(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    runtime.run(runtime.load_workflow(EXAMPLES / "chain.json"), 1.0, 600, journal=journal)
    start, *rest = runtime.read_journal(journal)
    assert start["spec"] == str((EXAMPLES / "chain.json").resolve()) and start["started_at"] > 1.7e9
    assert all("output" in e for e in rest if e["event"] == "subtask_completed")


def test_nothing_to_resume_is_a_usage_error_before_anything_is_spent(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    runtime.run(runtime.load_workflow(EXAMPLES / "chain.json"), 1.0, 600, journal=journal)
    with pytest.raises(runtime.UsageError, match="finished"):
        runtime.resume(journal)
    cut = tmp_path / "cut.jsonl"
    lines = journal.read_text().splitlines()
    cut.write_text("\n".join(lines[: len(lines) // 2]) + "\n")  # killed half way
    with pytest.raises(runtime.UsageError, match="not the journal's"):
        runtime.resume(cut, runtime.load_workflow(EXAMPLES / "diamond.json"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(runtime.UsageError, match="no run_started"):
        runtime.resume(empty)
    with pytest.raises(runtime.UsageError, match="cannot read"):
        runtime.resume(tmp_path / "missing.jsonl")
    assert not (tmp_path / "resumed.jsonl").exists()


def test_a_journal_cut_half_way_resumes_and_the_command_line_says_so(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    runtime.run(runtime.load_workflow(EXAMPLES / "chain.json"), 1.0, 600, journal=journal)
    lines = journal.read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[: len(lines) // 2]) + "\n" + lines[len(lines) // 2][:7])  # and a torn line
    result = CliRunner().invoke(app, ["resume", str(cut), "--json"])
    assert result.exit_code in (0, 1), result.stderr
    assert "resumed run" in result.stderr and "kept" in result.stderr
    data = json.loads(result.stdout)
    after = runtime.read_journal(tmp_path / "cut.resumed.jsonl")
    assert runtime.replay_ledger(after).spent_pusd == data["cost_pusd"]
    for e in events_of(cut):
        if e["event"] == "subtask_completed":
            assert data["subtasks"][e["subtask"]]["output"] == e["output"]
    again = CliRunner().invoke(app, ["resume", str(journal)])
    assert again.exit_code == 2 and "nothing to resume" in again.stderr


def test_an_output_token_cap_carries_over_less_what_was_charged(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    runtime.run(runtime.load_workflow(EXAMPLES / "chain.json"), 1.0, 600, journal=journal, output_token_cap=20_000)
    lines = journal.read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    before = runtime.read_journal(cut)
    held = sum(e["output_tokens"] for e in before if e["event"] == "budget_reserved")
    given_back = sum(e["released_output_tokens"] for e in before if e["event"] == "budget_settled")
    result = runtime.resume(cut, journal=tmp_path / "resumed.jsonl")
    after = runtime.read_journal(tmp_path / "resumed.jsonl")
    assert after[0]["output_token_cap"] == 20_000 - (held - given_back) < 20_000
    used = sum(e["output_tokens"] for e in after if e["event"] == "budget_settled")
    assert used <= after[0]["output_token_cap"] and result.cost_pusd == runtime.replay_ledger(after).spent_pusd


values = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=4),
                   st.lists(st.integers(), max_size=2))  # fmt: skip
fields = ["t", "run_id", "budget_pusd", "deadline_s", "planner", "seed", "clock", "cancel_siblings", "subtask", "model",
          "output", "output_tokens", "released_output_tokens", "reservation", "pusd", "released_pusd"]  # fmt: skip
kinds = ["run_started", "budget_reserved", "budget_settled", "batch_launched", "batch_failed", "subtask_completed"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({"event": st.sampled_from(kinds)}, optional=dict.fromkeys(fields, values)),
                min_size=1, max_size=6))  # fmt: skip
def test_any_journal_gives_a_resume_point_or_a_typed_error(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    journal = tmp_path / "fuzz.jsonl"
    journal.write_text("".join(json.dumps(e) + "\n" for e in events))
    try:
        point = runtime.resume_point(journal)
    except runtime.OntimeError:
        return
    assert isinstance(point.budget_pusd, int) and isinstance(point.deadline_s, float)
    assert all(isinstance(s, str) for s in point.completed)
