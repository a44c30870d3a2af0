"""What a new user hit, fixed in the same API (issue 15): each test fails on the code before the fix."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

import runtime
from runtime import _eval
from runtime._executor import GIVE_UP_AFTER, usable_cpus
from runtime.cli import app
from runtime.types import Adapter, Batch, Finish, Report, SampleEnd
from tests.conftest import EXAMPLES, build, chain_spec
from tests.helpers import example_spec, server

CHAIN = str(EXAMPLES / "chain.json")
ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def nowhere(retries: int = 2) -> dict[str, Any]:
    """A one-model workflow whose endpoint is a closed port on loopback: every connection is refused."""
    return {
        "name": "nowhere",
        "models": {"m": {"provider": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1",
                         "retries": retries, "tokens_per_s": 50, "ttft_s": 0.2, "max_output_tokens": 64}},
        "subtasks": [{"id": "a", "prompt": "Say hi.", "profiles": {"m": {"p": 0.9, "output_tokens": {"fixed": 8}}}}],
    }  # fmt: skip


def test_an_unreachable_endpoint_ends_the_run_at_once_with_its_cause() -> None:
    """It burned the whole deadline in connection errors and reported only "deadline"."""
    events: list[runtime.Event] = []
    start = time.monotonic()
    result = runtime.run(build(nowhere()), 1.0, 60, planner="retry:m:1", on_event=events.append)
    assert time.monotonic() - start < 20
    assert not result.success and result.reason == runtime.Reason.UNREACHABLE
    assert result.detail is not None and "'m' at http://127.0.0.1:9/v1" in result.detail
    assert "none was ever answered" in result.detail
    errors = [e for e in events if isinstance(e, runtime.SampleFinished) and e.status == "error"]
    assert len(errors) == GIVE_UP_AFTER
    assert "nothing else can run subtask 'a'" in result.detail
    assert result.to_dict()["detail"] == result.detail


def test_when_one_model_is_out_of_reach_the_planner_plans_on_with_the_others() -> None:
    """MCP and best-retry kept choosing the dead model, and the run ended without trying the live one."""
    data = example_spec("mixed", timeout_s=1.0)
    with server(data, seed=1, speed=5.0) as (_, live):
        dead = json.loads(json.dumps(data))
        dead["models"]["mini"]["base_url"] = "http://127.0.0.1:9/v1"
        dead["models"]["haiku"]["base_url"] = live.models["haiku"].endpoint.base_url  # type: ignore[union-attr]
        for planner in ("mcp", "best-retry"):
            events: list[runtime.Event] = []
            result = runtime.run(runtime.parse_workflow(dead), 0.05, 60, planner=planner, on_event=events.append)
            assert result.success, (planner, result.reason, result.detail)
            assert {e.model for e in events if isinstance(e, runtime.BatchLaunched)} == {"mini", "haiku"}


class Dies(Adapter):
    """Answers its first two batches, then its endpoint is gone."""

    def __init__(self) -> None:
        self.batches = 0

    async def run(self, batch: Batch, report: Report) -> None:
        self.batches += 1
        if self.batches <= 2:
            report(SampleEnd(index=0, finish=Finish.COMPLETE, input_tokens=1, output_tokens=1, output="ok"))
            return
        error = runtime.ProviderUnavailableError("connection refused", provider="test")
        report(SampleEnd(index=0, finish=Finish.ERROR, input_tokens=0, output_tokens=0, error=error))


def test_an_endpoint_that_answered_and_then_died_ends_the_run_too() -> None:
    """It was retried until the deadline, and the run said "deadline"."""
    spec = chain_spec(5, p=1.0)
    for sub in spec["subtasks"]:
        sub["prompt"] = "Say hi."
    dies = Dies()
    result = runtime.run(build(spec), 1.0, 60, planner="retry:m:1", adapters={"m": dies})
    assert result.reason == runtime.Reason.UNREACHABLE and dies.batches == 2 + GIVE_UP_AFTER
    assert result.detail is not None and f"the last {GIVE_UP_AFTER} requests failed" in result.detail
    assert "never" not in result.detail and result.completed == 2


def test_the_cli_names_an_unreachable_endpoint(tmp_path: Path) -> None:
    spec = tmp_path / "nowhere.json"
    spec.write_text(json.dumps(nowhere()))
    code, out, _ = invoke("run", str(spec), "-b", "1", "-d", "60", "-p", "retry:m:1", "--json")
    data = json.loads(out)
    assert code == 1 and data["reason"] == "unreachable" and "127.0.0.1:9" in data["detail"]
    code, out, _ = invoke("run", str(spec), "-b", "1", "-d", "60", "-p", "retry:m:1")
    assert code == 1 and "FAILED (unreachable)" in out and "none was ever answered" in " ".join(out.split())


def test_the_cli_qa_names_an_unreachable_model() -> None:
    code, _, err = invoke("qa", "Who?", "--corpus", str(EXAMPLES / "qa" / "corpus.jsonl"),
                          "--endpoint", "http://127.0.0.1:9/v1", "--api-key-env", "PATH")  # fmt: skip
    assert code == 1 and "gpt-4o-mini at http://127.0.0.1:9/v1 could not be reached" in err


@pytest.mark.parametrize(
    "args",
    [
        ["run", CHAIN, "-b", "1", "-d", "60", "--log", "."],  # a folder: it raised IsADirectoryError
        ["serve-sim", CHAIN, "--port", "70000"],  # it raised OverflowError from the socket layer
    ],
)
def test_the_cli_refuses_bad_files_and_ports_with_a_short_error(args: list[str]) -> None:
    code, _, err = invoke(*args)
    assert code == 2 and ("error" in err.lower()) and len(err.strip().splitlines()) <= 8


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "a[/]b.json", "-b", "1", "-d", "60"], "a[/]b.json"),  # a rich MarkupError with a traceback
        (["validate", "a[/]b.json"], "a[/]b.json"),
        (["run", CHAIN, "-b", "1", "-d", "60", "--planner", "retry:m:0"], "'retry:m:0'"),  # printed as an emoji
    ],
)
def test_the_cli_prints_user_text_as_it_is(args: list[str], said: str) -> None:
    """Issue 16: paths and planner specs went through rich's markup and emoji codes."""
    code, _, err = invoke(*args)
    assert code == 2 and said in err


@pytest.mark.parametrize("budget", [1e8, 1e300])
def test_an_effectively_unlimited_budget_is_refused_with_one_clean_line(budget: float) -> None:
    """MCP raised 110 lines of numba TypingError at $1e8 and an OverflowError at $1e300."""
    with pytest.raises(runtime.LimitError, match="at most \\$1,000,000"):
        runtime.run(CHAIN, budget, 60)
    code, _, err = invoke("run", CHAIN, "-b", str(budget), "-d", "60")
    assert code == 2 and err.startswith("error: budget must be at most $1,000,000") and len(err.splitlines()) == 1


def test_the_largest_budget_runs_with_mcp_and_predicts() -> None:
    assert runtime.run(CHAIN, runtime.MAX_BUDGET_USD, 60, planner="mcp:n=16").success
    assert runtime.predict(CHAIN, runtime.MAX_BUDGET_USD, 60, planner="mcp:n=16", runs=20).p_success > 0.9


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and out.strip() == f"ontime {runtime_version()}"


def runtime_version() -> str:
    from importlib.metadata import version

    return version("ontime")


def test_validate_warns_when_a_subtask_can_never_succeed(tmp_path: Path) -> None:
    spec = chain_spec(3)
    spec["subtasks"][1]["profiles"]["m"]["p"] = 0.0
    spec["subtasks"][2]["profiles"]["m"]["output_tokens"] = {"fixed": 5000}  # above max_output_tokens 2000
    path = tmp_path / "never.json"
    path.write_text(json.dumps(spec))
    code, out, err = invoke("validate", str(path))
    assert code == 0 and "ok" in out
    warnings = err.strip().splitlines()
    assert len(warnings) == 2
    assert "subtask 's1' can never succeed: m: p = 0" in warnings[0]
    assert "subtask 's2' can never succeed: m: its 5000 output tokens exceed max_output_tokens (2000)" in warnings[1]
    assert invoke("validate", CHAIN)[2] == ""


def test_ontime_qa_says_when_its_model_is_simulated() -> None:
    question = "Who founded the company that makes the Quill phone?"
    args = ["qa", question, "--corpus", str(EXAMPLES / "qa" / "corpus.jsonl")]
    code, out, _ = invoke(*args, "--json")
    assert code == 0 and json.loads(out)["model"].startswith("the simulated qwen3-32b search agent")
    code, out, _ = invoke(*args)
    assert code == 0 and "answered by the simulated qwen3-32b search agent" in " ".join(out.split())


def test_eval_uses_every_core_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """eval ran in one process unless told otherwise, while predict used every core."""
    seen: list[int] = []

    class Recording(ProcessPoolExecutor):
        def __init__(self, max_workers: int, **kw: Any) -> None:
            seen.append(max_workers)
            super().__init__(max_workers, **kw)

    monkeypatch.setattr(_eval, "ProcessPoolExecutor", Recording)
    monkeypatch.setattr(_eval, "usable_cpus", lambda: 2)
    parallel = runtime.evaluate(CHAIN, 0.02, 40, planner="retry:small:2", runs=60)
    assert seen == [2]
    alone = runtime.evaluate(CHAIN, 0.02, 40, planner="retry:small:2", runs=60, workers=1)
    assert dataclasses.replace(parallel, planner_ms=alone.planner_ms) == alone  # wall times aside
    assert usable_cpus() >= 1


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_on_ontime_run_says_what_was_spent_and_held_then_exits_130() -> None:
    argv = [sys.executable, "-m", "runtime.cli", "run", str(EXAMPLES / "release20.json"), "-b", "2", "-d", "1200",
            "-p", "retry:mid:2", "--speed", "10", "--json"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "120"})  # fmt: skip
    time.sleep(6)  # long enough to import, start and launch; the run itself would take about 80 s
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at" in err and "spent $" in err and "still held" in err and "Traceback" not in err
    result = json.loads(out)  # every sample was cancelled and settled: the run has a result
    assert result["reason"] == "interrupted" and not result["success"] and result["cost"] > 0


def _marked(mark: str) -> list[int]:
    """The processes whose environment holds ``mark``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_on_ontime_eval_ends_its_worker_processes_at_once() -> None:
    """The interpreter's exit waited for every running chunk: Ctrl-C left eval running with its workers."""
    mark = f"ONTIME_TEST_MARK={os.getpid()}-{time.monotonic_ns()}"
    argv = [sys.executable, "-m", "runtime.cli", "eval", str(EXAMPLES / "release20.json"), "-b", "2", "-d", "1200",
            "-p", "retry:mini:1", "--runs", "100000", "--workers", "2"]  # fmt: skip
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 60
    while len(_marked(mark)) < 3 and time.monotonic() < deadline:  # eval and its two workers
        time.sleep(0.2)
    time.sleep(1.0)  # the workers are running chunks
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    finally:
        # multiprocessing's resource tracker (marked too: a child of eval) ends once it reads eval's exit, a
        # moment later; checked at once, it failed this test now and then. A worker running its chunk to the
        # end would be here for minutes.
        leftover = _marked(mark)
        settle = time.monotonic() + 3.0
        while leftover and time.monotonic() < settle:
            time.sleep(0.1)
            leftover = _marked(mark)
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate()  # the workers held stderr too: it closes once they are gone
    assert proc.returncode == 130 and "Traceback" not in err
    assert leftover == []


def _start_run(journal: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "runtime.cli", "run", str(EXAMPLES / "release20.json"), "-b", "2", "-d", "1200",
            "-p", "retry:mid:2", "--speed", "10", "--json", "--journal", str(journal)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # long enough to import, start and launch; the run itself would take about 80 s
    return proc


def test_sigterm_stops_a_run_like_ctrl_c_and_the_journal_ends_settled(tmp_path: Path) -> None:
    """Issue 16: SIGTERM left a journal without its end (the process died at once)."""
    journal = tmp_path / "run.jsonl"
    proc = _start_run(journal)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted at" in err and "Traceback" not in err
    events = runtime.read_journal(journal)
    assert events[-1]["event"] == "run_finished" and events[-1]["reason"] == "interrupted"
    ledger = runtime.replay_ledger(events)
    assert ledger.reserved_pusd == 0 and ledger.spent_pusd == events[-1]["spent_pusd"] > 0
    assert json.loads(out)["cost_pusd"] == ledger.spent_pusd


def test_sigkill_leaves_a_journal_whose_every_line_but_a_torn_last_is_whole(tmp_path: Path) -> None:
    """Each line is written through as it happens: a killed run's journal holds every reservation it made."""
    journal = tmp_path / "run.jsonl"
    proc = _start_run(journal)
    proc.kill()
    proc.communicate(timeout=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", runtime.TornJournalWarning)
        events = runtime.read_journal(journal)
    kinds = {e["event"] for e in events}
    assert {"run_started", "budget_reserved", "budget_settled"} <= kinds and "run_finished" not in kinds
    ledger = runtime.replay_ledger(events)
    assert ledger.spent_pusd + ledger.reserved_pusd <= ledger.budget_pusd


def test_input_refused_before_the_run_leaves_no_journal_to_block_the_corrected_run(tmp_path: Path) -> None:
    """A mistyped planner created an empty journal; the corrected command was then refused: "exists"."""
    journal = tmp_path / "run.jsonl"
    with pytest.raises(runtime.UsageError, match="unknown planner"):
        runtime.run(CHAIN, 1, 60, planner="bogus:x", journal=journal)
    assert not journal.exists()
    result = runtime.run(CHAIN, 1, 60, journal=journal)
    assert runtime.read_journal(journal)[-1]["spent_pusd"] == result.cost_pusd


def test_a_run_left_before_it_starts_leaves_no_empty_journal(tmp_path: Path) -> None:
    """A signal between opening the journal and the run's first event left a 0-byte file that refused the rerun."""
    journal = tmp_path / "run.jsonl"

    async def leave_early() -> None:
        async with runtime.open_run(CHAIN, 1, 60, journal=journal):
            assert journal.exists()

    anyio.run(leave_early)
    assert not journal.exists()


def test_a_journal_is_never_overwritten_and_a_torn_last_line_is_left_out(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    runtime.run(CHAIN, 1, 60, journal=journal)
    whole = journal.read_text()
    with pytest.raises(runtime.UsageError, match="exists"):
        runtime.run(CHAIN, 1, 60, journal=journal)
    assert journal.read_text() == whole
    journal.write_text(whole + '{"event": "budget_res')
    with pytest.warns(runtime.TornJournalWarning):
        assert len(runtime.read_journal(journal)) == len(whole.splitlines())
    journal.write_text('{"event": "run_sta\n' + whole)
    with pytest.raises(runtime.UsageError, match="line 1"):
        runtime.read_journal(journal)
