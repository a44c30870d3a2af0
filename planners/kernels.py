"""Numba kernels that simulate the rest of a run, for the MCP planner (issue 3) and for predict.

``simulate`` plays ``n_sims`` executions forward from an executor snapshot: the first action, then a
Seq-(m, k) continuation policy (the MCP paper's portfolio policy, which is exactly ``retry:m:k``) until the
workflow completes, the deadline passes, or nothing can be launched. It follows the executor's execution
model step for step, so a simulated probability is what ``ontime eval`` would measure:

- a batch is k samples launched together; the first success completes the subtask; siblings are cancelled
  and charged for the tokens produced so far (or left to finish);
- a launch reserves k worst-case samples and is refused when the reservation does not fit (dollars or
  output tokens) or when even the fastest attempt could not end by the deadline;
- samples ending at the same instant are handled in (batch, sample) order and the policy decides after
  each one that changes what is possible;
- output is capped at max tokens, and a capped attempt fails.

Samples already in flight at the snapshot are drawn conditioned on not having ended yet. Kernels are pure
functions of arrays and a seed, compiled with ``nogil`` so threads really run them in parallel. Random
numbers come from SplitMix64 seeded per simulation (not numpy's global generator): each simulation can be
replayed on its own, and a draw costs a few nanoseconds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from runtime._snapshot import Launch, Snapshot

__all__ = ["SnapshotSim", "simulate", "simulate_snapshot"]

_KIND_LOGNORMAL, _KIND_FIXED, _KIND_POOL = 0, 1, 2


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True, inline="always")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def _seed_sim(rng, seed, sim):
    """Simulation ``sim`` of ``seed`` gets a stream of its own, so any range of simulations can be replayed."""
    rng[0] = _mix(_mix(np.uint64(seed) + _GOLDEN) ^ np.uint64(sim))


@njit(cache=True, nogil=True, inline="always")
def _uniform(rng):
    """A uniform in [0, 1) from SplitMix64 (``rng`` is its one-word state): cheap, and seeded per simulation."""
    rng[0] += _GOLDEN
    return float(_mix(rng[0]) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True, inline="always")
def _normal(rng):
    """A standard normal by Box-Muller."""
    u = 1.0 - _uniform(rng)  # in (0, 1]
    return math.sqrt(-2.0 * math.log(u)) * math.cos(2.0 * math.pi * _uniform(rng))


@njit(cache=True, nogil=True, inline="always")
def _draw(rng, i, j, kind, p_draw, ln_mu, ln_sigma, fixed_tokens, pool_start, pool_len, pool_success, pool_tokens,
          pool_latency, max_tokens, ttft, tps):  # fmt: skip
    cap = max_tokens[j]
    latency = math.nan
    k = kind[i, j]
    if k == _KIND_POOL:
        r = pool_start[i, j] + min(int(_uniform(rng) * pool_len[i, j]), pool_len[i, j] - 1)
        ok = pool_success[r] == 1
        tokens = pool_tokens[r]
        latency = pool_latency[r]
    elif k == _KIND_FIXED:
        ok = _uniform(rng) < p_draw[i, j]
        tokens = fixed_tokens[i, j]
    else:
        ok = _uniform(rng) < p_draw[i, j]
        tokens = max(1, int(round(math.exp(ln_mu[i, j] + ln_sigma[i, j] * _normal(rng)))))
    if tokens > cap:
        ok = False
        tokens = cap
    if math.isnan(latency):
        latency = ttft[j] + tokens / tps[j]
    return ok, tokens, latency


@njit(cache=True, nogil=True, inline="always")
def _tokens_at(elapsed, tokens, latency, ttft):
    if elapsed >= latency:
        return tokens
    start = min(ttft, latency)
    if elapsed <= start:
        return 0
    return min(tokens, int(math.floor(tokens * (elapsed - start) / (latency - start))))


@njit(cache=True, nogil=True, error_model="numpy")
def simulate(
    # the profile table
    dep_ptr, dep_idx, child_ptr, child_idx, cheapest, input_tokens, in_price, out_price, tps, ttft, max_tokens,
    kind, p_draw, ln_mu, ln_sigma, fixed_tokens, pool_start, pool_len, pool_success, pool_tokens, pool_latency,
    worst_cost, min_latency,
    # the snapshot
    completed, fl_sub, fl_model, fl_k, fl_elapsed, fl_open, fl_done, budget_left, tokens_left, time_left,
    cancel_siblings,
    # what to simulate
    act_sub, act_model, act_k, cont_model, cont_k, cont_rollouts, launched0, first_sim, n_sims, seed,
):  # fmt: skip
    """Simulate ``n_sims`` runs; return (success, spent pusd, end time) per run, relative to the snapshot.

    The first decision is the action ``(act_sub, act_model, act_k)`` (a ready subtask it leaves out, or gives
    ``k = 0``, waits: "not now"); an empty action means the continuation policy decides from the start, which
    simulates the policy's own value. ``tokens_left < 0`` means no output-token cap; ``cont_k = 0`` means no
    continuation. A non-empty ``cont_rollouts`` makes the continuation Uniform instead (each subtask launches
    its remaining rollouts, ``launched0`` counting those launched before the snapshot, at most
    ``cont_k`` at a time). Simulation number ``first_sim + s`` draws from a stream fixed by ``seed`` and
    that number alone, so candidates compare on common random numbers and a planner can score a candidate
    on the first simulations, then extend to more without replaying those.
    """
    n = kind.shape[0]
    rng = np.zeros(1, np.uint64)
    success = np.zeros(n_sims, np.bool_)
    spent_out = np.zeros(n_sims, np.int64)
    end_out = np.zeros(n_sims, np.float64)
    # What every simulation starts from: subtask states and unmet dependencies at the snapshot.
    state0 = np.zeros(n, np.int64)  # 0 blocked, 1 ready, 2 in flight, 3 complete
    deps_left0 = np.zeros(n, np.int64)
    for i in range(n):
        if completed[i]:
            state0[i] = 3
    for i in range(n):
        if state0[i] != 3:
            for q in range(dep_ptr[i], dep_ptr[i + 1]):
                if state0[dep_idx[q]] != 3:
                    deps_left0[i] += 1
            if deps_left0[i] == 0:
                state0[i] = 1
    n_done0 = 0
    for i in range(n):
        if state0[i] == 3:
            n_done0 += 1

    # Samples and batches live in arrays reused across simulations (grown when a run needs more). A batch's
    # samples are contiguous from ``b_first``; ``order`` lists them by end time (ties by sample index) and
    # ``b_next`` is the next one to end, so the next event is the earliest head among the open batches
    # (``open_b``): a scan over batches, not samples.
    s_end = np.empty(64, np.float64)
    s_start = np.empty(64, np.float64)
    s_ok = np.empty(64, np.bool_)
    s_tokens = np.empty(64, np.int64)
    order = np.empty(64, np.int64)
    b_sub = np.empty(16, np.int64)
    b_model = np.empty(16, np.int64)
    b_first = np.empty(16, np.int64)
    b_k = np.empty(16, np.int64)
    b_next = np.empty(16, np.int64)
    b_done = np.empty(16, np.bool_)
    open_b = np.empty(16, np.int64)
    for s in range(n_sims):
        _seed_sim(rng, seed, first_sim + s)
        state = state0.copy()
        deps_left = deps_left0.copy()
        n_done = n_done0
        launched = launched0.copy()
        n_samples = 0
        n_batches = 0
        n_open = 0
        avail = budget_left
        tok_avail = tokens_left
        spent = 0
        now = 0.0
        # batches already in flight: their samples are drawn conditioned on still running
        for f in range(fl_sub.shape[0]):
            k = fl_open[f]
            if n_samples + k > s_end.shape[0]:
                s_end, s_start, s_ok, s_tokens, order = _grow_samples(
                    2 * (n_samples + k), n_samples, s_end, s_start, s_ok, s_tokens, order)  # fmt: skip
            if n_batches == b_sub.shape[0]:
                b_sub, b_model, b_first, b_k, b_next, b_done, open_b = _grow_batches(
                    2 * n_batches, n_batches, n_open, b_sub, b_model, b_first, b_k, b_next, b_done, open_b)  # fmt: skip
            i, j = fl_sub[f], fl_model[f]
            b = n_batches
            n_batches += 1
            b_sub[b], b_model[b], b_first[b], b_k[b], b_next[b], b_done[b] = i, j, n_samples, k, 0, fl_done[f]
            if not fl_done[f]:
                state[i] = 2
            for x in range(k):
                ok, tokens, latency = False, 0, 0.0
                for _ in range(64):
                    ok, tokens, latency = _draw(rng, i, j, kind, p_draw, ln_mu, ln_sigma, fixed_tokens, pool_start,
                                                pool_len, pool_success, pool_tokens, pool_latency, max_tokens,
                                                ttft, tps)  # fmt: skip
                    if latency > fl_elapsed[f]:
                        break
                if latency <= fl_elapsed[f]:  # no draw lasts this long: it ends now, having failed
                    ok, latency = False, fl_elapsed[f]
                q = n_samples + x
                s_start[q] = -fl_elapsed[f]
                s_end[q] = latency - fl_elapsed[f]
                s_ok[q], s_tokens[q] = ok, tokens
            _sort_batch(s_end, order, n_samples, k)
            n_samples += k
            if k > 0:
                open_b[n_open] = b
                n_open += 1
        # the first action, then the continuation policy after every change
        use_action = act_sub.shape[0] > 0
        changed = True
        result = False
        while True:
            if n_done == n:
                result = True
                break
            if changed:
                changed = False
                # The policy's own view of what is left: like the Retry planner, it counts every batch it
                # asks for, even one the executor then refuses for lack of time.
                p_left, p_tok = avail, tok_avail
                for i in range(n):
                    if state[i] != 1:
                        continue
                    if use_action:
                        j, k = -1, 0
                        for a in range(act_sub.shape[0]):
                            if act_sub[a] == i:
                                j, k = act_model[a], act_k[a]
                    else:
                        if cont_k == 0:
                            continue
                        j = cont_model if kind[i, cont_model] >= 0 else cheapest[i]
                        w = worst_cost[i, j]
                        k = cont_k
                        if cont_rollouts.shape[0] > 0:
                            k = min(k, cont_rollouts[i] - launched[i])
                        if w > 0:
                            k = min(k, p_left // w)
                        if p_tok >= 0:
                            k = min(k, p_tok // max_tokens[j])
                        if k >= 1:
                            p_left -= k * w
                            if p_tok >= 0:
                                p_tok -= k * max_tokens[j]
                    if k < 1 or j < 0:
                        continue
                    if now + min_latency[i, j] > time_left:
                        continue
                    if k * worst_cost[i, j] > avail or (tok_avail >= 0 and k * max_tokens[j] > tok_avail):
                        continue
                    avail -= k * worst_cost[i, j]
                    if tok_avail >= 0:
                        tok_avail -= k * max_tokens[j]
                    if n_samples + k > s_end.shape[0]:
                        s_end, s_start, s_ok, s_tokens, order = _grow_samples(
                            2 * (n_samples + k), n_samples, s_end, s_start, s_ok, s_tokens, order)  # fmt: skip
                    if n_batches == b_sub.shape[0]:
                        b_sub, b_model, b_first, b_k, b_next, b_done, open_b = _grow_batches(
                            2 * n_batches, n_batches, n_open, b_sub, b_model, b_first, b_k, b_next, b_done,
                            open_b)  # fmt: skip
                    b = n_batches
                    n_batches += 1
                    b_sub[b], b_model[b], b_first[b], b_k[b], b_next[b], b_done[b] = i, j, n_samples, k, 0, False
                    state[i] = 2
                    launched[i] += k
                    for x in range(k):
                        ok, tokens, latency = _draw(rng, i, j, kind, p_draw, ln_mu, ln_sigma, fixed_tokens, pool_start,
                                                    pool_len, pool_success, pool_tokens, pool_latency, max_tokens,
                                                    ttft, tps)  # fmt: skip
                        q = n_samples + x
                        s_start[q], s_end[q] = now, now + latency
                        s_ok[q], s_tokens[q] = ok, tokens
                    _sort_batch(s_end, order, n_samples, k)
                    n_samples += k
                    open_b[n_open] = b
                    n_open += 1
                use_action = False
            if n_open == 0:
                break
            # the next sample to end: earliest time, then batch, then sample index
            bi = -1
            best_end = math.inf
            for a in range(n_open):
                b = open_b[a]
                e = s_end[order[b_first[b] + b_next[b]]]
                if bi < 0 or e < best_end or (e == best_end and b < open_b[bi]):
                    bi, best_end = a, e
            if best_end > time_left:
                now = time_left
                # deadline: everything in flight is cancelled and charged what it produced
                for a in range(n_open):
                    b = open_b[a]
                    j = b_model[b]
                    for r in range(b_first[b] + b_next[b], b_first[b] + b_k[b]):
                        q = order[r]
                        toks = _tokens_at(now - s_start[q], s_tokens[q], s_end[q] - s_start[q], ttft[j])
                        spent += input_tokens[b_sub[b]] * in_price[j] + toks * out_price[j]
                break
            b = open_b[bi]
            q = order[b_first[b] + b_next[b]]
            b_next[b] += 1
            now = s_end[q]
            i, j = b_sub[b], b_model[b]
            cost = input_tokens[i] * in_price[j] + s_tokens[q] * out_price[j]
            spent += cost
            avail += worst_cost[i, j] - cost
            if tok_avail >= 0:
                tok_avail += max_tokens[j] - s_tokens[q]
            if s_ok[q] and state[i] != 3:
                state[i] = 3
                b_done[b] = True
                n_done += 1
                changed = True
                for c in range(child_ptr[i], child_ptr[i + 1]):
                    ch = child_idx[c]
                    deps_left[ch] -= 1
                    if deps_left[ch] == 0:
                        state[ch] = 1
                if cancel_siblings:
                    for r in range(b_first[b] + b_next[b], b_first[b] + b_k[b]):
                        q2 = order[r]
                        toks = _tokens_at(now - s_start[q2], s_tokens[q2], s_end[q2] - s_start[q2], ttft[j])
                        c2 = input_tokens[i] * in_price[j] + toks * out_price[j]
                        spent += c2
                        avail += worst_cost[i, j] - c2
                        if tok_avail >= 0:
                            tok_avail += max_tokens[j] - toks
                    b_next[b] = b_k[b]
            if b_next[b] == b_k[b]:
                n_open -= 1
                open_b[bi] = open_b[n_open]
                changed = True
                if not b_done[b]:
                    state[i] = 1
        success[s] = result
        spent_out[s] = spent
        end_out[s] = now
    return success, spent_out, end_out


@njit(cache=True, nogil=True)
def _sort_batch(s_end, order, first, k):  # fmt: skip
    """Fill ``order[first:first + k]`` with the batch's samples by end time; ties keep sample order.

    Insertion sort in place: batches are at most a few dozen samples, and it allocates nothing.
    """
    for r in range(k):
        q = first + r
        x = r
        while x > 0 and s_end[order[first + x - 1]] > s_end[q]:
            order[first + x] = order[first + x - 1]
            x -= 1
        order[first + x] = q


@njit(cache=True, nogil=True)
def _grow_samples(cap, n, s_end, s_start, s_ok, s_tokens, order):  # fmt: skip
    e, st, ok = np.empty(cap, np.float64), np.empty(cap, np.float64), np.empty(cap, np.bool_)
    t, o = np.empty(cap, np.int64), np.empty(cap, np.int64)
    e[:n], st[:n], ok[:n], t[:n], o[:n] = s_end[:n], s_start[:n], s_ok[:n], s_tokens[:n], order[:n]
    return e, st, ok, t, o


@njit(cache=True, nogil=True)
def _grow_batches(cap, n, n_open, b_sub, b_model, b_first, b_k, b_next, b_done, open_b):  # fmt: skip
    a, m, f, k = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64)
    x, d, o = np.empty(cap, np.int64), np.empty(cap, np.bool_), np.empty(cap, np.int64)
    a[:n], m[:n], f[:n], k[:n], x[:n], d[:n] = b_sub[:n], b_model[:n], b_first[:n], b_k[:n], b_next[:n], b_done[:n]
    o[:n_open] = open_b[:n_open]
    return a, m, f, k, x, d, o


class SnapshotSim:
    """A snapshot packed into the kernel's arrays once, then simulated under many actions and policies.

    A planner scores dozens of (action, continuation) pairs per decision; packing the snapshot once keeps
    the Python side of each call to the action's three small arrays.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        t = snapshot.table
        completed = np.zeros(t.n_subtasks, np.bool_)
        completed[list(snapshot.completed)] = True
        fl = snapshot.in_flight
        self._head = (
            t.dep_ptr, t.dep_idx, t.child_ptr, t.child_idx, t.cheapest, t.input_tokens, t.in_price, t.out_price,
            t.tokens_per_s, t.ttft_s, t.max_tokens,
            t.kind, t.p_draw, t.ln_mu, t.ln_sigma, t.fixed_tokens, t.pool_start, t.pool_len, t.pool_success,
            t.pool_tokens, t.pool_latency, t.worst_cost, t.min_latency,
            completed,
            np.array([b.subtask for b in fl], np.int64),
            np.array([b.model for b in fl], np.int64),
            np.array([b.k for b in fl], np.int64),
            np.array([snapshot.now - b.started_at for b in fl], np.float64),
            np.array([b.open_samples for b in fl], np.int64),
            np.array([b.done for b in fl], np.bool_),
            snapshot.budget_left_pusd,
            -1 if snapshot.output_tokens_left is None else snapshot.output_tokens_left,
            snapshot.time_left,
            snapshot.cancel_siblings,
        )  # fmt: skip
        self._launched = np.array(snapshot.samples_launched, np.int64)
        self._no_rollouts = np.zeros(0, np.int64)

    def __call__(
        self,
        action: Mapping[int, Launch],
        cont_model: int,
        cont_k: int,
        n_sims: int,
        seed: int,
        rollouts: Sequence[int] = (),
        first_sim: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First ``action``, then Seq-(cont_model, cont_k), or Uniform on ``cont_model`` when ``rollouts``
        (per-subtask rollout counts) is given; returns per-run success, pico-dollars spent after the snapshot
        and time of the end, relative to the snapshot, for simulations ``first_sim`` to
        ``first_sim + n_sims - 1``. An empty ``action`` lets the policy decide first too.
        """
        subs = sorted(action)
        return simulate(  # type: ignore[no-any-return]
            *self._head,
            np.array(subs, np.int64),
            np.array([action[i].model for i in subs], np.int64),
            np.array([action[i].k for i in subs], np.int64),
            cont_model,
            cont_k,
            np.array(rollouts, np.int64) if rollouts else self._no_rollouts,
            self._launched,
            first_sim,
            n_sims,
            seed,
        )


def simulate_snapshot(
    snapshot: Snapshot,
    action: Mapping[int, Launch],
    cont_model: int,
    cont_k: int,
    n_sims: int,
    seed: int,
    rollouts: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-off :class:`SnapshotSim` call: simulate ``action`` then the continuation from ``snapshot``."""
    return SnapshotSim(snapshot)(action, cont_model, cont_k, n_sims, seed, rollouts)
