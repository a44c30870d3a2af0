"""Numba kernels that simulate the rest of a run, for the MCP planner and for predict.

:func:`simulate` plays ``n_sims`` executions forward from an executor snapshot: a first action, then a
continuation policy Seq-(models, k) (the MCP paper's portfolio policy: ``retry:m:k`` when every subtask
gets model m) until the workflow completes, the deadline passes, or nothing can be launched. :func:`step`
plays one real run from one decision to the next. Both follow the executor's execution model step for
step, so a simulated probability is what ``ontime eval`` would measure:

- a batch is k samples launched together; the first success completes the subtask; siblings are cancelled
  and charged for the tokens produced so far (or left to finish);
- a launch reserves k worst-case samples and is refused when the reservation does not fit (dollars or
  output tokens) or when even the fastest attempt could not end by the deadline;
- samples ending at the same instant are handled in the order their batches were launched, and the policy
  decides after each one that changes what is possible, or, in synchronized rounds (the snapshot's
  ``rounds``), only once no batch is open any more;
- output is capped at max tokens, and a capped attempt fails;
- where a subtask's attempts depend on its history (runtime.types.LatentClasses, CascadeTable), a batch's
  success rate follows the subtask's failed batches so far, and each simulated run draws the subtask's hidden
  class once, from the belief the snapshot's failures give (a planner never sees the class: :func:`hidden`);
  a loop that has used its horizon ends the run, failed, as the executor's does; a loop's tool stage adds its
  latency to every attempt that ends by itself, and its cost to what that attempt is charged.

Samples already in flight at the snapshot are drawn conditioned on not having ended yet. Kernels are pure
functions of arrays and a seed, compiled with ``nogil`` so threads really run them in parallel. Random
numbers come from SplitMix64 (not numpy's global generator), one stream per (simulation, subtask, attempt):
any range of simulations can be replayed, candidates compare on draws that stay in step, and a draw costs
a few nanoseconds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from planners._borrowed import borrowed
from planners._compile import njit

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from runtime.types import Launch, ProfileTable, Snapshot

__all__ = ["SnapshotSim", "has_history", "hidden", "ladder_models", "launch_limits", "policy_launch",
           "seq_models", "simulate", "simulate_snapshot", "snapshot_arrays", "step", "table_arrays"]  # fmt: skip

_KIND_LOGNORMAL, _KIND_FIXED, _KIND_POOL = 0, 1, 2
NO_ROLLOUTS = np.zeros(0, np.int64)
NO_FALLBACK = np.zeros((0, 0), np.int64)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# Acklam's rational approximation of the standard normal quantile (relative error below 1.2e-9).
_QA = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
       -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_QB = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
       -1.328068155288572e01)  # fmt: skip
_QC = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
       4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
_QD = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_Q_TAIL = 0.02425


@njit(cache=True, nogil=True, forceinline=True)
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, forceinline=True)
def _stream(seed, sim):
    """The generator state of simulation ``sim`` of ``seed``: each simulation can be replayed on its own."""
    return _mix(_mix(np.uint64(seed) + _GOLDEN) ^ np.uint64(sim))


@njit(cache=True, nogil=True, forceinline=True)
def _batch_stream(sim_state, i, attempt):
    """The stream of the ``attempt``-th batch of subtask i in a simulation. Keyed by subtask and attempt, not
    by the order of events, so candidate actions scored on the same simulation see the same draws for the
    same batches (common random numbers that stay in step), and a draw u decides success as u < p, so a
    stronger model succeeds on every draw a weaker one does."""
    return _mix(sim_state ^ np.uint64(i * 0x100000001B3 + attempt * 0x9E3779B1 + 1))


@njit(cache=True, nogil=True, forceinline=True)
def _uniform(state):
    """SplitMix64: the next state and a uniform in [0, 1). Scalars only, so a call costs a few nanoseconds."""
    state = state + _GOLDEN
    return state, float(_mix(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True, forceinline=True)
def _upper_quantile(w):
    """The standard normal z with P(Z > z) = w, for w in (0, 1]."""
    if _Q_TAIL <= w <= 1.0 - _Q_TAIL:
        q = 0.5 - w
        r = q * q
        num = (((((_QA[0] * r + _QA[1]) * r + _QA[2]) * r + _QA[3]) * r + _QA[4]) * r + _QA[5]) * q
        return num / (((((_QB[0] * r + _QB[1]) * r + _QB[2]) * r + _QB[3]) * r + _QB[4]) * r + 1.0)
    q = math.sqrt(-2.0 * math.log(min(w, 1.0 - w)))  # the tails are symmetric: z(w) = -z(1 - w)
    num = ((((_QC[0] * q + _QC[1]) * q + _QC[2]) * q + _QC[3]) * q + _QC[4]) * q + _QC[5]
    z = num / ((((_QD[0] * q + _QD[1]) * q + _QD[2]) * q + _QD[3]) * q + 1.0)
    return -z if w < _Q_TAIL else z


@njit(cache=True, nogil=True, forceinline=True)
def _next_upper(state, w, m):
    """The next of ``m`` order statistics above the last one, as an upper tail mass ``w`` (1 - u).

    The smallest of m uniforms on (u, 1) is 1 - w V^(1/m) with V uniform: drawing a batch's samples one at a
    time, in the order they end, takes one uniform each and stops when the batch's outcome is known.
    """
    state, v = _uniform(state)
    v = 1.0 - v  # in (0, 1]
    return state, w * (v if m == 1 else math.exp(math.log(v) / m))


@njit(cache=True, nogil=True, forceinline=True)
def _tokens_at(elapsed, tokens, latency, ttft):
    if elapsed >= latency:
        return tokens
    start = min(ttft, latency)
    if elapsed <= start:
        return 0
    return min(tokens, int(math.floor(tokens * (elapsed - start) / (latency - start))))


@njit(cache=True, nogil=True, forceinline=True)
def _streamed(elapsed, ttft, tps, cap):
    """Output tokens an unfinished attempt of computed latency has produced ``elapsed`` seconds in."""
    if elapsed <= ttft:
        return 0
    return min(cap, int(math.floor((elapsed - ttft) * tps + 1e-9)))


@njit(cache=True, nogil=True, forceinline=True)
def fit_width(k, worst, cap, money, tokens):
    """The widest batch up to ``k`` whose worst case (``worst`` pusd and ``cap`` output tokens a sample) fits
    ``money`` and ``tokens`` (-1: no cap), and what is left of both after it (Retry's shrinking rule)."""
    if worst > 0:
        k = min(k, money // worst)
    if tokens >= 0:
        k = min(k, tokens // cap)
    if k >= 1:
        money -= k * worst
        if tokens >= 0:
            tokens -= k * cap
    return k, money, tokens


PACED_MAX = 64  # the widest batch a paced policy launches (the widest of the default K)


@njit(cache=True, nogil=True, forceinline=True)
def launch_limits(tab):
    """What :func:`policy_launch` reads of ``tab``: max tokens, worst cost, least latency and mean cost."""
    return tab[10], tab[21], tab[22], tab[33]


@njit(cache=True, nogil=True, readonly=("fallback",))
def policy_launch(lim, fallback, i, j, k, elapsed, time_left, money, tokens, keep, tail, n_left, refund, refund_at):
    """What a portfolio policy launches on ready subtask i, wanting k samples of model j at ``elapsed``
    seconds into its run: (model, width, money and tokens left after it), width 0 for nothing. ``lim`` is
    :func:`launch_limits` of the table (only the arrays it reads: numba counts a reference to every array a
    kernel is passed, two calls per array even on :func:`planners._borrowed.borrowed` views, and the whole
    table is three dozen).

    ``k < 0`` paces the width instead: the money left split evenly over the ``n_left`` subtasks not launched
    yet (i among them), spread over as many batches in a row as the time left allows (after ``tail``), so
    that a policy neither starves the later subtasks nor leaves money unspent; at most ``PACED_MAX``.

    Retry's rule (the batch shrinks to what ``money`` and ``tokens`` can cover). With ``fallback`` (per
    subtask, models in order of preference; empty for plain Retry), the policy does not launch what would
    likely leave the rest of the workflow impossible: it takes the first of j and that order that ends by
    the deadline with ``tail`` seconds to spare (the longest chain after i, on the fastest models) and whose
    expected cost leaves ``keep`` pico-dollars (an attempt on the cheapest model at every subtask not launched
    yet; expected costs, as the ledger gives back what a batch does not use). Where none does, the first
    that can end by the deadline and that the money left pays for. Without this, a policy that spent on a
    strong model early was stuck once it could not pay for one more, and counted the run lost where a
    cheaper model could still finish it; likewise with a model too slow for the chain after it.

    Before it falls back for want of money, though, the policy waits (width 0) where the batches in flight
    are expected to give back ``refund`` pico-dollars by ``refund_at`` seconds (the ledger reserves a
    sample's worst case and returns what it did not cost) and that would pay for j in time for the rest:
    the cheap model it would take now is often far weaker, and the budget was only held, not spent.
    """
    max_tokens, worst_cost, min_latency, mean_cost = lim
    if k < 0:
        rounds = max(1.0, math.floor((time_left - elapsed - tail) / max(min_latency[i, j], 1e-3)))
        k = PACED_MAX if mean_cost[i, j] <= 0 else int(money / max(1, n_left) / (mean_cost[i, j] * rounds))
        k = min(PACED_MAX, max(1, k))
    if fallback.shape[0] > 0:
        for r in range(-1, fallback.shape[1]):
            jj = j if r < 0 else fallback[i, r]
            if jj < 0 or elapsed + min_latency[i, jj] + tail > time_left:
                continue
            kk = k if mean_cost[i, jj] <= 0 else min(k, (money - keep) // mean_cost[i, jj])
            kk, left, tok = fit_width(kk, worst_cost[i, jj], max_tokens[jj], money, tokens)
            if kk >= 1:
                return jj, kk, left, tok
            if r < 0 and refund > 0 and refund_at + min_latency[i, j] + tail <= time_left:
                later = k if mean_cost[i, j] <= 0 else min(k, (money + refund - keep) // mean_cost[i, j])
                if fit_width(later, worst_cost[i, j], max_tokens[j], money + refund, tokens)[0] >= 1:
                    return j, 0, money, tokens
        if elapsed + min_latency[i, j] > time_left:
            for r in range(fallback.shape[1]):  # too late for it: the next that can make it
                jj = fallback[i, r]
                if jj >= 0 and elapsed + min_latency[i, jj] <= time_left:
                    j = jj
                    break
    kk, left, tok = fit_width(k, worst_cost[i, j], max_tokens[j], money, tokens)
    if kk < 1 and fallback.shape[0] > 0:
        for r in range(fallback.shape[1]):  # cannot pay for one: the next that can, and can make it
            jj = fallback[i, r]
            if jj < 0 or elapsed + min_latency[i, jj] > time_left:
                continue
            kk, left, tok = fit_width(k, worst_cost[i, jj], max_tokens[jj], money, tokens)
            if kk >= 1:
                return jj, kk, left, tok
    if kk < 1:
        return j, 0, money, tokens
    return j, kk, left, tok


@njit(cache=True, nogil=True)
def has_history(tab):
    """Whether any subtask of ``tab`` has history-dependent success or a horizon (else the kernels skip it all)."""
    horizon, cls_ptr, cas_root = tab[23], tab[24], tab[28]
    return cls_ptr[-1] > 0 or (cas_root >= 0).any() or (horizon >= 0).any()


@njit(cache=True, nogil=True)
def hidden(snap):
    """``snap`` as a planner may see it: the hidden classes a simulated run has drawn are unknown again."""
    return (*snap[:17], np.full(snap[17].shape[0], -1, np.int64))


@njit(cache=True, nogil=True, forceinline=True)
def _class_stream(sim_state, i):
    """The stream that draws subtask i's hidden class in a simulation: apart from every batch's stream."""
    return _mix(sim_state ^ np.uint64(i * 0x2545F4914F6CDD1D + 0x632BE59BD9B4E019))


@njit(cache=True, nogil=True)
def _draw_class(state, w, lo, hi):
    """A class of rows ``lo:hi`` drawn with weights ``w[lo:hi]`` (which sum to 1)."""
    _, u = _uniform(state)
    acc = 0.0
    for c in range(lo, hi):
        acc += w[c]
        if u < acc:
            return c - lo
    return hi - lo - 1


@njit(cache=True, nogil=True)
def _failed(tab, i, j, k, rep, node, post, update_post):
    """Subtask i's batch of k samples on model j failed: move its history on (and the belief over its class)."""
    cls_ptr, cls_p, own, cas_root, cas_child = tab[24], tab[26], tab[27], tab[28], tab[29]
    lo, hi = cls_ptr[i], cls_ptr[i + 1]
    if hi > lo:
        if update_post:
            r = rep[i, j]
            total = 0.0
            for c in range(lo, hi):
                post[c] *= (1.0 - cls_p[c, j, r]) ** k
                total += post[c]
            if total > 0.0:
                for c in range(lo, hi):
                    post[c] /= total
        if own[i]:
            rep[i, j] = 1
        else:
            rep[i, :] = 1
    elif cas_root[i] >= 0:
        node[i] = cas_child[node[i], j]


@njit(cache=True, nogil=True, error_model="numpy", readonly=("cont_fallback", "cont_rollouts"))
def _play(tab, snap, act_sub, act_model, act_k, cont_models, cont_fallback, cont_k, cont_rollouts, first_sim, n_sims,
          seed, stop_at_change):  # fmt: skip
    """Simulate ``n_sims`` runs from ``snap``; see :func:`simulate` and :func:`step`.

    Returns per-run success, pico-dollars spent, end time (relative to the snapshot) and subtasks complete
    at the end, and, when ``stop_at_change``, the state of the last run where it stopped (as a snapshot
    tuple; else ``snap``) with a status: 0 stopped at an event that changes what is possible, 1 succeeded,
    2 failed.

    A batch's samples are drawn lazily, in the order they end (order statistics of the length
    distribution; pool rows are stored by latency): only the head of each open batch exists, the next one
    is drawn when it ends, and when the batch stops early (a success cancels its siblings, or the deadline
    passes) the samples never drawn are charged what they streamed: the same for all of them when latency
    follows from length, drawn one by one for pools that recorded latency.
    """
    tab, cont_fallback = borrowed(tab), borrowed(cont_fallback)  # the caller holds them: no atomic counting
    (dep_ptr, dep_idx, child_ptr, child_idx, _, input_tokens, in_price, out_price, tps, ttft, max_tokens, kind,
     p_ok, ln_mu, ln_sigma, fixed_tokens, pool_start, pool_len, pool_success, pool_tokens, pool_latency,
     worst_cost, min_latency, horizon, cls_ptr, _, cls_p, _, cas_root, _, cas_q, tool_lat, tool_pusd, _, tail,
     spare) = tab  # fmt: skip
    (completed, fl_sub, fl_model, fl_elapsed, fl_open, fl_done, launched0, budget_left, tokens_left, time_left,
     cancel_siblings, rounds, fl_k, batches0, post0, rep0, node0, cls0) = snap  # fmt: skip
    n = kind.shape[0]
    success = np.zeros(n_sims, np.bool_)
    spent_out = np.zeros(n_sims, np.int64)
    end_out = np.zeros(n_sims, np.float64)
    done_out = np.zeros(n_sims, np.int64)
    # What every simulation starts from: subtask states and unmet dependencies at the snapshot.
    state0 = np.zeros(n, np.int64)  # 0 blocked, 1 ready, 2 in flight, 3 complete
    deps_left0 = np.zeros(n, np.int64)
    for i in range(n):
        if completed[i]:
            state0[i] = 3
            continue
        for q in range(dep_ptr[i], dep_ptr[i + 1]):
            if not completed[dep_idx[q]]:
                deps_left0[i] += 1
        if deps_left0[i] == 0:
            state0[i] = 1
    n_done0 = completed.sum()
    # Batches in flight at the snapshot: their open samples are drawn conditioned on not having ended before
    # the age they have reached, i.e. from the upper tail mass fl_w of the latency distribution from that
    # age on (a sample ending exactly now has not been handled yet). A batch no draw could still be running
    # in ends at once, failed (fl_w = 0).
    n_fl = fl_sub.shape[0]
    fl_w = np.ones(n_fl, np.float64)
    for f in range(n_fl):
        i, j = fl_sub[f], fl_model[f]
        e = fl_elapsed[f] - 1e-9 - tool_lat[i]  # the model's part of the attempt must last until then
        kd = kind[i, j]
        if kd == _KIND_POOL:
            first, length = pool_start[i, j], pool_len[i, j]
            c = 0
            while c < length:
                r = first + c
                lat = pool_latency[r]
                if math.isnan(lat):
                    lat = ttft[j] + min(pool_tokens[r], max_tokens[j]) / tps[j]
                if lat >= e:
                    break
                c += 1
            fl_w[f] = 1.0 - c / length
        elif kd == _KIND_FIXED:
            fl_w[f] = 1.0 if ttft[j] + min(fixed_tokens[i, j], max_tokens[j]) / tps[j] >= e else 0.0
        else:
            x = math.ceil((e - ttft[j]) * tps[j])  # an attempt lasts until e iff it has at least x tokens
            if x > max_tokens[j]:
                fl_w[f] = 0.0
            elif x > 1 and ln_sigma[i, j] > 0:
                z = (math.log(x - 0.5) - ln_mu[i, j]) / ln_sigma[i, j]
                fl_w[f] = 0.5 * math.erfc(z / math.sqrt(2.0))
            elif x > 1:
                fl_w[f] = 1.0 if round(math.exp(ln_mu[i, j])) >= x else 0.0

    # A subtask has at most one open batch (a batch that completed it may run on when siblings are kept,
    # but the subtask is never launched again), so open batches live in slots indexed by subtask, allocated
    # once: arrays reassigned inside the loop would cost reference counting on every event. ``open_b``
    # lists the open slots; each holds its head, the next of its samples to end (``h_*``), drawn when
    # ``b_pending``; ``b_seq`` is the launch order, which breaks ties between batches as the executor does.
    b_model = np.empty(n, np.int64)
    b_seq = np.empty(n, np.int64)
    b_start = np.empty(n, np.float64)
    b_left = np.empty(n, np.int64)  # samples not drawn yet
    b_k = np.empty(n, np.int64)  # samples launched
    b_w = np.empty(n, np.float64)  # upper tail mass of the last sample drawn
    b_done = np.empty(n, np.bool_)
    b_dead = np.empty(n, np.bool_)
    b_pending = np.empty(n, np.bool_)
    h_end = np.empty(n, np.float64)
    h_ok = np.empty(n, np.bool_)
    h_tokens = np.empty(n, np.int64)
    b_rng = np.empty(n, np.uint64)
    attempts = np.empty(n, np.int64)
    open_b = np.empty(n, np.int64)
    history = has_history(tab)
    lim = launch_limits(tab)
    cancel_arr = _cancel_arrays(tab)
    cls = cls0.copy()
    last, status = snap, 2
    for s in range(n_sims):
        rng = _stream(seed, first_sim + s)
        attempts[:] = 0
        batches = batches0.copy()
        if history:  # each run's hidden classes, drawn from what the snapshot's failures say of them
            rep, node, post = rep0.copy(), node0.copy(), post0.copy()
            for i in range(n):
                if cls0[i] < 0 and cls_ptr[i + 1] > cls_ptr[i]:
                    cls[i] = _draw_class(_class_stream(rng, i), post0, cls_ptr[i], cls_ptr[i + 1])
        else:
            rep, node, post = rep0, node0, post0
        state = state0.copy()
        deps_left = deps_left0.copy()
        n_done = n_done0
        launched = launched0.copy()
        n_batches = 0
        n_open = 0
        avail = budget_left
        tok_avail = tokens_left
        spent = 0
        now = 0.0
        for f in range(n_fl):
            i = fl_sub[f]
            if not fl_done[f]:
                state[i] = 2
            if fl_open[f] <= 0:
                continue
            b_model[i], b_seq[i], b_start[i], b_left[i] = fl_model[f], n_batches, -fl_elapsed[f], fl_open[f]
            b_k[i] = fl_k[f]
            n_batches += 1
            b_rng[i] = _batch_stream(rng, i, attempts[i])
            attempts[i] += 1
            b_w[i], b_done[i], b_dead[i], b_pending[i] = fl_w[f], fl_done[f], fl_w[f] <= 0.0, True
            open_b[n_open] = i
            n_open += 1
        use_action = act_sub.shape[0] > 0
        changed = True
        decided = False
        stopped = False
        while n_done < n:
            # The snapshot is a decision point; after it, a change in synchronized rounds waits (``changed``
            # stays set) until the last open batch has ended, as the executor's does.
            if changed and not (decided and rounds and n_open > 0):
                if stop_at_change and decided:
                    stopped = True
                    break
                decided = True
                changed = False
                # The policy's own view of what is left: like the Retry planner, it counts every batch it
                # asks for, even one the executor then refuses for lack of time.
                p_left, p_tok = avail, tok_avail
                keep = n_left = 0  # an attempt on the cheapest model at every subtask not launched yet
                refund, refund_at = 0, 0.0  # what the open batches are expected to give back, and by when
                if cont_fallback.shape[0] > 0:  # only portfolio policies keep back, and wait for refunds
                    for i in range(n):
                        if state[i] <= 1:
                            keep += spare[i]
                            n_left += 1
                    for a in range(n_open):
                        b = open_b[a]
                        j = b_model[b]
                        refund += (b_left[b] + (0 if b_pending[b] else 1)) * (worst_cost[b, j] - lim[3][b, j])
                        refund_at = max(refund_at, b_start[b] + min_latency[b, j])
                for i in range(n):
                    if state[i] != 1:
                        continue
                    keep -= spare[i]
                    if use_action:
                        j, k = -1, 0
                        for a in range(act_sub.shape[0]):
                            if act_sub[a] == i:
                                j, k = act_model[a], act_k[a]
                    elif cont_k == 0:
                        continue
                    else:
                        j = cont_models[i, min(batches[i], cont_models.shape[1] - 1)]
                        k = cont_k
                        if cont_rollouts.shape[0] > 0:
                            k = max(0, min(k, cont_rollouts[i] - launched[i]))  # (a negative k would pace)
                        j, k, p_left, p_tok = policy_launch(lim, cont_fallback, i, j, k, now, time_left, p_left, p_tok,
                                                            keep, tail[i], n_left, refund, refund_at)  # fmt: skip
                        n_left -= 1
                    if k < 1 or j < 0 or now + min_latency[i, j] > time_left:
                        continue
                    if history and 0 <= horizon[i] <= batches[i]:
                        continue
                    if k * worst_cost[i, j] > avail or (tok_avail >= 0 and k * max_tokens[j] > tok_avail):
                        continue
                    avail -= k * worst_cost[i, j]
                    if tok_avail >= 0:
                        tok_avail -= k * max_tokens[j]
                    b_model[i], b_seq[i], b_start[i], b_left[i] = j, n_batches, now, k
                    b_k[i] = k
                    n_batches += 1
                    b_rng[i] = _batch_stream(rng, i, attempts[i])
                    attempts[i] += 1
                    b_w[i], b_done[i], b_dead[i], b_pending[i] = 1.0, False, False, True
                    state[i] = 2
                    launched[i] += k
                    batches[i] += 1
                    open_b[n_open] = i
                    n_open += 1
                use_action = False
            if n_open == 0:
                break
            # Draw the heads that are due, and find the next sample to end: earliest time, then batch.
            bi = -1
            best_end = math.inf
            for a in range(n_open):
                b = open_b[a]
                if b_pending[b]:
                    b_pending[b] = False
                    i, j = b, b_model[b]
                    cap = max_tokens[j]
                    st, w = _next_upper(b_rng[b], b_w[b], b_left[b])
                    b_w[b] = w
                    b_left[b] -= 1
                    latency = math.nan
                    kd = kind[i, j]
                    drawn = False  # success is drawn as u < rate (below), where the pool row does not decide it
                    if b_dead[b]:
                        ok, tokens, latency = False, cap, -b_start[b]
                        if kd == _KIND_POOL:
                            tokens = min(cap, pool_tokens[pool_start[i, j] + pool_len[i, j] - 1])
                    elif kd == _KIND_POOL:
                        length = pool_len[i, j]
                        r = pool_start[i, j] + min(int((1.0 - w) * length), length - 1)
                        ok = pool_success[r] == 1
                        tokens = pool_tokens[r]
                        latency = pool_latency[r]
                        drawn = history and (cls_ptr[i + 1] > cls_ptr[i] or cas_root[i] >= 0)
                    else:
                        drawn = True
                        if kd == _KIND_FIXED:
                            tokens = fixed_tokens[i, j]
                        else:
                            z = _upper_quantile(w)
                            tokens = max(1, int(round(math.exp(ln_mu[i, j] + ln_sigma[i, j] * z))))
                    if drawn:  # P(success) in the run's class at the subtask's history (in the loop: no arrays
                        # passed to a helper, whose every array argument costs two reference-count calls)
                        st, u = _uniform(st)
                        lo = cls_ptr[i]
                        if cls_ptr[i + 1] > lo:
                            ok = u < cls_p[lo + cls[i], j, rep[i, j]]
                        elif cas_root[i] >= 0:
                            ok = u < cas_q[node[i], j]
                        else:
                            ok = u < p_ok[i, j]
                    if tokens > cap:  # a capped attempt fails
                        ok, tokens = False, cap
                    if math.isnan(latency):
                        latency = ttft[j] + tokens / tps[j]
                    if not b_dead[b]:
                        latency += tool_lat[i]  # the subtask's tool stage runs on the output
                    h_end[b] = max(b_start[b] + latency, 0.0)
                    h_ok[b] = ok
                    h_tokens[b] = tokens
                    b_rng[b] = st
                e = h_end[b]
                if bi < 0 or e < best_end or (e == best_end and b_seq[b] < b_seq[open_b[bi]]):
                    bi, best_end = a, e
            if best_end > time_left:
                now = time_left  # the deadline: what is in flight is cancelled (below)
                break
            b = open_b[bi]
            now = best_end
            i, j = b, b_model[b]
            tokens = h_tokens[b]
            cost = input_tokens[i] * in_price[j] + tokens * out_price[j] + tool_pusd[i]
            spent += cost
            avail += worst_cost[i, j] - cost
            if tok_avail >= 0:
                tok_avail += max_tokens[j] - tokens
            if h_ok[b] and state[i] != 3:
                state[i] = 3
                b_done[b] = True
                n_done += 1
                changed = True
                for c in range(child_ptr[i], child_ptr[i + 1]):
                    ch = child_idx[c]
                    deps_left[ch] -= 1
                    if deps_left[ch] == 0:
                        state[ch] = 1
                if cancel_siblings and b_left[b] > 0:
                    m = b_left[b]
                    b_rng[b], c, tk = _cancel(cancel_arr, b_rng[b], b_w[b], m, now - b_start[b], i, j)
                    spent += c
                    avail += m * worst_cost[i, j] - c
                    if tok_avail >= 0:
                        tok_avail += m * max_tokens[j] - tk
                    b_left[b] = 0
            if b_left[b] == 0:
                n_open -= 1
                open_b[bi] = open_b[n_open]
                changed = True
                if not b_done[b]:
                    state[i] = 1
                    if history:
                        _failed(tab, i, j, b_k[b], rep, node, post, stop_at_change)
                        if 0 <= horizon[i] <= batches[i]:
                            break  # the loop is exhausted: the run has failed, and stops here as the executor's does
            else:
                b_pending[b] = True
        # Whatever is still in flight (at the deadline; or siblings kept running once the last subtask is
        # done) is cancelled now and charged what it produced: its drawn head, and the samples not drawn.
        for a in range(0 if stopped else n_open):
            b = open_b[a]
            i, j = b, b_model[b]
            el = now - b_start[b]
            if not b_pending[b]:
                spent += input_tokens[i] * in_price[j]
                spent += _tokens_at(el, h_tokens[b], h_end[b] - b_start[b] - tool_lat[i], ttft[j]) * out_price[j]
            spent += _cancel(cancel_arr, b_rng[b], b_w[b], b_left[b], el, i, j)[1]
        success[s] = n_done == n
        spent_out[s] = spent
        end_out[s] = now
        done_out[s] = n_done
        if stop_at_change:
            status = 0 if stopped else (1 if n_done == n else 2)
            fl, fl_m, fl_age, fl_n, fl_d, fl_kk = _in_flight(open_b, n_open, b_seq, b_model, b_start, b_left, b_pending,
                                                             b_done, b_k, now)  # fmt: skip
            complete = np.zeros(n, np.bool_)
            for i in range(n):
                complete[i] = state[i] == 3
            last = (complete, fl, fl_m, fl_age, fl_n, fl_d, launched, avail, tok_avail, time_left - now,
                    cancel_siblings, rounds, fl_kk, batches.copy(), post.copy(), rep.copy(), node.copy(),
                    cls.copy())  # fmt: skip
    return success, spent_out, end_out, done_out, last, status


@njit(cache=True, nogil=True)
def _in_flight(open_b, n_open, b_seq, b_model, b_start, b_left, b_pending, b_done, b_k, now):
    """The open batches of :func:`_play`'s slots as a snapshot has them (subtask, model, age, open samples, done,
    width), in launch order, which orders their ties at the next step too. Loops, not numpy's sorting and fancy
    indexing: each of those is seconds of a first compile."""
    fl = np.empty(n_open, np.int64)
    for a in range(n_open):  # insertion sort by launch order (a handful of batches; the orders are distinct)
        b = open_b[a]
        x = a
        while x > 0 and b_seq[fl[x - 1]] > b_seq[b]:
            fl[x] = fl[x - 1]
            x -= 1
        fl[x] = b
    model, age, opens = np.empty(n_open, np.int64), np.empty(n_open), np.empty(n_open, np.int64)
    done, width = np.empty(n_open, np.bool_), np.empty(n_open, np.int64)
    for a in range(n_open):
        b = fl[a]
        model[a], age[a], done[a], width[a] = b_model[b], now - b_start[b], b_done[b], b_k[b]
        opens[a] = b_left[b] + (0 if b_pending[b] else 1)  # a drawn head is still open
    return fl, model, age, opens, done, width


@njit(cache=True, nogil=True, readonly=("cont_fallback", "cont_rollouts"), inline="always")
def simulate(tab, snap, act_sub, act_model, act_k, cont_models, cont_fallback, cont_k, cont_rollouts, first_sim,
             n_sims, seed):  # fmt: skip
    """Simulate ``n_sims`` runs from a snapshot; return (success, spent pusd, end time, subtasks complete) per
    run, spending and time relative to it.

    ``tab`` is :func:`table_arrays` of the profile table, ``snap`` :func:`snapshot_arrays` of the snapshot.
    The first decision is the action ``(act_sub, act_model, act_k)`` (a ready subtask it leaves out, or gives
    ``k = 0``, waits: "not now"); after that the continuation policy decides at every change (in synchronized
    rounds, only once no batch is open): each ready subtask i gets ``cont_k`` samples of model
    ``cont_models[i]``, shrunk to what the budget and token cap left can cover (the Retry rule; Seq-(m, k)
    when every entry is m, or the fallback where m cannot run i). With a non-empty ``cont_fallback`` (per
    subtask, models in order of preference), a subtask whose model can no longer end by the deadline gets the
    first in that order that can, where Retry would be stuck. An empty action lets the policy decide from the
    start, which simulates the policy's own value; ``cont_k = 0`` means no continuation. A non-empty
    ``cont_rollouts`` makes the continuation Uniform instead (each subtask launches its remaining rollouts,
    those launched before the snapshot counted, at most ``cont_k`` at a time). Simulation number
    ``first_sim + s`` draws from streams fixed by ``seed`` and that number alone, so candidates compare on
    common random numbers and a planner can score a candidate on the first simulations, then extend to more
    without replaying those.
    """
    return _play(tab, snap, act_sub, act_model, act_k, cont_models, cont_fallback, cont_k, cont_rollouts, first_sim,
                 n_sims, seed, False)[:4]  # fmt: skip


@njit(cache=True, nogil=True)
def step(tab, snap, act_sub, act_model, act_k, seed, stream):
    """Launch ``act_*`` from ``snap`` and play on to the next event that changes what is possible (a subtask
    completes, a batch ends; in synchronized rounds, the first such event that leaves no batch open): what a
    real run does between two decisions. Returns the snapshot there, the pico-dollars spent and seconds
    elapsed since ``snap``, and a status (0 a decision is due, 1 the run succeeded, 2 it failed). Samples in
    flight are drawn anew at every step, conditioned on their age, which is exact: a sample's future depends
    only on how long it has run.
    """
    no_policy = np.zeros((tab[11].shape[0], 1), np.int64)
    _, spent, end, _, nxt, status = _play(tab, snap, act_sub, act_model, act_k, no_policy, NO_FALLBACK, 0,
                                          NO_ROLLOUTS, stream, 1, seed, True)  # fmt: skip
    return nxt, spent[0], end[0], status


@njit(cache=True, nogil=True, forceinline=True)
def _cancel(arr, rng, w, m, elapsed, i, j):
    """The generator state, pico-dollars and output tokens of the ``m`` samples not drawn yet of a batch of
    model j on subtask i (all ending after its last drawn one, of upper tail mass ``w``), cancelled
    ``elapsed`` into the batch: see :func:`_play` for how each kind is charged. ``arr`` is
    :func:`_cancel_arrays` of the table."""
    (input_tokens, in_price, out_price, tps, ttft, max_tokens, kind, ln_mu, ln_sigma, fixed_tokens, pool_start,
     pool_len, pool_tokens, pool_latency, tool_lat) = arr  # fmt: skip
    cap = max_tokens[j]
    kd = kind[i, j]
    if kd != _KIND_POOL and tool_lat[i] <= 0.0:  # all still generating: each has streamed the same so far
        tokens = m * _streamed(elapsed, ttft[j], tps[j], cap)
        return rng, m * input_tokens[i] * in_price[j] + tokens * out_price[j], tokens
    if kd != _KIND_POOL:  # a tool stage: some may be past generating, with all their tokens produced
        streamed = _streamed(elapsed, ttft[j], tps[j], cap)
        total = 0
        for x in range(m):
            rng, w = _next_upper(rng, w, m - x)
            length = fixed_tokens[i, j] if kd == _KIND_FIXED else int(round(math.exp(ln_mu[i, j] + ln_sigma[i, j] *
                                                                                      _upper_quantile(w))))  # fmt: skip
            total += min(max(1, length), cap, streamed)
        return rng, m * input_tokens[i] * in_price[j] + total * out_price[j], total
    cost, total = 0, 0
    length = pool_len[i, j]
    for x in range(m):
        rng, w = _next_upper(rng, w, m - x)
        r = pool_start[i, j] + min(int((1.0 - w) * length), length - 1)
        tokens = min(pool_tokens[r], cap)
        latency = pool_latency[r]
        if math.isnan(latency):
            latency = ttft[j] + tokens / tps[j]
        toks = _tokens_at(elapsed, tokens, latency, ttft[j])
        cost += input_tokens[i] * in_price[j] + toks * out_price[j]
        total += toks
    return rng, cost, total


@njit(cache=True, nogil=True, forceinline=True)
def _cancel_arrays(tab):
    """What :func:`_cancel` reads of ``tab`` (see :func:`policy_launch` for why not all of it)."""
    return (tab[5], tab[6], tab[7], tab[8], tab[9], tab[10], tab[11], tab[13], tab[14], tab[15], tab[16], tab[17],
            tab[19], tab[20], tab[31])  # fmt: skip


WORST_COST = 21  # the index of ``worst_cost`` in :func:`table_arrays`'s tuple


def table_arrays(table: ProfileTable) -> tuple[np.ndarray, ...]:
    """The profile table as the kernels take it: a tuple of its arrays."""
    t = table
    return (
        t.dep_ptr, t.dep_idx, t.child_ptr, t.child_idx, t.cheapest, t.input_tokens, t.in_price, t.out_price,
        t.tokens_per_s, t.ttft_s, t.max_tokens, t.kind, t.p_draw, t.ln_mu, t.ln_sigma, t.fixed_tokens, t.pool_start,
        t.pool_len, t.pool_success, t.pool_tokens, t.pool_latency, t.worst_cost, t.min_latency, t.horizon, t.cls_ptr,
        t.cls_w, np.ascontiguousarray(t.cls_p), t.own_repairs, t.cas_root, t.cas_child, t.cas_q, t.tool_latency,
        t.tool_pusd, t.mean_cost, *_rest_needs(t),
    )  # fmt: skip


def _rest_needs(t: ProfileTable) -> tuple[np.ndarray, np.ndarray]:
    """Per subtask: the seconds the longest chain of subtasks after it needs on their fastest models, and the
    expected cost of one attempt on its cheapest model: what :func:`policy_launch` keeps back for the rest."""
    fastest = t.min_latency.min(axis=1)  # unusable models have an infinite minimum
    tail = np.zeros(t.n_subtasks)
    for i in reversed(range(t.n_subtasks)):  # subtasks are in topological order
        for c in t.child_idx[t.child_ptr[i] : t.child_ptr[i + 1]]:
            tail[i] = max(tail[i], fastest[c] + tail[c])
    return tail, t.mean_cost[np.arange(t.n_subtasks), t.cheapest].astype(np.int64)


def snapshot_arrays(snapshot: Snapshot, table: ProfileTable | None = None) -> tuple[Any, ...]:
    """A snapshot as the kernels take it: completed flags, the batches in flight (subtask, model, age, open
    samples, done), samples launched per subtask, budget left (pusd), output tokens left (-1: no cap),
    time left, the sibling rule, the rounds rule, the in-flight batches' sizes, and the history state (batches
    per subtask, the belief over each subtask's class, the kind of each model's next invocation, the cascade
    node, the classes if known: -1 here, where a planner cannot know them). New fields go at the end, so indexes
    stay valid. The history state follows ``table`` (default the snapshot's): a planner's beliefs come from the
    profiles it plans with, which may be estimates of the ones the run draws from."""
    t = snapshot.table if table is None else table
    completed = np.zeros(t.n_subtasks, np.bool_)
    completed[list(snapshot.completed)] = True
    fl = snapshot.in_flight
    batches = np.zeros(t.n_subtasks, np.int64)
    post = t.cls_w.copy()
    rep = np.zeros((t.n_subtasks, t.n_models), np.int64)
    node = np.where(t.cas_root >= 0, t.cas_root, 0).astype(np.int64)
    tab = table_arrays(t) if snapshot.failed else ()
    for f in snapshot.failed:  # in the order they failed: the history (endpoint errors only: no invocation)
        if not f.answered:
            continue
        batches[f.subtask] += 1
        _failed(tab, f.subtask, f.model, f.k, rep, node, post, True)
    for b in fl:
        batches[b.subtask] += 1
    return (
        completed,
        np.array([b.subtask for b in fl], np.int64),
        np.array([b.model for b in fl], np.int64),
        np.array([snapshot.now - b.started_at for b in fl], np.float64),
        np.array([b.open_samples for b in fl], np.int64),
        np.array([b.done for b in fl], np.bool_),
        np.array(snapshot.samples_launched, np.int64),
        int(snapshot.budget_left_pusd),
        -1 if snapshot.output_tokens_left is None else int(snapshot.output_tokens_left),
        float(snapshot.time_left),
        bool(snapshot.cancel_siblings),
        bool(snapshot.rounds),
        np.array([b.k for b in fl], np.int64),
        batches,
        post,
        rep,
        node,
        np.full(t.n_subtasks, -1, np.int64),
    )


def seq_models(table: ProfileTable, model: int) -> np.ndarray:
    """The per-subtask models of the Seq-(model, k) family: ``model``, or the cheapest where it cannot run (a
    column: a continuation's ``[i, a]`` is its model for subtask i's batch number a, the last for later ones)."""
    return np.where(table.kind[:, model] >= 0, model, table.cheapest).astype(np.int64)[:, None]


def ladder_models(table: ProfileTable, ladder: Sequence[int]) -> np.ndarray:
    """The escalation policy that tries ``ladder[0]`` first, ``ladder[1]`` after one failure, and so on (the last
    for every later batch); per subtask, a model that cannot run it is replaced by the cheapest that can."""
    return np.concatenate([seq_models(table, j) for j in ladder], axis=1)


class SnapshotSim:
    """A snapshot packed into the kernel's arrays once, then simulated under many actions and policies."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._table = snapshot.table
        self._tab = table_arrays(snapshot.table)
        self._snap = snapshot_arrays(snapshot)

    def __call__(
        self,
        action: Mapping[int, Launch],
        cont_model: int | np.ndarray,
        cont_k: int,
        n_sims: int,
        seed: int,
        rollouts: Sequence[int] = (),
        first_sim: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First ``action``, then Seq-(cont_model, cont_k) (``cont_model`` a model, or a model per subtask),
        or Uniform on those models when ``rollouts`` (per-subtask rollout counts) is given; returns per-run
        success, pico-dollars spent after the snapshot and time of the end, relative to the snapshot, for
        simulations ``first_sim`` to ``first_sim + n_sims - 1``. An empty ``action`` lets the policy decide
        first too.
        """
        if isinstance(cont_model, int):
            models = seq_models(self._table, cont_model)
        else:  # a model per subtask, or a row of them per subtask
            models = np.asarray(cont_model, np.int64).reshape(self._table.n_subtasks, -1)
        subs = sorted(action)
        ok, spent, end, _ = simulate(
            self._tab,
            self._snap,
            np.array(subs, np.int64),
            np.array([action[i].model for i in subs], np.int64),
            np.array([action[i].k for i in subs], np.int64),
            np.ascontiguousarray(models, np.int64),
            NO_FALLBACK,
            cont_k,
            np.array(rollouts, np.int64) if rollouts else NO_ROLLOUTS,
            first_sim,
            n_sims,
            seed,
        )
        return ok, spent, end


def simulate_snapshot(
    snapshot: Snapshot,
    action: Mapping[int, Launch],
    cont_model: int | np.ndarray,
    cont_k: int,
    n_sims: int,
    seed: int,
    rollouts: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-off :class:`SnapshotSim` call: simulate ``action`` then the continuation from ``snapshot``."""
    return SnapshotSim(snapshot)(action, cont_model, cont_k, n_sims, seed, rollouts)
