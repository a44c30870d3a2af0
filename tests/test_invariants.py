"""Property tests of the invariants of DESIGN.md over random DAGs, profiles, budgets and deadlines:
never overspend, never start work after the deadline, the journal rebuilds the ledger exactly, and the same
seed gives the same run."""

from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
from runtime import BatchLaunched, BudgetReserved, SampleFinished
from runtime.types import Decision, Launch, Planner, Snapshot
from tests.conftest import build, model
from tests.helpers import comparable, of


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    n_models = draw(st.integers(1, 3))
    models = {
        f"m{j}": model(
            inp=draw(st.floats(0, 5)),
            out=draw(st.floats(0.05, 30)),
            tps=draw(st.floats(5, 300)),
            ttft=draw(st.floats(0.05, 3)),
            max_tokens=draw(st.integers(20, 4000)),
        )
        for j in range(n_models)
    }
    n = draw(st.integers(1, 7))
    subtasks = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        names = draw(st.lists(st.sampled_from(sorted(models)), min_size=1, max_size=n_models, unique=True))
        profiles: dict[str, Any] = {}
        for m in names:
            kind = draw(st.sampled_from(["lognormal", "fixed", "pool"]))
            if kind == "pool":
                rows = draw(
                    st.lists(
                        st.tuples(st.integers(0, 1), st.integers(1, 5000), st.none() | st.floats(0.01, 200)),
                        min_size=1,
                        max_size=12,
                    )
                )
                profiles[m] = {"samples": [list(r) for r in rows]}
            else:
                p = draw(st.floats(0, 1))
                dist = (
                    {"fixed": draw(st.integers(1, 5000))}
                    if kind == "fixed"
                    else {"mean": draw(st.floats(1, 4000)), "std": draw(st.floats(0, 3000))}
                )
                profiles[m] = {"p": p, "output_tokens": dist}
        subtasks.append(
            {
                "id": f"t{i}",
                "deps": [f"t{d}" for d in deps],
                "input_tokens": draw(st.integers(0, 20000)),
                "profiles": profiles,
                **draw(histories(profiles)),
            }
        )
    return {"name": "random", "models": models, "subtasks": subtasks}


@st.composite
def histories(draw: st.DrawFn, profiles: dict[str, Any]) -> dict[str, Any]:
    """A repair loop and history-dependent success, or neither (independent attempts)."""
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["loop"] = {"horizon": draw(st.integers(1, 4))}
        if draw(st.booleans()):
            out["loop"]["tool"] = {"latency_s": draw(st.floats(0, 5)), "cost_usd": draw(st.floats(0, 0.01))}
    form = draw(st.sampled_from(["none", "difficulty", "cascade", "replay"]))
    names = sorted(profiles)
    if form == "difficulty" and all("p" in p for p in profiles.values()):
        for name in names:
            if profiles[name]["p"] < 1 and draw(st.booleans()):
                profiles[name]["repair_p"] = draw(st.floats(0, 1))
        out["difficulty"] = {"spread": draw(st.floats(0, 3)), "classes": draw(st.integers(1, 8)),
                             "repairs": draw(st.sampled_from(["any", "own"]))}  # fmt: skip
    elif form == "cascade":
        paths = st.lists(st.sampled_from(names), min_size=1, max_size=3).map(">".join)
        out["cascade"] = draw(st.dictionaries(paths, st.floats(0, 1), min_size=1, max_size=6))
    elif form == "replay":
        n = draw(st.integers(1, 6))
        outcomes = st.lists(st.integers(0, 1), min_size=n, max_size=n)
        out["replay"] = {"first": {m: draw(outcomes) for m in names}, "repair": {m: draw(outcomes) for m in names}}
    return out


class Greedy(Planner):
    """Asks for wide batches on random models whatever the budget: the executor must refuse what it cannot afford."""

    name = "greedy"
    in_thread = False

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def decide(self, snapshot: Snapshot) -> Decision:
        usable = snapshot.table.usable
        out = {}
        for i in snapshot.ready:
            models = [j for j in range(snapshot.table.n_models) if usable[i, j]]
            if self.rng.random() < 0.9:
                out[i] = Launch(self.rng.choice(models), self.rng.choice([1, 2, 8, 24]))
        return Decision(out)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], float, float, dict[str, Any]]:
    spec = draw(workflows())
    budget = draw(st.floats(1e-5, 1.0))
    deadline = draw(st.floats(0.5, 300))
    m = draw(st.sampled_from(sorted(spec["models"])))
    planner = draw(
        st.sampled_from([f"retry:{m}:1", f"retry:{m}:3", f"retry:{m}:8", f"uniform:{m}", "greedy", "mcp:n=8:k=1,4"])
    )
    options = {
        "planner": planner,
        "seed": draw(st.integers(0, 2**31)),
        "cancel_siblings": draw(st.booleans()),
        "rounds": draw(st.booleans()),
        "output_token_cap": draw(st.none() | st.integers(1, 50_000)),
    }
    return spec, budget, deadline, options


def _run(
    spec: dict[str, Any], budget: float, deadline: float, options: dict[str, Any], journal: Path
) -> tuple[runtime.RunResult, list[runtime.Event]]:
    events: list[runtime.Event] = []
    if options["planner"] == "greedy":
        options = {**options, "planner": Greedy(options["seed"])}
    result = runtime.run(build(spec), budget, deadline, on_event=events.append, journal=journal, **options)
    return result, events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold_on_random_runs(scenario: tuple[dict[str, Any], float, float, dict[str, Any]]) -> None:
    spec, budget, deadline, options = scenario
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "run.jsonl"
        result, events = _run(spec, budget, deadline, options, journal)
        budget_pusd = runtime.types.to_pusd(budget)

        # 1. Never overspend: at every event, spent + reserved <= budget; at the end nothing is held.
        live = runtime.replay_ledger(events)
        assert live.peak_committed_pusd <= budget_pusd
        assert live.reserved_pusd == 0
        assert live.spent_pusd == result.cost_pusd == live.reported_spent_pusd
        assert result.cost_pusd <= budget_pusd
        cap = options["output_token_cap"]
        if cap is not None:
            held = spent = 0
            for e in events:
                if isinstance(e, BudgetReserved):
                    held += e.output_tokens
                elif isinstance(e, runtime.BudgetSettled):
                    held -= e.output_tokens + e.released_output_tokens
                    spent += e.output_tokens
                assert held + spent <= cap

        # 2. Never work past the deadline.
        for e in of(events, BatchLaunched):
            assert e.t < deadline
        for e in of(events, SampleFinished):
            assert e.t <= deadline + 1e-9
        assert result.elapsed <= deadline + 1e-9
        if not result.success:
            assert result.reason in {"deadline", "budget", "planner_gave_up", "exhausted"}

        # 3. Nothing is lost: one settlement per launched sample, and the journal rebuilds the ledger exactly.
        launched = sum(e.k for e in of(events, BatchLaunched))
        assert live.settlements == launched == len(of(events, SampleFinished))
        assert runtime.replay_ledger(runtime.read_journal(journal)) == live
        assert math.isclose(sum(o.cost for o in result.subtasks.values()), result.cost, rel_tol=1e-9, abs_tol=1e-15)

        # 4. Same seed, same run.
        again, events2 = _run(spec, budget, deadline, options, Path(tmp) / "again.jsonl")
        assert comparable(events) == comparable(events2)
        assert again.cost_pusd == result.cost_pusd and again.success == result.success
