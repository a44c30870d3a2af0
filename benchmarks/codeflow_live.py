"""CodeFlowBench-Repo problems run end to end over HTTP: serve-sim, the OpenAI SDK, the sandbox as verifier.

    python -m benchmarks.codeflow_live [--data FILE] [--problems 8] [--faults 0.2] [--speed 10]

Each problem becomes a chain of code subtasks (one per subproblem, with its real dependencies). A subtask's
prompt is the subproblem's statement plus the code of the subproblems it calls (``{{dep}}``: the output
that passed for it); the simulator's correct output is the reference solution, its wrong output the same
code with every ``return`` value replaced by ``None``; the verifier runs the subproblem's test cases in the
sandbox, after the reference code of its dependencies and a few standard imports the references assume.

Only problems whose every reference passes its own tests in the sandbox are used (the sandbox imports only
the standard library, so many CodeFlowBench problems cannot run; the table says how many were skipped).
Before the run every wrong variant is checked to fail. Then one workflow holding all chosen problems runs
under the default planner through ``serve-sim`` with injected faults. Tables: the selection, the verifier
check, the run, and the ledger against the server's own record of tokens served.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import anyio

import runtime
from adapters.sim_server import FAULT_KINDS, Faults, SimServer, serve_in_thread
from benchmarks._report import RESULTS, console, data_dir, machine, parser, rows_table, write_csv
from benchmarks.instances import check_graph, codeflow_graph
from tools.sandbox import Limits, run_tests
from tools.verifiers import build_verifier

# Imports the reference solutions assume from their original modules; run before the code under test.
PREAMBLE = (
    "import collections, functools, itertools, json, math, os, re, string, urllib.parse\n"
    "from collections import Counter, OrderedDict, defaultdict, deque, namedtuple\n"
)
_RETURN = re.compile(r"^(\s*)return\b.*$", re.MULTILINE)


def default_data() -> Path | None:
    """The CodeFlowBench-Repo file under ``$ONTIME_DATA_DIR/workflows``, if it is there."""
    return data_dir("workflows/codeflowbench_repo_99.json")


def _asserts(name: str, cases: Any) -> str | None:
    """Assertions from the problem's test cases, or None if it has none we can run."""
    if not isinstance(cases, list) or not cases:
        return None
    lines = []
    for c in cases:
        if not isinstance(c, dict) or "input" not in c or "output" not in c:
            return None
        lines.append(f"_args, _kwargs = {c['input']}\nassert {name}(*_args, **_kwargs) == {c['output']}")
    return "\n".join(lines) + "\n"


def _wrong(code: str) -> str:
    changed = _RETURN.sub(lambda m: f"{m.group(1)}return None", code)
    return changed if changed != code else "I am not sure how to write this."


def _fence(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def select(path: Path, problems: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Problems whose references all pass their tests in the sandbox; and what was skipped, with why."""
    chosen: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for entry in json.loads(path.read_text()):
        if len(chosen) >= problems:
            break
        pid = str(entry.get("problem-id"))
        subs = {str(s["name"]): s for s in entry.get("subproblems", [])}
        graph = codeflow_graph(entry)
        why = check_graph(graph)
        order = [] if why else list(TopologicalSorter(graph).static_order())  # dependencies first
        tests = {}
        for name in order:
            asserts = _asserts(name, subs[name].get("test_code"))
            if asserts is None:
                why = f"{name}: no runnable test cases"
                break
            tests[name] = "".join(str(subs[d]["solution"]) + "\n" for d in _closure(graph, name)) + asserts
        if why is None:
            jobs = [(PREAMBLE + str(subs[n]["solution"]), tests[n]) for n in order]
            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda job: run_tests(*job, limits=Limits(wall_s=10)), jobs))
            failed = [(n, r) for n, r in zip(order, results, strict=True) if not r.passed]
            if failed:
                why = f"{failed[0][0]}: reference fails in the sandbox ({_why(failed[0][1])})"
        if why is not None:
            skipped.append({"problem": pid, "why": why})
            continue
        chosen.append({"problem": pid, "order": order, "graph": graph, "subs": subs, "tests": tests})
    return chosen, skipped


def _why(result: Any) -> str:
    if result.exec_fail:
        return str(result.exec_fail).splitlines()[0][:80]
    f = result.failures[0]
    return f"{f.error_type}: {f.error_message}"[:80]


def _closure(graph: dict[str, tuple[str, ...]], name: str) -> list[str]:
    """Every subproblem ``name`` calls, directly or not, dependencies first."""
    seen: list[str] = []

    def walk(n: str) -> None:
        for d in graph[n]:
            if d not in seen:
                walk(d)
                seen.append(d)

    walk(name)
    return seen


def build_spec(chosen: list[dict[str, Any]]) -> dict[str, Any]:
    models = {
        "small": {"provider": "openai", "model": "gpt-4o-mini", "tokens_per_s": 150, "ttft_s": 0.3,
                  "max_output_tokens": 1200, "timeout_s": 2.0},
        "large": {"provider": "openai", "model": "gpt-4.1-mini", "tokens_per_s": 90, "ttft_s": 0.5,
                  "max_output_tokens": 1200, "timeout_s": 2.0},
    }  # fmt: skip
    subtasks = []
    for k, p in enumerate(chosen):
        for name in p["order"]:
            sub = p["subs"][name]
            deps = [f"p{k}.{d}" for d in p["graph"][name]]
            code = str(sub["solution"])
            tokens = max(8.0, len(_fence(code)) / 3.5)
            calls = "".join(f"\n\nIt may call this code:\n{{{{{d}}}}}" for d in deps)
            subtasks.append(
                {
                    "id": f"p{k}.{name}",
                    "deps": deps,
                    "input_tokens": int(len(str(sub.get("statement", ""))) / 4) + 40 * len(deps),
                    "system": "You write correct Python. Answer with one fenced code block, nothing else.",
                    "prompt": f"{sub.get('statement', '')}\n\nWrite the function {name}.{calls}",
                    "reference": _fence(code),
                    "wrong": [_fence(_wrong(code))],
                    "verifier": {"python_tests": p["tests"][name], "setup": PREAMBLE, "timeout_s": 10},
                    "profiles": {
                        "small": {"p": 0.55, "output_tokens": {"mean": tokens, "std": tokens / 4}},
                        "large": {"p": 0.85, "output_tokens": {"mean": tokens * 1.1, "std": tokens / 4}},
                    },
                }
            )
    return {"name": "codeflow-live", "models": models, "subtasks": subtasks}


def check_wrong_variants(spec: dict[str, Any]) -> tuple[int, int]:
    """(wrong variants that fail their verifier, wrong variants), through the verifiers a run uses."""
    wf = runtime.parse_workflow(spec)

    async def verdicts() -> list[bool]:
        checks = [(build_verifier(s.verifier, dict(wf.models), {}), s.wrong[0]) for s in wf.subtasks if s.verifier]
        return [(await v.check(wrong)).ok for v, wrong in checks]

    passed = anyio.run(verdicts)
    return passed.count(False), len(passed)


def live_run(
    spec: dict[str, Any], *, budget: float, deadline: float, speed: float, faults: float, seed: int
) -> dict[str, Any]:
    """One run of the workflow through serve-sim; its result, the ledger and the server's record."""
    server = SimServer(runtime.parse_workflow(spec), seed=seed, speed=speed, faults=Faults.every_kind(faults, 0.05))
    events: list[runtime.Event] = []
    with serve_in_thread(server) as url:
        for m in spec["models"].values():
            m["base_url"] = url + "/v1"
        wf = runtime.parse_workflow(spec)
        start = time.monotonic()
        result = runtime.run(wf, budget, deadline, seed=seed, on_event=events.append)
        wall = time.monotonic() - start
    ends = [e for e in events if isinstance(e, runtime.SampleFinished)]
    statuses = {s: sum(1 for e in ends if e.status == s) for s in ("succeeded", "failed", "cancelled", "error")}
    served = server.record
    return {
        "success": result.success,
        "reason": result.reason or "",
        "completed": sum(o.completed for o in result.subtasks.values()),
        "subtasks": len(result.subtasks),
        "cost_usd": result.cost,
        "elapsed_s": round(result.elapsed, 2),
        "wall_s": round(wall, 2),
        **{f"samples_{k}": v for k, v in statuses.items()},
        "requests": len(served),
        "faults": sum(r.status in FAULT_KINDS for r in served),
        "ledger_input": sum(e.input_tokens for e in ends),
        "server_input": sum(r.input_tokens for r in served),
        "ledger_output": sum(e.output_tokens for e in ends),
        "server_output": sum(r.total_output_tokens for r in served),
        "peak_committed_usd": runtime.replay_ledger(events).peak_committed_pusd / runtime.PUSD_PER_USD,
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=default_data(), help="codeflowbench_repo_99.json")
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--faults", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "endpoints")
    args = ap.parse_args()
    if args.data is None:
        raise SystemExit("no data: pass --data or set ONTIME_DATA_DIR (the folder holding workflows/)")
    console.print(f"[bold]CodeFlowBench-Repo live run[/] on {machine()}")
    start = time.monotonic()
    chosen, skipped = select(args.data, args.problems)
    console.print(
        f"selected {len(chosen)} problems ({sum(len(p['order']) for p in chosen)} subproblems) in "
        f"{time.monotonic() - start:.1f} s; skipped {len(skipped)}"
    )
    console.print(rows_table(skipped, "skipped (reference fails in the stdlib-only sandbox, or no tests)"))
    spec = build_spec(chosen)
    failing, total = check_wrong_variants(spec)
    console.print(f"wrong variants rejected by their verifier: {failing} of {total}")
    row = live_run(
        spec, budget=args.budget, deadline=args.deadline, speed=args.speed, faults=args.faults, seed=args.seed
    )
    row.update(problems=len(chosen), skipped=len(skipped), wrong_rejected=f"{failing}/{total}",
               budget=args.budget, deadline=args.deadline, speed=args.speed, fault_rate=args.faults)  # fmt: skip
    table = [{"": k, "value": v} for k, v in row.items()]
    console.print(rows_table(table, "one run through serve-sim (OpenAI SDK over loopback) and the sandbox"))
    console.print(f"wrote {write_csv([row], args.out / 'codeflow_live.csv')}")


if __name__ == "__main__":
    main()
