"""MCP: Monte Carlo Portfolio Planning (the MCP paper, Section 3.2 and Algorithm 1).

At each decision the planner scores candidate actions by simulated executions: a candidate is first
applied, then a continuation policy from the portfolio runs the rest of the workflow; the candidate's score
is its best continuation's success rate over ``n`` simulations, all on common random numbers. The argmax is
executed; the executor asks again after the next event.

The portfolio is the paper's {Seq-(m, k)} (``retry:m:k``), plus, unless ``mixed=0``, the assigned family
Seq-(assigned, k): a model per subtask, searched by simulation at the first decision, per width, starting from
the model with the most expected successes per dollar on each subtask (:mod:`planners.mcp_assign`); and a
paced width for every family (each batch as wide as the money left per subtask left, spread over the batches
the time left allows). No policy launches what would likely leave the rest of the workflow impossible: where its
model would not leave the time the rest needs on the fastest models, or the expected cost of a cheapest
attempt at each subtask not launched yet, it takes the first model in value order that does
(:func:`planners.kernels.policy_launch`); it waits instead where the batches in flight will give back, in
time, what pays for its own model (the ledger holds each sample's worst case until it ends). Fixed models and
widths cannot express "spend what the budget allows"; on the generated family of
``benchmarks/mcp_quality.py --family`` these continuations closed most of MCP's gap to the exact optimum
(README, "MCP on a family of workflows"). There, what was left was mostly Monte Carlo noise, hence more
simulations by default on small workflows (:func:`auto_sims`).

Candidates always include the portfolio's base actions (each policy's own first decision), scored with
their own policy, so the chosen action is never estimated worse than the best base policy: the paper's
safe-improvement guarantee (Theorems 3 and 6), up to Monte Carlo error (and a base policy the race below
drops was clearly behind on its screen). Mixed actions (different models and widths on different ready
subtasks, or "not now" on some) come from a greedy sweep around the best action so far; one replaces the
incumbent only if it is better by more than ``z`` standard errors of their paired difference, since among
dozens of candidates scored on a few dozen simulations the best-looking is mostly the luckiest, and
confirmed by the same test on as many fresh simulations. Equal chances are decided by the margin the
simulations leave (the scarcer of budget and time in those that succeed, progress in those that fail;
:func:`planners.mcp_kernel._runs`), then by cost. The sweep stops early at ``compute_ms``.

The planner holds on to the portfolio policy whose base action it took: from the second decision on, that
policy's base action is the incumbent unless another's passes the same double test. A run is decided over
dozens of decisions; picking the best-looking of a dozen or more policies afresh at each one, on 64 simulations,
takes a little of the winner's curse at every step, and where one fixed policy is the best plan (a budget
that binds, as in the MCP paper's $0.05 cells) those losses added up to 4 points of success below it.

Scoring races, to keep a decision in milliseconds: every candidate first runs the first quarter of the
simulations. Only the base actions leading there (at most a quarter of the portfolio, none more than two
standard deviations behind the first) and the mixed actions that beat the incumbent there run the rest,
against the ``top`` best continuation policies. In simulation s every batch draws from a stream keyed by
(s, subtask, attempt), so candidates compare on draws that stay in step. The search is one numba kernel
(:func:`planners.mcp_kernel.decide`), which also plays predict's closed-loop runs.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from planners.baselines import DEFAULT_WIDTHS, MAX_BATCH
from planners.kernels import WORST_COST, hidden, ladder_models, seq_models, snapshot_arrays, step, table_arrays
from planners.mcp_assign import assignments
from planners.mcp_kernel import decide, ready_subtasks
from runtime.types import Decision, Launch, Planner, PlannerSpecError, Snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from planners.vine import VinePlanner
    from runtime.types import PlannerContext, Played, ProfileTable

__all__ = ["MAX_SIMS", "PACED", "MCPPlanner", "Policy", "auto_sims", "from_spec"]

MAX_SIMS = 100_000  # simulations per candidate: far beyond what a decision in milliseconds can use
# The default simulations per candidate: 64 at 20 subtasks (the paper's N, at the size decision time is
# measured at), so that a decision simulates about SIM_WORK subtask attempts per candidate whatever the
# workflow's size, up to AUTO_MAX.
SIM_WORK = 64 * 20
AUTO_MAX = 512
PACED = -1  # a policy's width that paces its batches to the money and time left (planners.kernels.policy_launch)


class Policy(NamedTuple):
    """A portfolio policy Seq-(models, k): every ready subtask i gets k samples of ``models[i, a]`` on its batch
    number a (the last column for later ones; fewer samples when the budget left cannot cover k; ``k`` is
    ``PACED`` for the paced width). ``name`` is the model, ``assigned`` (a model per subtask, see
    :mod:`planners.mcp_assign`), ``vine``, or an escalation ladder ``small>large`` (cheap first, the stronger
    after a failure)."""

    name: str
    models: np.ndarray
    k: int


class MCPPlanner(Planner):
    """Monte Carlo Portfolio Planning.

    Args:
        table: the run's profiles.
        n_sims: simulations per (candidate, continuation) pair that survives the race (the paper's N); the
            others run a quarter of them. Default :func:`auto_sims`: 64 on workflows of 20 subtasks or more,
            more on smaller ones, where a simulation is cheaper.
        widths: the width portfolio K (default 1, 4, 16, 64).
        models: indices of the models the planner may use (default all).
        seed: seeds the simulations; with no ``compute_ms`` the decisions are a function of the seed.
        compute_ms: stop the mixed-action sweep once a decision has taken this long (base actions are
            always scored in full). None for no cap.
        top: how many of the best continuation policies score the mixed actions.
        z: the margin, in standard errors, by which a mixed action must beat the incumbent (0: any gain).
        mixed: add to the portfolio the policies Seq-(assigned, k): a model per subtask, found at the first
            decision by a coordinate descent on simulations from the model with the most expected successes
            per dollar on each subtask (:mod:`planners.mcp_assign`; the same for every seed). The paper's
            portfolio uses one model for every subtask, so its continuations undervalue states where the best
            plan mixes models (its "portfolio continuation gap"); these close much of it. False gives the
            paper's portfolio (no assigned family and no paced widths).
        sticky: hold on to the policy chosen at the previous decision unless another is clearly better
            (see above); False re-chooses it from scratch at every decision, as the paper does.
        cascade: add escalation policies, one per pair of models (the cheaper first, the other on every batch
            after a failure), which one model everywhere cannot express. Where attempts depend on their
            history (a failure says the case is hard), escalating is often the best plan. Default: on where
            the workflow has repair loops or history-dependent success, off elsewhere.

        paced: with ``mixed``, add a paced width to every family (see above).

    Every portfolio policy, where its model would leave the rest of the workflow without the time or money
    it needs, or cannot run by the deadline or be paid for at all, falls back to the allowed model of best
    value that can (:func:`planners.kernels.policy_launch`; Retry would be stuck and the run lost).
    """

    in_thread = True

    def __init__(
        self,
        table: ProfileTable,
        *,
        n_sims: int | None = None,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        models: Sequence[int] | None = None,
        seed: int = 0,
        compute_ms: float | None = None,
        top: int = 1,
        mixed: bool = True,
        z: float = 1.0,
        sticky: bool = True,
        cascade: bool | None = None,
        paced: bool = True,
    ) -> None:
        if n_sims is None:
            n_sims = auto_sims(table)
        if not 1 <= n_sims <= MAX_SIMS:
            raise PlannerSpecError(f"mcp: n must be in 1..{MAX_SIMS}, not {n_sims}")
        if not widths or any(not 1 <= k <= MAX_BATCH for k in widths):
            raise PlannerSpecError(f"mcp: widths must be integers in 1..{MAX_BATCH}, not {list(widths)}")
        if not 0 <= seed < 2**62 or not 1 <= top <= 10**4:
            raise PlannerSpecError(f"mcp: seed must be in 0..2**62 and top in 1..10000, not {seed} and {top}")
        models = list(range(table.n_models)) if models is None else list(models)
        if not models:
            raise PlannerSpecError("mcp: no models to plan with")
        if any(not 0 <= j < table.n_models for j in models):
            raise PlannerSpecError(f"mcp: model indices must be in 0..{table.n_models - 1}, not {models}")
        if compute_ms is not None and not compute_ms > 0:
            raise PlannerSpecError(f"mcp: ms must be positive, not {compute_ms}")
        if not 0 <= z < math.inf:
            raise PlannerSpecError(f"mcp: z must be a non-negative number, not {z}")
        self.table = table
        self.n_sims = n_sims
        self.widths = tuple(sorted(set(widths)))
        self.models = tuple(models)
        self.seed = seed
        self.compute_ms = compute_ms
        self.top = max(1, top)
        self.z = float(z)
        self.sticky = sticky
        self._hold = -1
        families = [(table.model_names[j], seq_models(table, j)) for j in self.models]
        self._fallback = _by_value(table, self.models)
        self._value = np.where(self._fallback[:, 0] >= 0, self._fallback[:, 0], table.cheapest).astype(np.int64)
        if mixed:  # the value assignment until the first decision searches from it
            families.append(("assigned", self._value[:, None]))
        if table.has_history if cascade is None else cascade:
            families += _ladders(table, self.models)
        # On one repair loop, VineLM's plan re-rooted at every decision is a portfolio policy too, and the one MCP
        # holds at the start: MCP is then never estimated worse than VineLM (the paper's safe improvement), and
        # leaves its plan only for one clearly better on paired simulations (where wider batches pay, say).
        self._vine = _vine_seed(table, self.models)
        if self._vine is not None:
            families.append(("vine", ladder_models(table, (self.models[0],) * int(table.horizon[0]))))
        widths = (*self.widths, PACED) if mixed and paced else self.widths
        self.portfolio = tuple(Policy(name, models, k) for name, models in families for k in widths)
        rungs = max(p.models.shape[1] for p in self.portfolio)
        self._port_models = np.array([np.pad(p.models, ((0, 0), (0, rungs - p.models.shape[1])), mode="edge")
                                      for p in self.portfolio], np.int64)  # fmt: skip
        self._port_k = np.array([p.k for p in self.portfolio], np.int64)
        self._tab = table_arrays(table)
        self._decisions = 0
        self._assigned = [q for q, p in enumerate(self.portfolio) if p.name == "assigned"]
        self._assigned_done = False
        self._assign_lock = threading.Lock()
        if self._vine is not None:  # VineLM's plan is the incumbent from the start: others must beat it clearly
            self._hold = min((p.k, i) for i, p in enumerate(self.portfolio) if p.name == "vine" and p.k > 0)[1]
        names = ",".join(table.model_names[j] for j in self.models)
        flags = ("" if mixed else ":mixed=0") + ("" if sticky else ":sticky=0")
        flags += "" if cascade is None else f":cascade={int(cascade)}"
        flags += "" if paced else ":paced=0"
        self.name = f"mcp:n={n_sims}:k={','.join(map(str, self.widths))}:models={names}{flags}"

    def decide(self, snapshot: Snapshot) -> Decision:
        if not snapshot.ready:
            return Decision({})
        limit = 0.0 if self.compute_ms is None else time.perf_counter() + self.compute_ms / 1000.0
        seed = (self.seed * 1_000_003 + self._decisions) % (2**31)
        self._decisions += 1
        ready = np.array(snapshot.ready, np.int64)
        if self._vine is not None:
            self._seed_vine(snapshot)
        tab = self._tab  # with the ledger's worst cases where they differ from the spec's (real prompts)
        if snapshot.worst_pusd is not None:
            tab = (*tab[:WORST_COST], snapshot.worst_pusd, *tab[WORST_COST + 1 :])
        snap = snapshot_arrays(snapshot, self.table)
        self._assign(tab, snap)
        act_m, act_k, policy = decide(
            tab, snap, ready, self._port_models, self._fallback, self._port_k, self.n_sims, self.top, self.z, seed,
            limit, self._hold,
        )  # fmt: skip
        if self.sticky:
            self._hold = int(policy)
        return Decision({int(i): Launch(int(act_m[i]), int(act_k[i])) for i in snapshot.ready if act_m[i] >= 0})

    def _assign(self, tab: tuple[np.ndarray, ...], snap: tuple[object, ...]) -> None:
        """At the first decision (or closed-loop prediction), search the assigned family's models from ``snap``,
        the state it decides in; the policies keep them for the rest of the run."""
        with self._assign_lock:
            if not self._assigned or self._assigned_done:
                return
            widths = [int(self._port_k[q]) for q in self._assigned]
            found = assignments(tab, snap, self._value, self._fallback, widths, list(self.models))
            for q, models in zip(self._assigned, found, strict=True):
                self._port_models[q, :, :] = models[:, None]
                self.portfolio = (*self.portfolio[:q], self.portfolio[q]._replace(models=models[:, None]),
                                  *self.portfolio[q + 1 :])  # fmt: skip
            self._assigned_done = True

    def _seed_vine(self, snapshot: Snapshot) -> None:
        """Set the ``vine`` policies' ladder to the realized prefix and VineLM's best suffix from there."""
        assert self._vine is not None
        done = [f.model for f in snapshot.failed if f.subtask == 0 and f.answered]
        plan = self._vine.suffix(snapshot)
        if not plan:
            return  # VineLM would stop: its policy keeps its last plan, which the others compete with
        rungs = self._port_models.shape[2]
        ladder = (done + list(plan) + [plan[-1]] * rungs)[:rungs]
        for p, policy in enumerate(self.portfolio):
            if policy.name == "vine":
                self._port_models[p, 0, :] = ladder

    def play(self, start: Snapshot, seed: int, first: int, count: int) -> Played | None:
        """Closed-loop runs of this planner (:meth:`closed_loop`); a compute cap makes decisions depend on the
        machine, so then there is none."""
        if self.compute_ms is not None:
            return None
        return self.closed_loop(start, seed, first, count)[:3]

    def closed_loop(
        self, start: Snapshot, seed: int, first: int, count: int, plan_table: ProfileTable | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Runs ``first`` .. ``first + count - 1`` from ``start``: success, pico-dollars, seconds and decisions
        per run. ``plan_table`` (same subtasks and models) is what the planner simulates with, when its
        estimates differ from the profiles the runs are drawn from.

        The paper's closed-loop prediction (B.6) without the executor's per-event cost: at every event that
        changes what is possible (in synchronized rounds, only once nothing is in flight), whenever a subtask
        is ready and time is left, :func:`planners.mcp_kernel.decide` is asked on what the planner may see
        (:func:`planners.kernels.hidden`), and :func:`planners.kernels.step` launches the answer and plays on
        to the next such event, as the executor's execution model does. The loop is Python around the
        kernels (tens of microseconds a step against milliseconds a decision): as one kernel, it made numba
        compile the whole decision again inside it, 30 s on a first predict. ``tests/test_predict.py`` and
        ``benchmarks/predict_calibration.py`` check it against runs of the real executor.

        Run r draws its outcomes from its own seed; its planner seeds decision d with
        ``(planner seed * 1_000_003 + d) % 2**31``, as :meth:`decide` does, and holds what each decision
        returns (with ``sticky``), starting from the policy this planner holds now. The assigned family is
        searched once, from ``start``, as a run of this planner searches it at its first decision.
        """
        runs = np.arange(first, first + count, dtype=np.int64)
        # One outcome stream per run, and one for its planner's decisions (mixed exactly: seeds reach 2**62).
        run_seeds = (seed * 1_000_003 % 2**62 + runs) % 2**62
        planner_seeds = (self.seed * 7_919 % 2**31 + runs) % 2**31
        tab = self._tab
        plan_tab = tab if plan_table is None else table_arrays(plan_table)
        begin = snapshot_arrays(start)
        self._assign(plan_tab, hidden(begin))  # what the planner would search at its first decision
        n = self.table.n_subtasks
        success = np.zeros(count, np.bool_)
        spent = np.zeros(count, np.int64)
        elapsed = np.zeros(count, np.float64)
        decisions = np.zeros(count, np.int64)
        for r in range(count):
            snap, hold, status, stream = begin, self._hold, 0, 0
            while status == 0:
                ready = ready_subtasks(tab, snap)
                act_m, act_k = np.full(n, -1, np.int64), np.zeros(n, np.int64)
                if ready.shape[0] > 0 and snap[9] > 0:
                    decision_seed = (int(planner_seeds[r]) * 1_000_003 + int(decisions[r])) % 2**31
                    decisions[r] += 1
                    act_m, act_k, policy = decide(
                        plan_tab, hidden(snap), ready, self._port_models, self._fallback, self._port_k,
                        self.n_sims, self.top, self.z, decision_seed, 0.0, hold,
                    )  # fmt: skip
                    if self.sticky:
                        hold = int(policy)
                snap, cost, dt, status = step(tab, snap, ready, act_m[ready], act_k[ready], run_seeds[r], stream)
                stream += 1
                spent[r] += cost
                elapsed[r] += dt
            success[r] = status == 1
        return success, spent, elapsed, decisions


def auto_sims(table: ProfileTable) -> int:
    """The default simulations per candidate: 64 from 20 subtasks on, up to ``AUTO_MAX`` on small workflows
    (a multiple of 4, for the race's screening quarter). A repair loop counts its horizon of batches.

    A simulation costs about what its subtasks' attempts do, and on small workflows MCP's choices are limited
    by Monte Carlo noise more than by its portfolio: on the generated family (2-4 subtasks), 256 simulations
    instead of 64 more than halved the mean gap to the exact optimum (README, "MCP on a family of
    workflows")."""
    units = int(np.maximum(table.horizon, 1).sum())
    n = SIM_WORK // max(1, units)
    return int(min(AUTO_MAX, max(64, n - n % 4)))


def _vine_seed(table: ProfileTable, allowed: Sequence[int]) -> VinePlanner | None:
    """VineLM on the allowed models, where the workflow is one repair loop with a history (else None)."""
    if table.n_subtasks != 1 or table.horizon[0] < 1 or not table.has_history:
        return None
    from planners.vine import VinePlanner

    only = np.zeros((1, table.n_models), np.bool_)
    only[0, list(allowed)] = True
    return VinePlanner(table.without(~only))


def _ladders(table: ProfileTable, allowed: Sequence[int]) -> list[tuple[str, np.ndarray]]:
    """One escalation policy per pair of allowed models: the cheaper (expected cost over the workflow) first."""
    cost = [int(table.mean_cost[:, j].sum()) for j in range(table.n_models)]
    out = []
    for a in allowed:
        for b in allowed:
            if a != b and (cost[a], a) < (cost[b], b):
                out.append((f"{table.model_names[a]}>{table.model_names[b]}", ladder_models(table, (a, b))))
    return out


def _by_value(table: ProfileTable, allowed: Sequence[int]) -> np.ndarray:
    """Per subtask, the allowed models that can run it, by expected successes per dollar (best first; ties
    in model order), padded with -1: where the assigned family's search starts, and the fallback of every
    portfolio policy where its own model will not do (:func:`planners.kernels.policy_launch`)."""
    out = np.full((table.n_subtasks, len(allowed)), -1, np.int64)
    for i in range(table.n_subtasks):
        usable = [j for j in allowed if table.kind[i, j] >= 0]
        ranked = sorted(usable, key=lambda j: -table.p[i, j] / max(1, int(table.mean_cost[i, j])))
        out[i, : len(ranked)] = ranked
    return out


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError(value)
    return value == "1"


def _ints(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x]


# option -> (MCPPlanner keyword, parser, what a good value looks like)
_OPTIONS: dict[str, tuple[str, Callable[[str], object], str]] = {
    "n": ("n_sims", int, "an integer"),
    "k": ("widths", _ints, "integers separated by commas"),
    "models": ("models", str, "model names separated by commas"),
    "seed": ("seed", int, "an integer"),
    "ms": ("compute_ms", float, "a number of milliseconds"),
    "top": ("top", int, "an integer"),
    "mixed": ("mixed", _flag, "0 or 1"),
    "sticky": ("sticky", _flag, "0 or 1"),
    "z": ("z", float, "a number"),
    "cascade": ("cascade", _flag, "0 or 1"),
    "paced": ("paced", _flag, "0 or 1"),
}


def _parse(args: Sequence[str], table: ProfileTable) -> dict[str, object]:
    opts: dict[str, object] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise PlannerSpecError(f"mcp: options are KEY=VALUE ({', '.join(_OPTIONS)}), not {arg!r}")
        if key not in _OPTIONS:
            raise PlannerSpecError(f"mcp: unknown option {key!r} (options: {', '.join(_OPTIONS)})")
        keyword, parse, want = _OPTIONS[key]
        try:
            opts[keyword] = parse(value)
        except ValueError:
            raise PlannerSpecError(f"mcp: option {key} must be {want}, not {value!r}") from None
        if key == "models":
            names = [x for x in value.split(",") if x]
            unknown = [x for x in names if x not in table.model_names]
            if unknown:
                known = ", ".join(table.model_names)
                raise PlannerSpecError(f"mcp: option models names unknown model {unknown[0]!r} (models: {known})")
            opts[keyword] = [table.model_index(x) for x in names]
    return opts


def from_spec(args: Sequence[str], ctx: PlannerContext) -> MCPPlanner:
    """``mcp[:n=N][:k=1,4,16,64][:models=a,b][:seed=S][:ms=20][:top=3][:mixed=0][:sticky=0][:z=1][:cascade=1]
    [:paced=0]``; the run's seed is the default seed."""
    opts = _parse(args, ctx.table)
    opts.setdefault("seed", ctx.seed)
    return MCPPlanner(ctx.table, **opts)  # type: ignore[arg-type]
