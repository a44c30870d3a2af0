"""The ``ontime`` command line: JSON output fields, exit codes, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import runtime
from runtime.cli import app
from tests.conftest import EXAMPLES

CHAIN = str(EXAMPLES / "chain.json")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_run_json_reports_the_result(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    code, out, _ = invoke(
        "run", CHAIN, "--budget", "1", "--deadline", "600", "--seed", "4", "--journal", str(journal), "--json"
    )
    data = json.loads(out)
    assert code == (0 if data["success"] else 1)
    assert {"success", "reason", "cost", "elapsed", "subtasks", "planner"} <= data.keys()
    assert set(data["subtasks"]) == {"outline", "draft", "polish"}
    replay = runtime.replay_ledger(runtime.read_journal(journal))
    assert replay.spent_pusd == data["cost_pusd"] and replay.reserved_pusd == 0


def test_run_shows_progress_and_summary() -> None:
    code, out, _ = invoke("run", CHAIN, "-b", "1", "-d", "600")
    assert code in (0, 1)
    assert "subtasks" in out and "budget" in out and "outline" in out
    assert ("SUCCESS" in out) or ("FAILED" in out)


def test_the_live_view_says_why_nothing_is_in_flight_before_the_first_launch_and_when_compiling() -> None:
    from rich.console import Console

    from runtime._compile import COMPILING
    from runtime._view import PLANNING, RunView
    from runtime.types import BatchLaunched, RunStarted

    def shown(view: RunView) -> str:
        console = Console(width=200, record=True)
        console.print(view)
        return console.export_text()

    view = RunView()
    view(RunStarted(t=0.0, run_id="r", workflow="w", subtasks=2, models=("m",), budget_pusd=10**6, deadline_s=60.0,
                    planner="mcp", seed=0, clock="virtual", cancel_siblings=True))  # fmt: skip
    assert PLANNING in shown(view) and COMPILING not in shown(view)
    view.compiling = True  # the CLI's compile notice fired: the line says so until the first launch
    assert COMPILING in shown(view)
    view(BatchLaunched(t=0.1, batch=1, subtask="outline", model="m", k=2, max_tokens=100))
    text = shown(view)
    assert PLANNING not in text and COMPILING not in text and "outline (m x2)" in text


def test_run_exit_code_is_one_when_the_run_fails() -> None:
    code, out, _ = invoke("run", CHAIN, "-b", "0.001", "-d", "600", "--json")
    assert code == 1 and json.loads(out)["reason"] == "budget"


def test_run_logs_events_as_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    _code, _, _ = invoke("run", CHAIN, "-b", "1", "-d", "600", "--json", "--log", str(log))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["event"] == "run_started" and lines[-1]["event"] == "run_finished"
    assert len({line["run_id"] for line in lines}) == 1


def test_eval_json_has_the_documented_fields() -> None:
    code, out, _ = invoke("eval", CHAIN, "-b", "0.05", "-d", "300", "--runs", "200", "--seed", "7", "--json")
    assert code == 0
    data = json.loads(out)
    for key in (
        "runs",
        "successes",
        "p_success",
        "ci95",
        "mean_cost",
        "max_cost",
        "mean_elapsed",
        "overspend_runs",
        "late_runs",
        "failure_reasons",
        "planner_ms",
    ):
        assert key in data
    assert data["runs"] == 200
    assert set(data["planner_ms"]) >= {"p50", "p95", "max"}
    assert data["ci95"][0] <= data["p_success"] <= data["ci95"][1]


def test_eval_is_the_same_with_more_workers() -> None:
    args = ("eval", CHAIN, "-b", "0.02", "-d", "120", "--runs", "60", "--json")
    one = json.loads(invoke(*args)[1])
    two = json.loads(invoke(*args, "--workers", "2")[1])
    for d in (one, two):
        d.pop("planner_ms")
    assert one == two


def test_predict_json_has_the_documented_fields() -> None:
    code, out, _ = invoke("predict", CHAIN, "-b", "0.02", "-d", "40", "-p", "mcp:n=16", "--runs", "100", "--json")
    data = json.loads(out)
    assert code == 0
    assert {"p_success", "ci95", "expected_cost", "expected_elapsed", "runs", "planner"} <= data.keys()
    assert data["runs"] == 100 and data["ci95"][0] <= data["p_success"] <= data["ci95"][1]
    assert 0 < data["expected_cost"] <= 0.02 and 0 < data["expected_elapsed"] <= 40


BAD_INPUTS = {
    "negative_budget": ["run", CHAIN, "-b", "-1", "-d", "10"],
    "zero_budget": ["run", CHAIN, "-b", "0", "-d", "10"],
    "nan_budget": ["run", CHAIN, "-b", "nan", "-d", "10"],
    "inf_deadline": ["eval", CHAIN, "-b", "1", "-d", "inf", "--json"],
    "zero_deadline": ["run", CHAIN, "-b", "1", "-d", "0"],
    "missing_file": ["run", "nope.json", "-b", "1", "-d", "10"],
    "unknown_planner": ["run", CHAIN, "-b", "1", "-d", "10", "-p", "bogus"],
    "unknown_planner_model": ["eval", CHAIN, "-b", "1", "-d", "10", "-p", "retry:huge:2"],
    "bad_width": ["run", CHAIN, "-b", "1", "-d", "10", "-p", "retry:small:0"],
    "predict_bad_mcp_n": ["predict", CHAIN, "-b", "1", "-d", "10", "-p", "mcp:n=0"],
    "predict_bad_precision": ["predict", CHAIN, "-b", "1", "-d", "10", "--precision", "1.5"],
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_2(case: str) -> None:
    code, out, err = invoke(*BAD_INPUTS[case])
    assert code == 2
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


@pytest.mark.parametrize("text", ["{oops", '{"models": {}, "subtasks": []}', '{"name": "x"}'])
def test_malformed_spec_files_give_one_line(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    code, _, err = invoke("run", str(bad), "-b", "1", "-d", "10")
    assert code == 2 and err.startswith("error: ") and str(bad) in err


def test_cyclic_spec_gives_one_line(tmp_path: Path) -> None:
    spec = json.loads(Path(CHAIN).read_text())
    spec["subtasks"][0]["deps"] = ["polish"]
    bad = tmp_path / "cyclic.json"
    bad.write_text(json.dumps(spec))
    code, _, err = invoke("validate", str(bad))
    assert code == 2 and "cycle" in err and "Traceback" not in err


def test_console_script_is_installed_and_runs() -> None:
    exe = shutil.which("ontime") or str(Path(sys.executable).with_name("ontime"))
    if not Path(exe).exists():
        pytest.skip("the ontime console script is not installed in this environment")
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run(
        [exe, "run", CHAIN, "-b", "1", "-d", "600", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode in (0, 1), done.stderr
    assert "success" in json.loads(done.stdout)
    bad = subprocess.run(
        [exe, "run", CHAIN, "-b", "-1", "-d", "600"], capture_output=True, text=True, env=env, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_rounds_reaches_the_executor_and_the_simulations(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    code, _, _ = invoke("run", CHAIN, "-b", "1", "-d", "600", "--rounds", "--journal", str(journal), "--json")
    assert code in (0, 1) and runtime.read_journal(journal)[0]["rounds"] is True
    diamond = str(EXAMPLES / "diamond.json")  # two subtasks in parallel, so rounds change how a run goes
    for command in ("eval", "predict"):
        args = (command, diamond, "-b", "0.05", "-d", "60", "-p", "retry:small:2", "--runs", "100", "--json")
        plain, rounds = json.loads(invoke(*args)[1]), json.loads(invoke(*args, "--rounds")[1])
        key = "mean_elapsed" if command == "eval" else "expected_elapsed"
        assert rounds[key] > plain[key], command


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_on_a_full_disk_stops_the_run_with_one_error_line() -> None:
    """Issue 16 (fuzzing): a log write that failed ended in two tracebacks. The run stops (its record would
    have a gap) with a SinkError, which the command reports like any other error."""
    code, out, err = invoke("run", str(EXAMPLES / "chain.json"), "-b", "1", "-d", "60", "--json", "--log", "/dev/full")
    assert code == 2 and out == ""
    assert err.strip() == "error: cannot record the run's events: No space left on device"
    with pytest.raises(runtime.SinkError):
        runtime.run(EXAMPLES / "chain.json", 1, 60, journal=None, on_event=_full_disk)


@pytest.mark.skipif(sys.platform == "win32", reason="a file-size limit")
def test_a_journal_that_outgrows_its_disk_gets_one_error_line_too(tmp_path: Path) -> None:
    """The journal's close flushed the failed bytes again and raised a second OSError over the SinkError."""
    import resource

    journal = tmp_path / "run.jsonl"
    argv = [sys.executable, "-m", "runtime.cli", "run", str(EXAMPLES / "chain.json"), "-b", "1", "-d", "60", "--json",
            "--journal", str(journal)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048)))  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "error: cannot record the run's events: File too large"


def _full_disk(event: runtime.Event) -> None:
    raise OSError(28, "No space left on device")


def test_a_yaml_alias_bomb_and_odd_paths_get_one_error_line(tmp_path: Path) -> None:
    """Issue 16 (fuzzing): nine levels of nine YAML aliases (387 million strings) ran out of memory in
    validate; a path with a newline, or PyYAML's own message, printed an error over several lines."""
    levels = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    levels += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join([*levels, "models: *l8", "subtasks: *l8"]) + "\n")
    code, _, err = invoke("validate", str(bomb))
    assert code == 2 and "aliases (*name) are not allowed" in err and len(err.strip().splitlines()) == 1
    tagged = tmp_path / "t.yaml"
    tagged.write_text("!!python/object/apply:os.system ['true']\n")
    code, _, err = invoke("validate", str(tagged))
    assert code == 2 and "not valid YAML" in err and len(err.strip().splitlines()) == 1
    code, _, err = invoke("validate", str(tmp_path / "a\nb.json"))
    assert code == 2 and err.strip().endswith("a\\nb.json: cannot read the file (No such file or directory)")
