"""CodeFlowBench-Repo problems end to end through serve-sim and the sandbox (needs ONTIME_DATA_DIR: skipped without)."""

from __future__ import annotations

import pytest

from benchmarks import codeflow_live as cl

DATA = cl.default_data()


@pytest.mark.skipif(
    DATA is None, reason="set ONTIME_DATA_DIR to the folder holding workflows/codeflowbench_repo_99.json"
)
def test_codeflow_problems_run_through_the_server_and_the_sandbox() -> None:
    assert DATA is not None
    chosen, skipped = cl.select(DATA, 3)
    assert len(chosen) == 3
    assert all(s["why"] for s in skipped)
    spec = cl.build_spec(chosen)
    failing, total = cl.check_wrong_variants(spec)
    assert failing == total  # every wrong variant fails its tests: the verifier can tell
    row = cl.live_run(spec, budget=0.05, deadline=120, speed=20.0, faults=0.2, seed=1)
    assert row["success"] and row["completed"] == row["subtasks"] == len(spec["subtasks"])
    assert row["cost_usd"] <= 0.05 and row["peak_committed_usd"] <= 0.05
    assert row["ledger_output"] == row["server_output"] or row["samples_cancelled"]
    assert row["ledger_input"] >= row["server_input"]
