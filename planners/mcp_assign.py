"""The ``assigned`` family of MCP's portfolio: a model per subtask, searched by simulation at the first decision.

A continuation that uses one model everywhere, or the model of best value on each subtask, cannot express
"the cheap model here, the mid-priced one there, the cheap one again where it is good enough": on a fresh
draw of the generated family (``benchmarks/mcp_quality.py --family --first-seed 24``) that was most of
MCP's gap to the exact optimum, up to 20 points in 4-subtask chains with three models (the best fixed
assignment came within 1 point of the optimum where MCP's portfolio was 20 behind). So, per width of the
portfolio, a coordinate descent from the value assignment: change one subtask's model at a time, keep a
change that succeeds in more simulated runs from the state the planner first decides in (fewer pico-dollars
on a tie), until a pass changes nothing or two passes are done. Every candidate runs the same simulations
(common random numbers), so a change is kept for what it changes, not for luck in fresh draws.

The search draws from one fixed stream, not the planner's seed: it is a function of the table, the state and
the portfolio's settings, so a closed-loop prediction and the run it predicts hold the same assignment, and
the runs of an evaluation, each with a planner of its own seed, all start from one search (remembered per
process).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np

from planners.mcp_kernel import simulate_policy

__all__ = ["assignments"]

PASSES = 2
SIMS_PER_PASS = 4096  # simulated runs a pass may spend over all its candidates (64-256 per candidate)
STREAM = 104_729  # the search's simulations (a decision's are seeded by planner seed * 1_000_003 + number)
_MEMO_SIZE = 64

_memo: dict[bytes, list[np.ndarray]] = {}
_memo_lock = threading.Lock()


def assignments(
    tab: tuple[np.ndarray, ...],
    snap: tuple[Any, ...],
    start: np.ndarray,
    fallback: np.ndarray,
    widths: list[int],
    allowed: list[int],
) -> list[np.ndarray]:
    """Per width in ``widths``, the model per subtask (an int64 column) that the descent from ``start`` (a model
    per subtask) finds for Seq-(assignment, width) from ``snap`` (the kernels' arrays of the state the planner
    decides in), with the portfolio's ``fallback``; ``allowed`` are the models it may use."""
    key = _key(tab, snap, start, fallback, widths, allowed)
    with _memo_lock:
        if key in _memo:
            return [a.copy() for a in _memo[key]]
    kind, completed = tab[11], snap[0]
    moves = [(i, j) for i in range(start.shape[0]) if not completed[i] for j in allowed if kind[i, j] >= 0]
    sims = max(64, min(256, SIMS_PER_PASS // max(1, len(moves))))

    def score(models: np.ndarray, k: int) -> tuple[int, int]:
        ok, spent = simulate_policy(tab, snap, models, fallback, k, sims, STREAM)
        return int(ok.sum()), -int(spent.sum())

    out = []
    for k in widths:
        best_models = start.astype(np.int64)  # a copy
        best = score(best_models, k)
        for _ in range(PASSES):
            moved = False
            for i, j in moves:
                if best_models[i] == j:
                    continue
                cand = best_models.copy()
                cand[i] = j
                s = score(cand, k)
                if s > best:
                    best, best_models, moved = s, cand, True
            if not moved:
                break
        out.append(best_models)
    with _memo_lock:
        if len(_memo) >= _MEMO_SIZE:
            _memo.pop(next(iter(_memo)))
        _memo[key] = [a.copy() for a in out]
    return out


def _key(*parts: Any) -> bytes:
    """A digest of arrays, tuples of them and plain values: what the search is a function of."""
    h = hashlib.blake2b(digest_size=20)

    def feed(x: Any) -> None:
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, (tuple, list)):
            h.update(b"(")
            for y in x:
                feed(y)
            h.update(b")")
        else:
            h.update(repr(x).encode())

    for part in parts:
        feed(part)
    return h.digest()
