"""MCP: Monte Carlo Portfolio Planning (the MCP paper, Section 3.2 and Algorithm 1).

At each decision the planner scores candidate actions by simulated executions: a candidate is first
applied, then a continuation policy from the portfolio {Seq-(m, k)} (``retry:m:k``) runs the rest of the
workflow; the candidate's score is its best continuation's success rate over ``n`` simulations, all on
common random numbers. The argmax is executed; the executor asks again after the next event.

Candidates always include the portfolio's base actions (each policy's own first decision), scored with
their own policy, so the chosen action is never estimated worse than the best base policy: the paper's
safe-improvement guarantee (Theorems 3 and 6), up to Monte Carlo error (and a base policy the race below
drops was clearly behind on its screen). Mixed actions (different models and
widths on different ready subtasks, or "not now" on some) come from a greedy sweep around the best action
so far; the sweep stops early at ``compute_ms``.

Scoring races, to keep a decision in milliseconds: every candidate first runs the first quarter of the
simulations. Only the base actions leading there (at most a quarter of the portfolio, none more than two
standard deviations behind the first) and the mixed actions that beat the incumbent there run the rest,
against the ``top`` best continuation policies. Simulation s is the same random stream for every
candidate, so the screen and the full score compare on common random numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from planners.base import Decision, Launch, Planner, Snapshot
from planners.kernels import SnapshotSim
from runtime._errors import PlannerSpecError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from planners import PlannerContext
    from runtime._profiles import ProfileTable

__all__ = ["DEFAULT_WIDTHS", "MCPPlanner", "from_spec"]

DEFAULT_WIDTHS = (1, 4, 16, 64)

Action = dict[int, Launch]
Runs = tuple[np.ndarray, np.ndarray]  # success and pico-dollars spent, per simulation


@dataclass(frozen=True, slots=True)
class _Score:
    value: float  # estimated probability of finishing within both limits
    cost: float  # mean pico-dollars spent in the simulations: the tie-breaker (cheaper first)

    @classmethod
    def of(cls, ok: np.ndarray, spent: np.ndarray) -> _Score:
        return cls(float(ok.mean()), float(spent.mean()))

    def beats(self, other: _Score) -> bool:
        # Equal chances: the cheaper action wins, unless both chances are nil: launching something cannot do
        # worse than stopping, so there the action found first (a base action) stays.
        return self.value > other.value or (self.value == other.value > 0 and self.cost < other.cost)


class MCPPlanner(Planner):
    """Monte Carlo Portfolio Planning.

    Args:
        table: the run's profiles.
        n_sims: simulations per (candidate, continuation) pair that survives the race (the paper's N;
            default 64); the others run a quarter of them.
        widths: the width portfolio K (default 1, 4, 16, 64).
        models: indices of the models the planner may use (default all).
        seed: seeds the simulations; with no ``compute_ms`` the decisions are a function of the seed.
        compute_ms: stop the mixed-action sweep once a decision has taken this long (base actions are
            always scored in full). None for no cap.
        top: how many of the best continuation policies score the mixed actions.
    """

    in_thread = True

    def __init__(
        self,
        table: ProfileTable,
        *,
        n_sims: int = 64,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        models: Sequence[int] | None = None,
        seed: int = 0,
        compute_ms: float | None = None,
        top: int = 1,
    ) -> None:
        if n_sims < 1:
            raise PlannerSpecError(f"mcp: n must be at least 1, not {n_sims}")
        if not widths or any(k < 1 for k in widths):
            raise PlannerSpecError(f"mcp: widths must be a non-empty set of positive integers, not {list(widths)}")
        models = list(range(table.n_models)) if models is None else list(models)
        if not models:
            raise PlannerSpecError("mcp: no models to plan with")
        self.table = table
        self.n_sims = n_sims
        self.widths = tuple(sorted(set(widths)))
        self.models = tuple(models)
        self.seed = seed
        self.compute_ms = compute_ms
        self.top = max(1, top)
        self.portfolio = tuple((j, k) for j in self.models for k in self.widths)
        self._decisions = 0
        names = ",".join(table.model_names[j] for j in self.models)
        self.name = f"mcp:n={n_sims}:k={','.join(map(str, self.widths))}:models={names}"

    def decide(self, snapshot: Snapshot) -> Decision:
        if not snapshot.ready:
            return Decision({})
        start = time.perf_counter()
        seed = (self.seed * 1_000_003 + self._decisions) % (2**31)
        self._decisions += 1
        sim = SnapshotSim(snapshot)

        n_all, n_screen = self.n_sims, max(1, self.n_sims // 4)

        def run(action: Action, policy: tuple[int, int], lo: int, hi: int) -> Runs:
            """Simulations lo..hi-1 of ``action`` then ``policy``: success and spend per simulation."""
            ok, spent, _ = sim(action, policy[0], policy[1], hi - lo, seed, first_sim=lo)
            return ok, spent

        def extend(action: Action, policy: tuple[int, int], screened: Runs) -> Runs:
            """The screened simulations plus the rest, up to ``n_all``."""
            if n_screen == n_all:
                return screened
            ok, spent = run(action, policy, n_screen, n_all)
            return np.concatenate([screened[0], ok]), np.concatenate([screened[1], spent])

        # Base actions, each scored under its own policy: Q_mu(s, mu(s)) = V^mu(s). They race: every policy
        # runs the first quarter of the simulations, and the leaders there (at most a quarter of the
        # portfolio, and only those not clearly behind the first) run them all.
        screens = []
        for policy in self.portfolio:
            action = self._base_action(snapshot, policy)
            screened = run(action, policy, 0, n_screen)
            screens.append((_Score.of(*screened), policy, action, screened))
        screens.sort(key=lambda x: (-x[0].value, x[0].cost))
        lead = screens[0][0].value * n_screen
        behind = 2.0 * math.sqrt(lead * (n_screen - lead) / n_screen) + 1.0  # two sd of the leader, plus one
        keep = max(2, len(self.portfolio) // 4)
        best_action: Action = {}
        best, best_runs = _Score(-1.0, 0.0), (np.zeros(n_all, np.bool_), np.zeros(n_all, np.int64))
        policy_values: list[tuple[_Score, tuple[int, int]]] = []
        for rank, (screen, policy, action, screened) in enumerate(screens):
            if rank >= keep or screen.value * n_screen < lead - behind:
                policy_values.append((_Score(screen.value - 1.0, screen.cost), policy))  # ranked after the finalists
                continue
            runs = extend(action, policy, screened)
            s = _Score.of(*runs)
            policy_values.append((s, policy))
            if s.beats(best):
                best, best_action, best_runs = s, action, runs
        policy_values.sort(key=lambda sv: (-sv[0].value, sv[0].cost))
        continuations = [p for _, p in policy_values[: self.top]]

        # Mixed actions: change one ready subtask at a time; keep a change when it scores better. A candidate
        # is screened first on the first quarter of the simulations under the best continuation (common random
        # numbers: the same runs the incumbent was scored on); only one that beats the incumbent there runs
        # the rest, and the other top continuations.
        options: list[Launch | None] = [None, *(Launch(j, k) for j, k in self.portfolio)]
        seen = {_key(best_action)}
        improved = True
        while improved and not self._out_of_time(start):
            improved = False
            for i in snapshot.ready:
                for opt in options:
                    current = best_action.get(i)
                    if opt == current or (opt is not None and self.table.kind[i, opt.model] < 0):
                        continue
                    if opt is None:
                        cand: Action | None = {o: a for o, a in best_action.items() if o != i}
                    else:
                        cand = self._make_room(snapshot, best_action, i, opt)
                    if cand is None:
                        continue
                    key = _key(cand)
                    if key in seen:
                        continue
                    seen.add(key)
                    screened = run(cand, continuations[0], 0, n_screen)
                    if not _Score.of(*screened).beats(_Score.of(best_runs[0][:n_screen], best_runs[1][:n_screen])):
                        continue
                    s_runs = extend(cand, continuations[0], screened)
                    s = _Score.of(*s_runs)
                    for p in continuations[1:]:
                        runs = run(cand, p, 0, n_all)
                        if _Score.of(*runs).beats(s):
                            s, s_runs = _Score.of(*runs), runs
                    if s.beats(best):
                        best, best_action, best_runs, improved = s, cand, s_runs, True
                    if self._out_of_time(start):
                        break
                if self._out_of_time(start):
                    break
        return Decision(best_action)

    def _out_of_time(self, start: float) -> bool:
        return self.compute_ms is not None and (time.perf_counter() - start) * 1000.0 >= self.compute_ms

    def _base_action(self, snapshot: Snapshot, policy: tuple[int, int]) -> Action:
        """What Seq-(m, k) launches here: the Retry planner's rule, so the simulation's policy agrees."""
        from planners.baselines import RetryPlanner

        return dict(RetryPlanner(self.table, policy[0], policy[1]).decide(snapshot).launches)

    def _make_room(self, snapshot: Snapshot, action: Action, i: int, launch: Launch) -> Action | None:
        """``action`` with subtask i set to ``launch``, the other launches shrunk (Retry's rule) to fit the
        budget and token cap that are left; ``launch`` itself shrinks too. None if not one sample fits.

        Without the shrinking, a sweep that changes one subtask at a time could never move from, say, a
        wide cheap batch everywhere to one strong sample on the bottleneck plus a narrower cheap batch.
        """
        t = self.table
        worst, cap = int(t.worst_cost[i, launch.model]), int(t.max_tokens[launch.model])
        tokens = snapshot.output_tokens_left
        k = min(launch.k, snapshot.budget_left_pusd // worst) if worst else launch.k
        if tokens is not None:
            k = min(k, tokens // cap)
        if k < 1:
            return None
        launch = Launch(launch.model, k)  # a width that does not fit shrinks, as in Retry
        money = snapshot.budget_left_pusd - k * worst
        if tokens is not None:
            tokens -= k * cap
        out: Action = {}
        for o in sorted(action):
            if o == i:
                continue
            a = action[o]
            worst, cap = int(t.worst_cost[o, a.model]), int(t.max_tokens[a.model])
            k = min(a.k, money // worst) if worst else a.k
            if tokens is not None:
                k = min(k, tokens // cap)
            if k >= 1:
                out[o] = Launch(a.model, k)
                money -= k * worst
                if tokens is not None:
                    tokens -= k * cap
        out[i] = launch
        return dict(sorted(out.items()))


def _key(action: Action) -> tuple[tuple[int, int, int], ...]:
    return tuple(sorted((i, a.model, a.k) for i, a in action.items()))


def _parse(args: Sequence[str], table: ProfileTable) -> dict[str, object]:
    opts: dict[str, object] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise PlannerSpecError(f"mcp: options are KEY=VALUE (n, k, models, seed, ms), not {arg!r}")
        try:
            if key == "n":
                opts["n_sims"] = int(value)
            elif key == "k":
                opts["widths"] = [int(x) for x in value.split(",") if x]
            elif key == "models":
                opts["models"] = [table.model_index(x) for x in value.split(",") if x]
            elif key == "seed":
                opts["seed"] = int(value)
            elif key == "ms":
                opts["compute_ms"] = float(value)
            elif key == "top":
                opts["top"] = int(value)
            else:
                raise PlannerSpecError(f"mcp: unknown option {key!r} (n, k, models, seed, ms, top)")
        except ValueError:
            known = ", ".join(table.model_names)
            raise PlannerSpecError(f"mcp: bad value in {arg!r} (models: {known})") from None
    return opts


def from_spec(args: Sequence[str], ctx: PlannerContext) -> MCPPlanner:
    """``mcp[:n=64][:k=1,4,16,64][:models=a,b][:seed=S][:ms=20][:top=3]``; the run's seed is the default."""
    opts = _parse(args, ctx.table)
    opts.setdefault("seed", ctx.seed)
    return MCPPlanner(ctx.table, **opts)  # type: ignore[arg-type]
