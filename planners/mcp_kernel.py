"""MCP's decision as a numba kernel, so it holds no GIL and pays no Python per simulation.

:func:`decide` is Algorithm 1 of the MCP paper for one snapshot (see :mod:`planners.mcp` for the method);
:meth:`planners.mcp.MCPPlanner.closed_loop` plays whole runs of the planner with it, :func:`ready_subtasks`
and :func:`planners.kernels.step`.

Actions are two arrays indexed by subtask: the model (-1: nothing launched) and the width.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from numba import objmode

from planners._borrowed import borrowed
from planners._compile import njit
from planners.kernels import NO_ROLLOUTS, fit_width, launch_limits, policy_launch, simulate

__all__ = ["decide", "ready_subtasks", "simulate_policy"]


@njit(cache=True)
def _clock():
    """Wall time in a kernel, for the compute cap only (it takes the GIL for a moment)."""
    with objmode(t="float64"):
        t = time.perf_counter()
    return t


# Margins above this fraction of both limits count the same (then the cheaper action wins a tie).
MARGIN_CAP = 0.25


@njit(cache=True, nogil=True, forceinline=True)
def _beats(value, margin, cost, other_value, other_margin, other_cost):
    """Higher chance wins; on equal chances the larger margin (see :func:`_runs`), then the cheaper."""
    if value != other_value:
        return value > other_value
    return margin > other_margin or (margin == other_margin and cost < other_cost)


@njit(cache=True, nogil=True)
def _ranked(v, g, c):
    """Indices best first by :func:`_beats` of (value, margin, cost), equals in index order (a stable
    insertion sort)."""
    order = np.arange(v.shape[0])
    for a in range(1, order.shape[0]):
        x = order[a]
        b = a
        while b > 0 and _beats(v[x], g[x], c[x], v[order[b - 1]], g[order[b - 1]], c[order[b - 1]]):
            order[b] = order[b - 1]
            b -= 1
        order[b] = x
    return order


@njit(cache=True, nogil=True)
def _runs(tab, snap, ready, act_m, act_k, port, p, first, count, seed):
    """Per-simulation success, pico-dollars spent and margin, simulations first..first+count-1, of the action
    then portfolio policy p (``port`` is (models per policy and subtask, fallback order, widths)).

    The margin breaks ties between actions with the same successes. A successful simulation's is the smaller
    fraction of the budget and of the time left at the snapshot that it leaves unused, capped at
    ``MARGIN_CAP``: when the limits are tight, the scarcer resource decides, as it should (a width that
    shaves seconds off a 1-minute run, dollars off a 5-cent one); when both are loose, the cheaper action
    wins. A failed simulation's is minus the fraction of the workflow it left undone, so that where every
    candidate mostly fails, the one that gets furthest is kept. (Breaking ties by cost alone had MCP pick
    narrow batches on the critical path under tight deadlines, and the cheapest action in states that looked
    hopeless.)
    """
    models, fallback, k = port[0][p], port[1], port[2][p]
    ok, spent, end, done = simulate(tab, snap, ready, act_m[ready], act_k[ready], models, fallback, k, NO_ROLLOUTS,
                                    first, count, seed)  # fmt: skip
    left, time_left, n = snap[7], snap[9], tab[11].shape[0]
    margin = np.zeros(count)
    for s in range(count):
        if ok[s]:
            m = MARGIN_CAP
            if left > 0:
                m = min(m, 1.0 - spent[s] / left)
            if time_left > 0:
                m = min(m, 1.0 - end[s] / time_left)
            margin[s] = max(0.0, m)
        else:
            margin[s] = done[s] / n - 1.0
    return ok, spent, margin


def simulate_policy(
    tab: Any, snap: Any, models: np.ndarray, fallback: np.ndarray, k: int, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per simulated run, success and pico-dollars of Seq-(models, k) (a model per subtask) from ``snap``,
    simulations 0..count-1: :func:`_runs` with no first action, called from Python with the decision's own
    argument types, so it compiles nothing the decision has not."""
    n = models.shape[0]
    port = (np.ascontiguousarray(models, np.int64).reshape(1, n, 1), fallback, np.array([k], np.int64))
    ok, spent, _ = _runs(tab, snap, np.zeros(0, np.int64), np.full(n, -1, np.int64), np.zeros(n, np.int64), port, 0,
                         0, count, seed)  # fmt: skip
    return ok, spent


@njit(cache=True, nogil=True, inline="always")
def _all_runs(tab, snap, ready, act_m, act_k, port, p, screen, n_all, seed):
    """:func:`_runs` on all ``n_all`` simulations, given ``screen``, its scores on the first of them."""
    h = screen[0].shape[0]
    ok, sp, mg = np.zeros(n_all, np.bool_), np.zeros(n_all, np.int64), np.zeros(n_all)
    rest = _runs(tab, snap, ready, act_m, act_k, port, p, h, n_all - h, seed)
    for s in range(n_all):  # loops, not slice assignments: numba compiles broadcasting and its errors for those
        part, x = (screen, s) if s < h else (rest, s - h)
        ok[s], sp[s], mg[s] = part[0][x], part[1][x], part[2][x]
    return ok, sp, mg


@njit(cache=True, nogil=True)
def _clearly_better(ok, spent, margin, best_ok, best_spent, best_margin, z):
    """2 if a candidate beats the incumbent by more than ``z`` standard errors of their paired difference
    (the same simulations), 1 if, succeeding in exactly the same simulations, it wins the tie
    (:func:`_beats`), else 0.

    Scoring dozens of mixed candidates on a few dozen simulations each, the best-looking one is mostly the
    luckiest (the winner's curse); the margin keeps the base action unless the evidence says otherwise.
    """
    n = ok.shape[0]
    total, sq = 0, 0
    for s in range(n):
        d = int(ok[s]) - int(best_ok[s])
        total += d
        sq += d * d
    if sq == 0:  # the same outcome in every simulation
        return 1 if _beats(0, margin.sum(), spent.sum(), 0, best_margin.sum(), best_spent.sum()) else 0
    mean = total / n
    var = max(0.0, sq / n - mean * mean)
    return 2 if mean > z * math.sqrt(var / n) else 0


@njit(cache=True, nogil=True, inline="always")
def _confirm(tab, snap, ready, port, n_all, seed, z, need, cand_m, cand_k, cand_p, inc_m, inc_k, inc_p, inc_fresh):
    """Whether a candidate (action, continuation policy) that beat the incumbent also beats it, at level
    ``need`` of :func:`_clearly_better`, on as many fresh simulations (n_all..2 n_all - 1): selecting the best
    of many candidates on the same simulations rewards luck, and over dozens of decisions a run pays for it.

    ``inc_fresh`` is the incumbent's scores there, empty until first needed. Returns whether the candidate
    passed, and the fresh scores of the incumbent from then on (the candidate's, if it passed).
    """
    if inc_fresh[0].shape[0] == 0:
        inc_fresh = _runs(tab, snap, ready, inc_m, inc_k, port, inc_p, n_all, n_all, seed)
    cand = _runs(tab, snap, ready, cand_m, cand_k, port, cand_p, n_all, n_all, seed)
    if _clearly_better(cand[0], cand[1], cand[2], inc_fresh[0], inc_fresh[1], inc_fresh[2], z) >= need:
        return True, cand
    return False, inc_fresh


@njit(cache=True, nogil=True)
def _retry_action(tab, snap, ready, models, fallback, k):
    """What Seq-(models, k) launches from ``snap``: the Retry planner's rule (batches shrunk to fit the budget
    and token cap left, in order of the ready list), with the kernels' fallback
    (:func:`planners.kernels.policy_launch`)."""
    n = tab[11].shape[0]
    act_m = np.full(n, -1, np.int64)
    act_k = np.zeros(n, np.int64)
    tail, spare = tab[34], tab[35]  # see planners.kernels.table_arrays
    lim = launch_limits(tab)
    launched = snap[0].copy()  # complete or in flight: nothing to keep back for them
    for f in range(snap[1].shape[0]):
        launched[snap[1][f]] = True
    keep = n_left = 0
    for i in range(n):
        if not launched[i]:
            keep += spare[i]
            n_left += 1
    refund, refund_at = 0, 0.0  # what the batches in flight are expected to give back, and by when
    fl_sub, fl_model, fl_age, fl_open = snap[1], snap[2], snap[3], snap[4]
    for f in range(fl_sub.shape[0]):
        if fl_open[f] > 0:
            i, j = fl_sub[f], fl_model[f]
            refund += fl_open[f] * (lim[1][i, j] - lim[3][i, j])
            refund_at = max(refund_at, lim[2][i, j] - fl_age[f])
    left, tokens = snap[7], snap[8]
    for i in ready:
        keep -= spare[i]
        j = models[i, min(snap[13][i], models.shape[1] - 1)]
        j, kk, left, tokens = policy_launch(lim, fallback, i, j, k, 0.0, snap[9], left, tokens, keep, tail[i], n_left,
                                            refund, refund_at)  # fmt: skip
        n_left -= 1
        if kk >= 1:
            act_m[i], act_k[i] = j, kk
    return act_m, act_k


@njit(cache=True, nogil=True)
def _make_room(tab, snap, act_m, act_w, i, model, k):
    """The action with subtask i set to (model, k), or to "not now" if ``model`` < 0, and the other launches
    of ``act_m`` given, in subtask order, as much of the width they asked for (``act_w``) as the budget and
    token cap left pay for (Retry's rule); (model, k) itself shrinks too, but comes first. Returns whether one
    sample of it fits, the action (models, widths) and the widths asked for.

    Without the shrinking, a sweep that changes one subtask at a time could never move from, say, a wide
    cheap batch everywhere to one strong sample on the bottleneck plus a narrower cheap batch. Refilling from
    what was asked, not from what an earlier shrinking left, lets one change move money between launches: a
    narrower batch where the success rate is high gives a batch the budget had cut short its width back.
    """
    max_tokens, worst_cost = tab[10], tab[21]
    out_m = np.full(act_m.shape[0], -1, np.int64)
    out_k = np.zeros(act_m.shape[0], np.int64)
    out_w = np.zeros(act_m.shape[0], np.int64)
    money, tokens = snap[7], snap[8]
    if model >= 0:
        kk, money, tokens = fit_width(k, worst_cost[i, model], max_tokens[model], money, tokens)
        if kk < 1:
            return False, out_m, out_k, out_w
        out_m[i], out_k[i], out_w[i] = model, kk, k
    for o in range(act_m.shape[0]):
        if o == i or act_m[o] < 0:
            continue
        k2, money, tokens = fit_width(act_w[o], worst_cost[o, act_m[o]], max_tokens[act_m[o]], money, tokens)
        if k2 >= 1:
            out_m[o], out_k[o], out_w[o] = act_m[o], k2, act_w[o]
    return True, out_m, out_k, out_w


@njit(cache=True, nogil=True)
def _key(act_m, act_k):
    """A 64-bit fingerprint of an action (which candidates the sweep has scored already)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    for i in range(act_m.shape[0]):
        if act_m[i] >= 0:
            h ^= np.uint64(i * 1_000_003 + act_m[i] * 10_007 + act_k[i]) + np.uint64(0x9E3779B97F4A7C15)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
    return h


@njit(cache=True, nogil=True)
def _known(keys, n, key):
    """Whether ``key`` is among the first ``n`` of ``keys``."""
    for x in range(n):  # noqa: SIM110 (a generator in a kernel is one more thing numba compiles)
        if keys[x] == key:
            return True
    return False


@njit(cache=True, nogil=True)
def _grown(keys):
    """``keys`` in an array twice as long."""
    out = np.empty(2 * keys.shape[0], keys.dtype)
    for x in range(keys.shape[0]):
        out[x] = keys[x]
    return out


@njit(cache=True, nogil=True)
def _mean(a):
    """``a.mean()`` as numba computes it (a float64 sum in order, then a division), without compiling its
    generic implementation."""
    total = 0.0
    for x in range(a.shape[0]):
        total += a[x]
    return total / a.shape[0]


@njit(cache=True, nogil=True)
def decide(tab, snap, ready, port_models, fallback, port_k, n_all, top, z, seed, time_limit, hold):
    """MCP's action at ``snap`` for the ``ready`` subtasks (sorted): per-subtask (model or -1, width) arrays.

    Base actions first: every policy Seq-(m, k) of the portfolio scores its own first action under itself,
    racing: all run the first quarter of the ``n_all`` simulations; the leaders (at most a quarter of the
    portfolio, none two standard deviations behind the first) run them all. Then a greedy sweep of mixed
    actions around the best so far, one ready subtask changed at a time ("not now" or any portfolio
    launch), each screened on the first quarter of the simulations under the best continuation against the
    incumbent, scored in full under the ``top`` best continuations only if it beats it there, and taken
    only if its advantage over the incumbent exceeds ``z`` standard errors of their paired difference, both
    on those simulations and on as many fresh ones. Every candidate sees the same simulation streams
    (common random numbers). ``time_limit`` (a ``time.perf_counter`` value; 0 for none) stops the sweep.

    ``hold`` is the portfolio policy chosen at the run's previous decision (-1 at the first): its base
    action is the incumbent unless another base action beats it by the same double test. Returns the
    action and the policy to hold at the next decision.
    """
    # Held by the caller for the whole decision: passed down without reference counting.
    tab, snap, port_models, fallback = borrowed(tab), borrowed(snap), borrowed(port_models), borrowed(fallback)
    n = tab[11].shape[0]
    n_port = port_k.shape[0]
    port = (port_models, fallback, port_k)
    n_screen = max(1, n_all // 4)

    # Base actions, each scored under its own policy: Q_mu(s, mu(s)) = V^mu(s).
    base_m = np.full((n_port, n), -1, np.int64)
    base_k = np.zeros((n_port, n), np.int64)
    base_w = np.zeros((n_port, n), np.int64)  # the widths the policy asked for, before the budget shrank them
    scr_ok = np.zeros((n_port, n_screen), np.bool_)
    scr_sp = np.zeros((n_port, n_screen), np.int64)
    scr_mg = np.zeros((n_port, n_screen))
    n_ok = np.zeros(n_port, np.int64)
    n_mg = np.zeros(n_port)
    n_sp = np.zeros(n_port, np.int64)
    for p in range(n_port):  # loops, not row assignments (see :func:`_all_runs`)
        act = _retry_action(tab, snap, ready, port_models[p], fallback, port_k[p])
        for i in range(n):
            base_m[p, i], base_k[p, i] = act[0][i], act[1][i]
            base_w[p, i] = max(act[1][i], port_k[p])  # a paced policy's (k < 0): what pacing gave
        scr = _runs(tab, snap, ready, base_m[p], base_k[p], port, p, 0, n_screen, seed)
        for s in range(n_screen):
            scr_ok[p, s], scr_sp[p, s], scr_mg[p, s] = scr[0][s], scr[1][s], scr[2][s]
        n_ok[p], n_mg[p], n_sp[p] = scr_ok[p].sum(), scr_mg[p].sum(), scr_sp[p].sum()
    order = _ranked(n_ok, n_mg, n_sp)
    lead = float(n_ok[order[0]])
    behind = 2.0 * math.sqrt(lead * (n_screen - lead) / n_screen) + 1.0
    keep = max(2, n_port // 4)
    best_ok = np.zeros(n_all, np.bool_)  # the incumbent, simulation by simulation
    best_sp = np.zeros(n_all, np.int64)
    best_mg = np.zeros(n_all)
    best_m = np.full(n, -1, np.int64)
    best_k = np.zeros(n, np.int64)
    best_w = np.zeros(n, np.int64)
    pol_v = np.zeros(n_port)
    pol_g = np.zeros(n_port)
    pol_c = np.zeros(n_port)
    # The incumbent: the best base action, or, from the second decision on, the held policy's unless
    # another's beats it clearly, on these simulations and again on fresh ones (:func:`_confirm`).
    fresh = (np.zeros(0, np.bool_), np.zeros(0, np.int64), np.zeros(0))  # the incumbent's, once needed
    best_p = best_cont = -1
    for rank in range(-1, n_port):
        p = hold if rank < 0 else order[rank]
        if p < 0 or (rank >= 0 and p == hold):
            continue
        if p != hold and (rank >= keep or n_ok[p] < lead - behind):  # ranked after the finalists
            pol_v[p], pol_g[p], pol_c[p] = n_ok[p] / n_screen - 1.0, n_mg[p] / n_screen, n_sp[p] / n_screen
            continue
        screen = (scr_ok[p], scr_sp[p], scr_mg[p])
        ok, sp, mg = _all_runs(tab, snap, ready, base_m[p], base_k[p], port, p, screen, n_all, seed)
        pol_v[p], pol_g[p], pol_c[p] = ok.sum() / n_all, _mean(mg), _mean(sp)
        if best_p < 0:
            take = True
        elif hold < 0:
            take = _beats(pol_v[p], pol_g[p], pol_c[p], pol_v[best_p], pol_g[best_p], pol_c[best_p])
        else:
            take = _clearly_better(ok, sp, mg, best_ok, best_sp, best_mg, z) == 2
            if take:
                take, fresh = _confirm(tab, snap, ready, port, n_all, seed, z, 2, base_m[p], base_k[p], p, best_m,
                                       best_k, best_cont, fresh)  # fmt: skip
        if take:
            best_p = best_cont = p
            best_ok, best_sp, best_mg = ok, sp, mg
            best_m, best_k, best_w = base_m[p].copy(), base_k[p].copy(), base_w[p].copy()
    conts = _ranked(pol_v, pol_g, pol_c)  # the continuation policies, best first
    a = 0
    while conts[a] != best_p:
        a += 1
    for x in range(a, 0, -1):  # the incumbent's policy continues the mixed actions first
        conts[x] = conts[x - 1]
    conts[0] = best_p
    conts = conts[: min(max(1, top), n_port)]

    # Mixed actions: change one ready subtask at a time; keep a change when it is clearly better. ``seen``: the
    # actions scored so far, by :func:`_key` (a few hundred at most: a scan, not numba's hashed set, which is
    # seconds of a first compile).
    seen = np.empty(64, np.uint64)
    seen[0], n_seen = _key(best_m, best_k), 1
    improved = True
    timed_out = time_limit > 0 and _clock() >= time_limit
    while improved and not timed_out:
        improved = False
        for i in ready:
            for o in range(n_port + 1):
                if o == 0:  # "not now"
                    if best_m[i] < 0:
                        continue
                    m, k = -1, 0
                else:
                    m, k = port_models[o - 1, i, min(snap[13][i], port_models.shape[2] - 1)], port_k[o - 1]
                    if k < 0 or (best_m[i] == m and best_k[i] == k) or tab[11][i, m] < 0:  # paced: a base action
                        continue
                fits, cand_m, cand_k, cand_w = _make_room(tab, snap, best_m, best_w, i, m, k)
                if not fits:
                    continue
                key = _key(cand_m, cand_k)
                if _known(seen, n_seen, key):
                    continue
                if n_seen == seen.shape[0]:  # full: twice the room
                    seen = _grown(seen)
                seen[n_seen] = key
                n_seen += 1
                # Screened on the first simulations under the best continuation; then, if it beats the
                # incumbent there, scored on all of them under each of the top continuations.
                screen = _runs(tab, snap, ready, cand_m, cand_k, port, conts[0], 0, n_screen, seed)
                h = n_screen
                if not _beats(screen[0].sum(), screen[2].sum(), screen[1].sum(), best_ok[:h].sum(), best_mg[:h].sum(),
                              best_sp[:h].sum()):  # fmt: skip
                    continue
                c_ok, c_sp, c_mg = _all_runs(tab, snap, ready, cand_m, cand_k, port, conts[0], screen, n_all, seed)
                c_cont = conts[0]
                for x in range(1, conts.shape[0]):
                    screen = _runs(tab, snap, ready, cand_m, cand_k, port, conts[x], 0, n_screen, seed)
                    ok, sp, mg = _all_runs(tab, snap, ready, cand_m, cand_k, port, conts[x], screen, n_all, seed)
                    if _beats(ok.sum(), mg.sum(), sp.sum(), c_ok.sum(), c_mg.sum(), c_sp.sum()):
                        c_ok, c_sp, c_mg, c_cont = ok, sp, mg, conts[x]
                better = _clearly_better(c_ok, c_sp, c_mg, best_ok, best_sp, best_mg, z)
                if better > 0:
                    passed, fresh = _confirm(tab, snap, ready, port, n_all, seed, z, 1, cand_m, cand_k, c_cont,
                                             best_m, best_k, best_cont, fresh)  # fmt: skip
                    if not passed:
                        better = 0
                if better > 0:
                    best_ok, best_sp, best_mg, best_cont = c_ok, c_sp, c_mg, c_cont
                    best_m, best_k, best_w = cand_m, cand_k, cand_w
                    improved = improved or better == 2  # a won tie alone does not start another pass
                if time_limit > 0 and _clock() >= time_limit:
                    timed_out = True
                    break
            if timed_out:
                break
    return best_m, best_k, best_p


@njit(cache=True, nogil=True)
def ready_subtasks(tab, snap):
    """The ready subtasks at ``snap``: not complete, not in flight, every dependency complete."""
    dep_ptr, dep_idx, completed, horizon, batches = tab[0], tab[1], snap[0], tab[23], snap[13]
    busy = completed.copy()
    for f in range(snap[1].shape[0]):
        if not snap[5][f]:
            busy[snap[1][f]] = True
    for i in range(busy.shape[0]):
        if 0 <= horizon[i] <= batches[i]:  # a repair loop with no invocation left
            busy[i] = True
    out = np.empty(busy.shape[0], np.int64)
    r = 0
    for i in range(busy.shape[0]):
        if busy[i]:
            continue
        for q in range(dep_ptr[i], dep_ptr[i + 1]):
            if not completed[dep_idx[q]]:
                break
        else:
            out[r] = i
            r += 1
    return out[:r]
