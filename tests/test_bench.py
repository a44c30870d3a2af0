"""The MCP paper's benchmark: instances from workflow graphs, the noise protocol, and sweeps that resume and
give the same numbers in local processes and on a real (local) Ray instance."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest

import runtime
from benchmarks import mcp_paper as mp
from benchmarks.instances import load_codeflow, load_proofflow, random_dag

if TYPE_CHECKING:
    from pathlib import Path


def node(nid: str, deps: list[str], text: str = "We assume: x > 0. Therefore y > 0.") -> dict[str, object]:
    return {"id": nid, "statement": text, "dependencies": deps}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A small data folder shaped like $ONTIME_DATA_DIR/workflows, bad entries included."""
    proofs = [
        {"origin": "a", "id": 1, "proof_graph": [node("tc_1", []), node("l1", ["tc_1"]), node("ts_1", ["l1", "tc_1"])]},
        {
            "origin": "a",
            "id": 2,
            "proof_graph": [
                node("tc_1", []),
                node("def_1", []),
                node("l1", ["def_1"]),
                node("l2", ["l1"]),
                node("ts_1", ["l2", "tc_1"]),
            ],
        },
        {"origin": "a", "id": 3, "proof_graph": [node("l1", ["l1"]), node("ts_1", ["l1"])]},  # a self-dependency
        {"origin": "a", "id": 4, "proof_graph": [node("l1", ["l2"]), node("l2", ["l1"]), node("ts_1", ["l2"])]},
        {"origin": "a", "id": 5, "proof_graph": [node("ts_1", ["l9"])]},  # an unknown dependency
        {"origin": "a", "id": 6, "graph": []},  # malformed
        {"origin": "b.json", "id": 1, "proof_graph": [node("l1", []), node("ts_1", ["l1"])]},  # ids repeat across
        {"origin": "b.json", "id": 1, "proof_graph": [node("ts_1", [])]},  # sources, and within one
    ]
    code = [
        {"problem-id": "p1", "subproblems": [
            {"name": "parse", "statement": "Parse it.", "solution": "def parse(s): return s", "dependencies": "[]"},
            {"name": "run", "statement": "Run it.", "solution": "def run(s): return parse(s)",
             "dependencies": "['parse']"}]},
        {"problem-id": "p2", "subproblems": [{"name": "f", "statement": "F.", "solution": "def f(): pass",
                                               "dependencies": []}]},
        {"problem-id": "p3", "subproblems": [{"name": "g", "statement": "G.", "dependencies": "not a list ["}]},
    ]  # fmt: skip
    (tmp_path / "proofflow_124.json").write_text(json.dumps(proofs))
    (tmp_path / "codeflowbench_repo_99.json").write_text(json.dumps(code))
    return tmp_path


def test_proofflow_graphs_become_formalize_then_prove_workflows_and_bad_graphs_are_skipped(data_dir: Path) -> None:
    loaded = load_proofflow(data_dir / "proofflow_124.json")
    assert [i.id for i in loaded.instances] == ["a/1", "a/2", "b/1", "b/1#2"]
    reasons = dict(loaded.skipped)
    assert "depends on itself" in reasons["a/3"] and "cycle" in reasons["a/4"] and "unknown" in reasons["a/5"]
    assert "malformed" in reasons["a/6"]
    assert loaded.instances[2].subtasks == 4 and loaded.instances[3].subtasks == 2
    wf = loaded.instances[0].workflow
    deps = {s.id: set(s.deps) for s in wf.subtasks}
    # premises are formalized, not proved; a proof needs its statement and the proofs it builds on
    assert "prove:tc_1" not in deps
    assert deps["prove:ts_1"] == {"formalize:ts_1", "prove:l1"}
    assert deps["formalize:ts_1"] == {"formalize:l1", "formalize:tc_1"}
    assert set(wf.models) == {"goedel-32b", "goedel-8b", "kimina-7b"}
    table = runtime.ProfileTable.from_workflow(wf)
    assert (table.pool_len[table.kind >= 0] == 512).all()
    # list prices from genai-prices: the 32B family costs more per output token than the 8B one
    assert wf.models["goedel-32b"].output_price_per_mtok > wf.models["goedel-8b"].output_price_per_mtok > 0


def test_codeflow_subproblems_keep_their_dependencies(data_dir: Path) -> None:
    loaded = load_codeflow(data_dir / "codeflowbench_repo_99.json")
    assert [i.id for i in loaded.instances] == ["p1", "p2"] and loaded.skipped[0][0] == "p3"
    deps = {s.id: s.deps for s in loaded.instances[0].workflow.subtasks}
    assert deps == {"code:parse": (), "code:run": ("code:parse",)}


def test_instances_are_the_same_every_time_and_random_dags_have_the_asked_size() -> None:
    a, b = random_dag(25, seed=3), random_dag(25, seed=3)
    ta, tb = (runtime.ProfileTable.from_workflow(x.workflow) for x in (a, b))
    assert np.array_equal(ta.pool_tokens, tb.pool_tokens) and np.array_equal(ta.pool_latency, tb.pool_latency)
    assert a.subtasks == 25 and any(s.deps for s in a.workflow.subtasks)
    assert not np.array_equal(
        ta.pool_tokens, runtime.ProfileTable.from_workflow(random_dag(25, seed=4).workflow).pool_tokens
    )


def test_the_noise_protocol_changes_only_what_it_should(data_dir: Path) -> None:
    wf = load_proofflow(data_dir / "proofflow_124.json").instances[0].workflow
    for sigma in (0.1, 0.3):
        noisy = mp.perturbed(wf, ("success", sigma), seed=1)
        for s, t in zip(wf.subtasks, noisy.subtasks, strict=True):
            for m, prof in s.profiles.items():
                rows, new = prof.samples, t.profiles[m].samples  # type: ignore[union-attr]
                assert [r[1:] for r in rows] == [r[1:] for r in new]  # lengths and times untouched
                flips = sum(a[0] != b[0] for a, b in zip(rows, new, strict=True))
                assert flips == abs(sum(r[0] for r in rows) - sum(r[0] for r in new))  # as few flips as possible
    long = mp.perturbed(wf, ("length", 3.0), seed=1)
    for s, t in zip(wf.subtasks, long.subtasks, strict=True):
        for m, prof in s.profiles.items():
            c_max = max(r[1] for r in prof.samples)  # type: ignore[union-attr]
            assert all(1 <= r[1] <= c_max for r in t.profiles[m].samples)  # type: ignore[union-attr]
            assert [r[0] for r in prof.samples] == [r[0] for r in t.profiles[m].samples]  # type: ignore[union-attr]


def tiny_tasks(data_dir: Path) -> list[mp.Task]:
    loaded = mp.load_suite("proofflow", data_dir)
    tasks = [t for t in mp.main_tasks("proofflow", loaded.instances, runs=3) if t.deadline_min in (5, 60)]
    return [mp.Task(t.suite, t.instance, t.budget, t.deadline_min, ("mcp", "retry:goedel-8b:4"), t.runs)
            for t in tasks]  # fmt: skip


def strip(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows), key=lambda r: json.dumps(r))


def test_a_sweep_resumes_and_gives_the_same_numbers_in_processes_and_on_ray(data_dir: Path, tmp_path: Path) -> None:
    tasks = tiny_tasks(data_dir)
    serial = mp.Store(tmp_path / "serial" / "tasks.jsonl")
    assert mp.run_tasks(tasks, serial, data_dir) == len(tasks)
    assert mp.run_tasks(tasks, mp.Store(serial.path), data_dir) == 0  # resumed: nothing left to do
    pool = mp.Store(tmp_path / "pool" / "tasks.jsonl")
    mp.run_tasks(tasks[: len(tasks) // 2], pool, data_dir, workers=2)
    mp.run_tasks(tasks, pool, data_dir, workers=2)  # the rest only
    on_ray = mp.Store(tmp_path / "ray" / "tasks.jsonl")
    mp.run_tasks(tasks, on_ray, data_dir, workers=2, ray_address="local")
    assert strip(serial.rows) == strip(pool.rows) == strip(on_ray.rows)
    assert {r["planner"] for r in serial.rows} == {"mcp", "retry:goedel-8b:4"}
    table = mp.main_table(serial.rows)
    assert {(r["budget"], r["deadline_min"]) for r in table} == {(b, d) for b in mp.BUDGETS for d in (5, 60)}
    paths = mp.write_reports("proofflow", serial, tmp_path / "out", ["main"])
    assert (tmp_path / "out" / "main_grid.png").stat().st_size > 1000 and len(paths) >= 3


def test_the_main_table_picks_the_best_baseline_and_bounds_the_gain() -> None:
    def row(instance: str, planner: str, successes: int) -> dict[str, object]:
        return {"key": "", "suite": "s", "instance": instance, "subtasks": 4, "budget": 1.0, "deadline_min": 5,
                "variant": "", "planner": planner, "runs": 10, "successes": successes, "mean_cost": 0.1,
                "mean_elapsed": 60.0, "decisions": 5, "seconds": 0.5}  # fmt: skip

    rates = {"mcp": (8, 6), "retry:m:4": (7, 5), "retry:m:16": (9, 3), "uniform:m": (2, 2)}
    rows = [row(inst, planner, k[n]) for planner, k in rates.items() for n, inst in enumerate("ab")]
    (cell,) = mp.main_table(rows)
    assert cell["mcp"] == 0.7 and cell["best_retry"] == 0.6 and cell["best_retry_config"] == "retry:m:4"
    assert cell["best_uniform"] == 0.2 and cell["gain_pts"] == 10.0
    # Per instance p(1-p)/n summed over both planners, over instances squared: (.016+.024+.021+.025)/4.
    half = 100 * 1.96 * (0.086**0.5) / 2
    assert cell["gain_lo"] == round(10.0 - half, 1) and cell["gain_hi"] == round(10.0 + half, 1)
    assert mp.planner_time_table([cell]) == [{"budget": 1.0, "5 min": 100.0}]
