"""The MCP planner: options, determinism, and the paper's safe improvement over its own portfolio."""

from __future__ import annotations

import math

import numpy as np
import pytest

import runtime
from planners import make_planner
from planners.exact import ExactPlanner
from planners.kernels import NO_FALLBACK, simulate, simulate_snapshot, snapshot_arrays
from planners.mcp import PACED, MCPPlanner, auto_sims
from planners.mcp_kernel import decide
from runtime import PlannerContext, evaluate
from tests.conftest import EXAMPLES, build, mixed_diamond
from tests.test_kernels import start_snapshot


def ctx(spec: str = "release20.json") -> PlannerContext:
    table = runtime.ProfileTable.from_workflow(runtime.load_workflow(EXAMPLES / spec))
    return PlannerContext(table, runtime.PUSD_PER_USD, 600.0, 0)


def test_options_parse() -> None:
    p = make_planner("mcp:n=32:k=1,8:models=mini,large:seed=5:ms=50", ctx())
    assert isinstance(p, MCPPlanner)
    assert (p.n_sims, p.widths, p.seed, p.compute_ms) == (32, (1, 8), 5, 50.0)
    assert [p.table.model_names[j] for j in p.models] == ["mini", "large"]
    paced = [(m, k) for m in ("mini", "large", "assigned") for k in (1, 8, PACED)]
    assert [(x.name, x.k) for x in p.portfolio] == paced
    paper = make_planner("mcp:k=1,8:models=mini,large:mixed=0", ctx())
    assert isinstance(paper, MCPPlanner) and len(paper.portfolio) == 4  # the paper's
    assert make_planner("mcp", ctx()).name == "mcp:n=64:k=1,4,16,64:models=mini,mid,large"


@pytest.mark.parametrize(
    ("spec", "sims"), [("release20.json", 64), ("chain.json", 424), ("diamond.json", 320), ("repair_loop.json", 160)]
)
def test_the_default_simulations_scale_with_the_attempts_a_simulation_plays(spec: str, sims: int) -> None:
    """64 at 20 subtasks (the paper's N), more on smaller workflows (a repair loop counts its horizon)."""
    table = ctx(spec).table
    assert auto_sims(table) == sims
    assert MCPPlanner(table).n_sims == sims
    assert MCPPlanner(table, n_sims=32).n_sims == 32
    assert make_planner("mcp", ctx(spec)).name.startswith(f"mcp:n={sims}:")


@pytest.mark.parametrize(
    "spec",
    [
        "mcp:n=0",
        "mcp:k=",
        "mcp:k=0,4",
        "mcp:models=huge",
        "mcp:models=",
        "mcp:n=x",
        "mcp:bogus=1",
        "mcp:64",
        "mcp:mixed=2",
        "mcp:sticky=yes",
        "mcp:paced=2",
        "mcp:ms=0",
    ],
)
def test_bad_options_raise_planner_spec_error(spec: str) -> None:
    with pytest.raises(runtime.PlannerSpecError):
        make_planner(spec, ctx())


def test_a_bad_option_is_named() -> None:
    with pytest.raises(runtime.PlannerSpecError, match="unknown option 'bogus'"):
        make_planner("mcp:bogus=1", ctx())
    with pytest.raises(runtime.PlannerSpecError, match="option n must be an integer, not 'abc'"):
        make_planner("mcp:n=abc", ctx())
    with pytest.raises(runtime.PlannerSpecError, match="unknown model 'nope'"):
        make_planner("mcp:models=nope", ctx())


def test_decisions_are_deterministic_for_a_seed() -> None:
    wf = runtime.load_workflow(EXAMPLES / "diamond.json")
    a = runtime.run(wf, 0.05, 120, planner="mcp:n=32", seed=3)
    b = runtime.run(wf, 0.05, 120, planner="mcp:n=32", seed=3)
    assert a.to_dict()["subtasks"] == b.to_dict()["subtasks"] and a.cost_pusd == b.cost_pusd


def test_first_decision_is_at_least_as_good_as_every_base_action() -> None:
    table = runtime.ProfileTable.from_workflow(runtime.load_workflow(EXAMPLES / "release20.json"))
    snap = start_snapshot(table, 1.0, 900.0)
    planner = MCPPlanner(table, n_sims=64, seed=1)
    chosen = planner.decide(snap).launches
    # Re-score on fresh random numbers: the chosen action under its best continuation vs every base policy.
    fresh = 2000
    best_base = max(simulate_snapshot(snap, {}, p.models, p.k, fresh, 99)[0].mean() for p in planner.portfolio)
    chosen_value = max(
        simulate_snapshot(snap, dict(chosen), p.models, p.k, fresh, 99)[0].mean() for p in planner.portfolio
    )
    # Tolerance: the planner's own N = 64 estimates (sd <= 0.0625) with the winner's curse over a few dozen
    # candidates (about 2 sd), plus the fresh estimate's error.
    assert chosen_value >= best_base - 0.15 - 3 * math.sqrt(0.25 / fresh)
    assert chosen, "with budget and time left, MCP launches something"


@pytest.mark.parametrize(("deadline", "model"), [(12.0, "fast"), (60.0, "slow")])
def test_equal_chances_go_to_the_scarcer_resource(deadline: float, model: str) -> None:
    """Both models always succeed; the slow one is ten times cheaper. With 12 s the slow one (10.1 s) would
    leave under a quarter of the time: MCP takes the fast one. With 60 s both leave plenty: the cheaper."""
    card = {"provider": "sim", "input_price_per_mtok": 0.1, "ttft_s": 0.1, "max_output_tokens": 1000}
    wf = runtime.parse_workflow({
        "name": "two-speeds",
        "models": {"fast": {**card, "output_price_per_mtok": 10.0, "tokens_per_s": 100},
                   "slow": {**card, "output_price_per_mtok": 1.0, "tokens_per_s": 10}},
        "subtasks": [{"id": "only", "deps": [], "input_tokens": 10,
                      "profiles": {m: {"p": 1.0, "output_tokens": {"fixed": 100}} for m in ("fast", "slow")}}],
    })  # fmt: skip
    table = runtime.ProfileTable.from_workflow(wf)
    chosen = MCPPlanner(table, n_sims=32).decide(start_snapshot(table, 1.0, deadline)).launches
    assert {i: (table.model_names[x.model], x.k) for i, x in chosen.items()} == {0: (model, 1)}


def _one_subtask(p: dict[str, float]) -> runtime.ProfileTable:
    card = {
        "provider": "sim",
        "input_price_per_mtok": 0.1,
        "output_price_per_mtok": 1.0,
        "tokens_per_s": 100,
        "ttft_s": 0.1,
        "max_output_tokens": 1000,
    }
    return runtime.ProfileTable.from_workflow(runtime.parse_workflow({
        "name": "hold", "models": {m: card for m in p},
        "subtasks": [{"id": "only", "deps": [], "input_tokens": 10,
                      "profiles": {m: {"p": q, "output_tokens": {"fixed": 100}} for m, q in p.items()}}],
    }))  # fmt: skip


@pytest.mark.parametrize(
    ("p", "hold", "model"),
    [
        ({"a": 0.5, "b": 0.5}, -1, "a"),  # nothing held: the first of equals
        ({"a": 0.5, "b": 0.5}, 1, "b"),  # b held: an equal policy does not take over
        ({"a": 0.9, "b": 0.2}, 1, "a"),  # b held, a clearly better: a takes over
    ],
)
def test_the_held_policy_stays_unless_another_is_clearly_better(p: dict[str, float], hold: int, model: str) -> None:
    table = _one_subtask(p)
    planner = MCPPlanner(table, n_sims=64, widths=(1,), mixed=False)
    assert [x.name for x in planner.portfolio] == ["a", "b"]
    snap = start_snapshot(table, 2 * float(table.worst_cost[0].max()) / runtime.PUSD_PER_USD, 600.0)
    act_m, act_k, held = decide(
        planner._tab, snapshot_arrays(snap), np.array([0], np.int64), planner._port_models, planner._fallback,
        planner._port_k, 64, 1, 1.0, 0, 0.0, hold,
    )  # fmt: skip
    assert (table.model_names[act_m[0]], act_k[0], held) == (model, 1, table.model_index(model))


def test_a_sticky_planner_remembers_its_policy_across_decisions() -> None:
    table = _one_subtask({"a": 0.5, "b": 0.5})
    sticky, fresh = (
        MCPPlanner(table, widths=(1,), mixed=False),
        MCPPlanner(table, widths=(1,), mixed=False, sticky=False),
    )
    snap = start_snapshot(table, 1.0, 600.0)
    for planner in (sticky, fresh):
        planner.decide(snap)
    assert (sticky._hold, fresh._hold) == (0, -1)
    assert fresh.name.endswith(":sticky=0") and not sticky.name.endswith(":sticky=0")


CELLS = [  # (workflow, budget, deadline): budget-bound, deadline-bound and both
    ("chain.json", 0.01, 30.0),
    ("chain.json", 0.02, 40.0),
    ("diamond.json", 0.02, 40.0),
    ("diamond.json", 0.03, 30.0),
    ("mixed_diamond", 0.03, 45.0),
    ("mixed_diamond", 0.05, 30.0),
]


def test_safe_improvement_over_the_best_base_policy() -> None:
    """Paper Theorems 3 and 6: per cell, MCP is not below the best base policy by more than the Monte Carlo
    error (both evaluated on the same seeds), and it is above it on average over the cells."""
    runs = 120
    gains = []
    for spec, budget, deadline in CELLS:
        wf = mixed_diamond() if spec == "mixed_diamond" else runtime.load_workflow(EXAMPLES / spec)
        mcp = evaluate(wf, budget, deadline, planner="mcp", runs=runs, seed=0)
        base = evaluate(wf, budget, deadline, planner="best-retry", runs=runs, seed=0)
        p, b = mcp.p_success, base.p_success
        se = math.sqrt(max(p * (1 - p) + b * (1 - b), 0.02) / runs)
        assert p >= b - 3 * se, (spec, budget, deadline, p, b)
        assert mcp.overspend_runs == 0 and mcp.late_runs == 0
        gains.append(p - b)
    assert sum(gains) / len(gains) > 0.02, gains


def _pay_chain(n: int = 2, tokens: int = 100) -> runtime.ProfileTable:
    """A chain of n subtasks; ``cheap`` ($0.0001 an attempt, p 0.5, 1.1 s) and ``strong`` ($0.001, p 0.95, 2.1 s)."""
    cards = {
        name: {"provider": "sim", "input_price_per_mtok": 0.0, "output_price_per_mtok": price, "tokens_per_s": tps,
               "ttft_s": 0.1, "max_output_tokens": 100}
        for name, price, tps in (("cheap", 1.0, 100), ("strong", 10.0, 50))
    }  # fmt: skip
    profiles = {name: {"p": p, "output_tokens": {"fixed": tokens}} for name, p in (("cheap", 0.5), ("strong", 0.95))}
    return runtime.ProfileTable.from_workflow(runtime.parse_workflow({
        "name": "pay", "models": cards,
        "subtasks": [{"id": f"s{i}", "deps": [f"s{i - 1}"] if i else [], "input_tokens": 10, "profiles": profiles}
                     for i in range(n)],
    }))  # fmt: skip


def test_a_policy_that_cannot_pay_for_its_model_falls_back_to_one_it_can() -> None:
    """Seq-(strong, 1) on a two-subtask chain whose budget pays for strong once: after strong on the first
    subtask, the second gets the cheap model (the value order) instead of nothing, so the policy can still win."""
    table = _pay_chain()
    planner = MCPPlanner(table, widths=(1,), mixed=False)
    strong = next(p for p, policy in enumerate(planner.portfolio) if policy.name == "strong")
    snap = snapshot_arrays(start_snapshot(table, 0.0016, 600.0))  # strong once ($0.001) and cheap a few times
    none, models, k = np.zeros(0, np.int64), planner._port_models[strong], planner._port_k[strong]
    stuck = simulate(planner._tab, snap, none, none, none, models, NO_FALLBACK, k, none, 0, 400, 7)[0].mean()
    falls = simulate(planner._tab, snap, none, none, none, models, planner._fallback, k, none, 0, 400, 7)[0].mean()
    assert stuck < 0.1 < 0.6 < falls, (stuck, falls)  # without the fallback the second subtask never runs


@pytest.mark.parametrize(
    ("budget", "deadline", "model", "k"),
    [
        (0.00105, 600.0, "cheap", 1),  # strong ($0.001) would leave less than a cheap attempt for the rest
        (0.0013, 600.0, "strong", 1),  # ... and now leaves one: the policy's own model
        (1.0, 3.0, "cheap", 1),  # money enough, but strong's 2.1 s leave no time for the next subtask (1.1 s)
        (1.0, 3.3, "strong", 1),
    ],
)
def test_a_policy_keeps_back_what_the_rest_of_the_workflow_needs(
    budget: float, deadline: float, model: str, k: int
) -> None:
    table = _pay_chain(tokens=100)
    planner = MCPPlanner(table, widths=(1,), mixed=False)
    strong = next(p for p, policy in enumerate(planner.portfolio) if policy.name == "strong")
    snap = start_snapshot(table, budget, deadline)
    act_m, act_k, _ = decide(
        planner._tab, snapshot_arrays(snap), np.array([0], np.int64), planner._port_models[strong : strong + 1],
        planner._fallback, planner._port_k[strong : strong + 1], 16, 1, 1.0, 0, 0.0, -1,
    )  # fmt: skip
    assert (table.model_names[int(act_m[0])], int(act_k[0])) == (model, k)


def _fork(p_cheap: float = 0.5) -> runtime.ProfileTable:
    """Two independent subtasks; ``cheap`` ($0.00004 an attempt, 0.5 s) and ``strong`` (p 0.95, $0.0004 an
    attempt but $0.001 reserved, as its worst case is 100 tokens and it writes 40; 0.9 s)."""
    cards = {
        name: {"provider": "sim", "input_price_per_mtok": 0.0, "output_price_per_mtok": price, "tokens_per_s": tps,
               "ttft_s": 0.1, "max_output_tokens": 100}
        for name, price, tps in (("cheap", 1.0, 100), ("strong", 10.0, 50))
    }  # fmt: skip
    profiles = {name: {"p": p, "output_tokens": {"fixed": 40}} for name, p in (("cheap", p_cheap), ("strong", 0.95))}
    return runtime.ProfileTable.from_workflow(runtime.parse_workflow({
        "name": "fork", "models": cards,
        "subtasks": [{"id": f"s{i}", "deps": [], "input_tokens": 10, "profiles": profiles} for i in range(2)],
    }))  # fmt: skip


@pytest.mark.parametrize(("deadline", "model"), [(600.0, None), (1.5, "cheap")])
def test_a_policy_waits_for_what_the_batches_in_flight_give_back(deadline: float, model: str | None) -> None:
    """Seq-(strong, 1) with s0 in flight on strong and $0.0008 left: strong does not fit on s1 now but will
    once s0 ends (0.9 s) and gives back $0.0006, so the policy waits where the deadline leaves time for s1
    after that, and takes the cheap model now where it does not (0.9 + 0.9 s > 1.5 s)."""
    table = _fork()
    planner = MCPPlanner(table, widths=(1,), mixed=False)
    strong = next(p for p, policy in enumerate(planner.portfolio) if policy.name == "strong")
    snap = runtime.Snapshot(
        table=table, now=0.0, time_left=deadline, budget_pusd=runtime.types.to_pusd(0.0018),
        budget_left_pusd=runtime.types.to_pusd(0.0008), output_tokens_left=None, completed=frozenset(), ready=(1,),
        in_flight=(runtime.InFlight(0, 0, table.model_index("strong"), 1, 0.0, 1, False),), failed=(),
        samples_launched=(1, 0),
    )  # fmt: skip
    act_m, _, _ = decide(
        planner._tab, snapshot_arrays(snap), np.array([1], np.int64), planner._port_models[strong : strong + 1],
        planner._fallback, planner._port_k[strong : strong + 1], 16, 1, 1.0, 0, 0.0, -1,
    )  # fmt: skip
    assert (None if act_m[1] < 0 else table.model_names[int(act_m[1])]) == model


def test_a_simulated_policy_waits_for_refunds_too() -> None:
    """The same rule where the simulations play the policy: from the start with $0.0018 and 1.85 s, strong on
    s0, then strong on s1 once s0's reservation comes back (0.95^2 = 0.90). Taking the hopeless cheap model
    (p 0.05) on s1 instead, until strong no longer has the time, finishes about 1 run in 6."""
    table = _fork(p_cheap=0.05)
    planner = MCPPlanner(table, widths=(1,), mixed=False)
    strong = next(p for p, policy in enumerate(planner.portfolio) if policy.name == "strong")
    snap = snapshot_arrays(start_snapshot(table, 0.0018, 1.85))
    none, models, k = np.zeros(0, np.int64), planner._port_models[strong], planner._port_k[strong]
    ok = simulate(planner._tab, snap, none, none, none, models, planner._fallback, k, none, 0, 2000, 3)[0]
    assert 0.87 < ok.mean() < 0.93, ok.mean()


def test_a_paced_policy_spreads_the_money_over_the_subtasks_and_batches_left() -> None:
    """Paced: the money per subtask not launched yet, over the batches in a row that the time allows."""
    table = _pay_chain(n=2, tokens=100)
    planner = MCPPlanner(table, widths=(1,))
    cheap = next(p for p, policy in enumerate(planner.portfolio) if policy.name == "cheap" and policy.k == PACED)
    for budget, deadline, want in ((0.0041, 600.0, 1), (0.0041, 3.5, 10), (0.0041, 2.25, 20), (0.1, 2.25, 64)):
        snap = start_snapshot(table, budget, deadline)
        act_m, act_k, _ = decide(
            planner._tab, snapshot_arrays(snap), np.array([0], np.int64), planner._port_models[cheap : cheap + 1],
            planner._fallback, planner._port_k[cheap : cheap + 1], 8, 1, 1.0, 0, 0.0, -1,
        )  # fmt: skip
        assert (table.model_names[int(act_m[0])], int(act_k[0])) == ("cheap", want), (budget, deadline)


def _three_branches() -> runtime.ProfileTable:
    """Three subtasks side by side (seed 101 of the harder family, after its first subtask): a cheap model that
    succeeds 45%, 10% and 10% of the time, and a strong one 37x dearer."""
    card = {"provider": "sim", "tokens_per_s": 80, "ttft_s": 0.94, "max_output_tokens": 1000}
    cheap = {**card, "input_price_per_mtok": 0.2, "output_price_per_mtok": 0.8}
    strong = {
        **card,
        "input_price_per_mtok": 7.4459,
        "output_price_per_mtok": 29.7836,
        "tokens_per_s": 60,
        "ttft_s": 0.24,
    }
    rows = [("s1", 600, 450, 0.449, 0.894), ("s2", 500, 500, 0.1, 0.62), ("s3", 900, 400, 0.1, 0.511)]
    return runtime.ProfileTable.from_workflow(build({
        "name": "three-branches", "models": {"cheap": cheap, "strong": strong},
        "subtasks": [{"id": sid, "deps": [], "input_tokens": tin,
                      "profiles": {"cheap": {"p": pc, "output_tokens": {"fixed": tout}},
                                   "strong": {"p": ps, "output_tokens": {"fixed": tout}}}}
                     for sid, tin, tout, pc, ps in rows],
    }))  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_change_can_move_money_between_batches_side_by_side(seed: int) -> None:
    """With money for about 36 cheap samples and time for one round, the optimum is 4 on the likely subtask
    and 16 on each unlikely one (0.60); Retry's 16, 16 and what is left (6) makes 0.38. From there, narrowing
    one batch must hand the money to the batch the budget cut short, or no single change improves."""
    table = _three_branches()
    budget, deadline = runtime.types.to_pusd(0.03515), 9.26
    exact = make_planner("exact", PlannerContext(table, budget, deadline, 0))
    assert isinstance(exact, ExactPlanner)
    start = runtime.Snapshot.at_start(table, budget, deadline)
    chosen = MCPPlanner(table, seed=seed).decide(start).launches
    assert exact.action_value(start, chosen) >= exact.state_value(start) - 0.02, chosen
