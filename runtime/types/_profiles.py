"""The profile table: every (subtask, model) profile as flat numpy arrays.

Planners and their numba kernels read them without Python objects in their loops; the simulated adapter draws
from the same arrays, so what a planner simulates is what runs. ``i`` is a subtask (topological order), ``j`` a model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from runtime.types._errors import SpecError
from runtime.types._history import CascadeTable, LatentClasses
from runtime.types._money import price_per_token_pusd, to_pusd
from runtime.types._workflow import FixedTokens, ParametricProfile, Workflow

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["KIND_FIXED", "KIND_LOGNORMAL", "KIND_POOL", "ProfileTable"]

KIND_NONE, KIND_LOGNORMAL, KIND_FIXED, KIND_POOL = -1, 0, 1, 2

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class ProfileTable:
    """Profiles and prices as arrays (``[i, j]`` = subtask i, model j); build with :meth:`from_workflow`.

    Output tokens are capped at the model's ``max_output_tokens``; an attempt that would have produced more
    is truncated and counts as a failure (a cut-off answer cannot pass a verifier).
    """

    subtask_ids: tuple[str, ...]
    model_names: tuple[str, ...]
    dep_ptr: I64  # CSR: deps of subtask i are dep_idx[dep_ptr[i]:dep_ptr[i+1]]
    dep_idx: I64
    child_ptr: I64  # CSR: subtasks that depend on i are child_idx[child_ptr[i]:child_ptr[i+1]]
    child_idx: I64
    input_tokens: I64  # [i]
    in_price: I64  # [j] pico-dollars per input token
    out_price: I64  # [j] pico-dollars per output token
    tokens_per_s: F64  # [j]
    ttft_s: F64  # [j]
    max_tokens: I64  # [j]
    kind: I8  # [i, j] KIND_* (KIND_NONE: the model cannot run the subtask)
    p: F64  # [i, j] probability that one attempt succeeds, truncation at max_tokens included
    p_draw: F64  # [i, j] the spec's p, drawn before truncation is applied (parametric profiles)
    ln_mu: F64  # [i, j] lognormal parameters of output tokens
    ln_sigma: F64
    fixed_tokens: I64  # [i, j]
    pool_start: I64  # [i, j] rows pool_start .. pool_start + pool_len of the pool arrays, by latency
    pool_len: I64
    pool_success: I8
    pool_tokens: I64
    pool_latency: F64  # NaN where the pool did not record latency
    worst_cost: I64  # [i, j] pico-dollars one attempt may cost at most (max_tokens of output)
    mean_cost: I64  # [i, j] expected pico-dollars of one attempt
    mean_latency: F64  # [i, j] expected seconds of one attempt
    min_latency: F64  # [i, j] the shortest an attempt can take
    cheapest: I64  # [i] the usable model with the lowest expected cost: the baselines' fallback
    # History (see runtime.types._history). Where a subtask has one, ``p`` and ``p_draw`` are first-attempt rates.
    horizon: I64  # [i] the most batches a repair loop gets (-1: no bound)
    cls_ptr: (
        I64  # CSR: subtask i's latent classes are rows cls_ptr[i]:cls_ptr[i+1] of cls_w and cls_p (none: no classes)
    )
    cls_w: F64  # [c] prior weight of each class
    cls_p: F64  # [c, j, r] success rate of model j in class c on a fresh invocation (r = 0) or a repair (r = 1)
    own_repairs: B  # [i] a repair is a model's invocation on a subtask it failed (else: any after a failure)
    cas_root: I64  # [i] the cascade automaton's start node (-1: no cascade table)
    cas_child: I64  # [node, j] the node after model j fails at ``node`` (the last failures the table conditions on)
    cas_q: F64  # [node, j] P(model j succeeds at ``node``)
    tool_latency: F64  # [i] seconds a loop's tool stage adds to every attempt that ends by itself (in the latencies)
    tool_pusd: I64  # [i] pico-dollars it adds to such an attempt's charge (in worst_cost and mean_cost)

    @property
    def has_history(self) -> bool:
        """Whether any subtask's attempts depend on its earlier failures or are bounded by a horizon."""
        return bool(
            (self.cls_ptr[1:] > self.cls_ptr[:-1]).any() or (self.cas_root >= 0).any() or (self.horizon >= 0).any()
        )

    @property
    def n_subtasks(self) -> int:
        return len(self.subtask_ids)

    @property
    def n_models(self) -> int:
        return len(self.model_names)

    @property
    def usable(self) -> B:
        """``[i, j]``: may model j run subtask i."""
        return self.kind >= 0

    def has_classes(self, i: int) -> bool:
        return bool(self.cls_ptr[i + 1] > self.cls_ptr[i])

    def draw_class(self, i: int, u: float) -> int:
        """Subtask i's latent class for a uniform draw ``u`` in [0, 1) (0 for a subtask without classes)."""
        w = self.cls_w[self.cls_ptr[i] : self.cls_ptr[i + 1]]
        return min(int(np.searchsorted(np.cumsum(w), u * w.sum(), side="right")), max(len(w) - 1, 0))

    def success_rate(self, i: int, j: int, failed: Sequence[int], cls: int = 0) -> float:
        """P(a sample of model j on subtask i succeeds, before truncation) once batches on the models ``failed``
        (in order) have failed it, in latent class ``cls`` (ignored by a subtask without classes)."""
        lo, hi = int(self.cls_ptr[i]), int(self.cls_ptr[i + 1])
        if hi > lo:
            repair = j in failed if self.own_repairs[i] else len(failed) > 0
            return float(self.cls_p[lo + cls, j, int(repair)])
        v = int(self.cas_root[i])
        if v < 0:
            return float(self.p_draw[i, j])
        for f in failed:
            v = int(self.cas_child[v, f])
        return float(self.cas_q[v, j])

    def deps(self, i: int) -> I64:
        return self.dep_idx[self.dep_ptr[i] : self.dep_ptr[i + 1]]

    def children(self, i: int) -> I64:
        return self.child_idx[self.child_ptr[i] : self.child_ptr[i + 1]]

    def model_index(self, name: str) -> int:
        return self.model_names.index(name)

    def latency_of(self, j: int, tokens: int) -> float:
        """Latency of an attempt of ``tokens`` output tokens on model j when none was recorded."""
        return float(self.ttft_s[j] + tokens / self.tokens_per_s[j])

    def without(self, unusable: B) -> ProfileTable:
        """This table with the ``[i, j]`` pairs where ``unusable`` is True taken out (a planner's view once a
        model's endpoint is out of reach, or refuses a subtask): they can no longer run, nor be the fallback."""
        kind = np.where(unusable, np.int8(KIND_NONE), self.kind).astype(np.int8)
        usable = kind >= 0
        return dataclasses.replace(
            self,
            kind=kind,
            p=np.where(usable, self.p, 0.0),
            worst_cost=np.where(usable, self.worst_cost, 0),
            mean_cost=np.where(usable, self.mean_cost, 0),
            mean_latency=np.where(usable, self.mean_latency, np.inf),
            min_latency=np.where(usable, self.min_latency, np.inf),
            cheapest=np.argmin(np.where(usable, self.mean_cost, np.iinfo(np.int64).max), axis=1).astype(np.int64),
        )

    def cost_of(self, i: int, j: int, output_tokens: int) -> int:
        """Pico-dollars charged for one attempt of subtask i on model j."""
        return int(self.input_tokens[i] * self.in_price[j] + output_tokens * self.out_price[j])

    @classmethod
    def from_workflow(cls, wf: Workflow) -> ProfileTable:
        ids = tuple(s.id for s in wf.subtasks)
        names = tuple(wf.models)
        pos = {sid: i for i, sid in enumerate(ids)}
        n, m = len(ids), len(names)
        models = [wf.models[name] for name in names]

        dep_ptr = np.zeros(n + 1, np.int64)
        deps: list[int] = []
        kids: list[list[int]] = [[] for _ in range(n)]
        for i, s in enumerate(wf.subtasks):
            mine = sorted({pos[d] for d in s.deps})
            deps.extend(mine)
            dep_ptr[i + 1] = len(deps)
            for d in mine:
                kids[d].append(i)
        child_ptr = np.cumsum([0] + [len(k) for k in kids]).astype(np.int64)

        kind = np.full((n, m), KIND_NONE, np.int8)
        p, ln_mu, ln_sigma, mean_tokens, mean_latency = (np.zeros((n, m)) for _ in range(5))
        fixed, pool_start, pool_len = (np.zeros((n, m), np.int64) for _ in range(3))
        min_latency = np.full((n, m), np.inf)
        trunc = np.zeros((n, m))  # probability that an attempt is truncated at max_tokens
        ps: list[int] = []
        pt: list[int] = []
        pl: list[float] = []
        for i, s in enumerate(wf.subtasks):
            for j, model in enumerate(models):
                prof = s.profiles.get(model.name)
                if prof is None:
                    continue
                cap = model.max_output_tokens
                if isinstance(prof, ParametricProfile):
                    p[i, j] = prof.p
                    dist = prof.output_tokens
                    if isinstance(dist, FixedTokens):
                        kind[i, j] = KIND_FIXED
                        fixed[i, j] = dist.tokens
                        mean_tokens[i, j] = min(dist.tokens, cap)
                        trunc[i, j] = float(dist.tokens > cap)
                        min_latency[i, j] = model.ttft_s + min(dist.tokens, cap) / model.tokens_per_s
                    else:
                        kind[i, j] = KIND_LOGNORMAL
                        mu, sigma = dist.mu_sigma
                        ln_mu[i, j], ln_sigma[i, j] = mu, sigma
                        mean_tokens[i, j] = _lognormal_capped_mean(mu, sigma, cap)
                        trunc[i, j] = (
                            1.0 - _normal_cdf((math.log(cap + 0.5) - mu) / sigma)
                            if sigma > 0
                            else float(round(math.exp(mu)) > cap)
                        )
                        min_latency[i, j] = model.ttft_s + 1 / model.tokens_per_s
                    mean_latency[i, j] = model.ttft_s + mean_tokens[i, j] / model.tokens_per_s
                else:
                    kind[i, j] = KIND_POOL
                    pool_start[i, j] = len(ps)
                    pool_len[i, j] = len(prof.samples)
                    # Rows are stored by the latency an attempt really has: a uniform row is still a uniform
                    # draw, and the kernels draw a batch's samples in the order they end from it.
                    lat = [
                        model.ttft_s + min(tokens, cap) / model.tokens_per_s if latency is None else latency
                        for _, tokens, latency in prof.samples
                    ]
                    by_latency = sorted(range(len(lat)), key=lat.__getitem__)
                    rows = [prof.samples[r] for r in by_latency]
                    lat = [lat[r] for r in by_latency]
                    ps.extend(int(ok) for ok, _, _ in rows)
                    pt.extend(tokens for _, tokens, _ in rows)
                    pl.extend(math.nan if latency is None else latency for _, _, latency in rows)
                    # truncated rows count as failures
                    p[i, j] = sum(ok and tokens <= cap for ok, tokens, _ in rows) / len(rows)
                    mean_tokens[i, j] = float(np.mean(np.minimum(pt[-len(prof.samples) :], cap)))
                    mean_latency[i, j] = float(np.mean(lat))
                    min_latency[i, j] = float(np.min(lat))

        hist = _HistoryArrays.build(wf, names)
        tool_latency = np.array([0.0 if s.loop is None else s.loop.tool_latency_s for s in wf.subtasks])
        tool_pusd = np.array([0 if s.loop is None else to_pusd(s.loop.tool_cost_usd) for s in wf.subtasks], np.int64)
        for i in range(n):  # pool rows keep the model's own latency: the kernels and the backend add the stage
            mean_latency[i] += tool_latency[i]
            min_latency[i] += tool_latency[i]
        for i, j in zip(*np.nonzero(hist.first >= 0), strict=True):
            p[i, j] = hist.first[i, j]
        input_tokens = np.array([s.input_tokens for s in wf.subtasks], np.int64)
        in_price = np.array([price_per_token_pusd(x.input_price_per_mtok) for x in models], np.int64)
        out_price = np.array([price_per_token_pusd(x.output_price_per_mtok) for x in models], np.int64)
        max_tokens = np.array([x.max_output_tokens for x in models], np.int64)
        usable = kind >= 0
        in_cost = input_tokens[:, None] * in_price[None, :]
        worst = np.where(usable, in_cost + max_tokens[None, :] * out_price[None, :] + tool_pusd[:, None], 0)
        mean_cost = np.where(usable, np.round(in_cost + mean_tokens * out_price[None, :]) + tool_pusd[:, None], 0)
        mean_cost = mean_cost.astype(np.int64)
        # Parametric success is independent of length, so truncation removes successes proportionally.
        p_draw = p.copy()
        p = np.where(kind == KIND_POOL, p, p * (1.0 - trunc))
        return cls(
            subtask_ids=ids,
            model_names=names,
            dep_ptr=dep_ptr,
            dep_idx=np.array(deps, np.int64),
            child_ptr=child_ptr,
            child_idx=np.array([c for k in kids for c in k], np.int64),
            input_tokens=input_tokens,
            in_price=in_price,
            out_price=out_price,
            tokens_per_s=np.array([x.tokens_per_s for x in models]),
            ttft_s=np.array([x.ttft_s for x in models]),
            max_tokens=max_tokens,
            kind=kind,
            p=p,
            p_draw=p_draw,
            ln_mu=ln_mu,
            ln_sigma=ln_sigma,
            fixed_tokens=fixed,
            pool_start=pool_start,
            pool_len=pool_len,
            pool_success=np.array(ps, np.int8),
            pool_tokens=np.array(pt, np.int64),
            pool_latency=np.array(pl, np.float64),
            worst_cost=worst.astype(np.int64),
            mean_cost=mean_cost,
            mean_latency=np.where(usable, mean_latency, np.inf),
            min_latency=min_latency,
            cheapest=np.argmin(np.where(usable, mean_cost, np.iinfo(np.int64).max), axis=1).astype(np.int64),
            horizon=hist.horizon,
            cls_ptr=hist.cls_ptr,
            cls_w=hist.cls_w,
            cls_p=hist.cls_p,
            own_repairs=hist.own,
            cas_root=hist.cas_root,
            cas_child=hist.cas_child,
            cas_q=hist.cas_q,
            tool_latency=tool_latency,
            tool_pusd=tool_pusd,
        )


MAX_CASCADE_NODES = 1_000_000  # the automaton of a cascade table: every history it tells apart, per subtask


@dataclass(frozen=True)
class _HistoryArrays:
    """The subtasks' histories as flat arrays; ``first[i, j]`` the first-attempt rate (-1: no history)."""

    first: F64
    horizon: I64
    cls_ptr: I64
    cls_w: F64
    cls_p: F64
    own: B
    cas_root: I64
    cas_child: I64
    cas_q: F64

    @classmethod
    def build(cls, wf: Workflow, names: tuple[str, ...]) -> _HistoryArrays:
        n, m = len(wf.subtasks), len(names)
        first = np.full((n, m), -1.0)
        horizon = np.full(n, -1, np.int64)
        cls_ptr = np.zeros(n + 1, np.int64)
        weights: list[float] = []
        rates: list[np.ndarray] = []
        own = np.zeros(n, np.bool_)
        cas_root = np.full(n, -1, np.int64)
        children: list[list[int]] = []
        qs: list[list[float]] = []
        for i, s in enumerate(wf.subtasks):
            if s.loop is not None:
                horizon[i] = s.loop.horizon
            h = s.history
            usable = [j for j, name in enumerate(names) if name in s.profiles]
            if isinstance(h, LatentClasses):
                own[i] = h.repairs == "own"
                block = np.zeros((h.n_classes, m, 2))
                for j in usable:
                    name = names[j]
                    block[:, j, 0] = h.first[name]
                    block[:, j, 1] = h.repair[name]
                    first[i, j] = h.marginal(name)
                weights.extend(h.weights)
                rates.append(block)
            elif isinstance(h, CascadeTable):
                cas_root[i] = len(children)
                profile_p = {j: float(getattr(s.profiles[names[j]], "p", 0.0)) for j in usable}
                depth = h.depth
                # Node = the last ``depth`` failures, in order; nodes of one subtask are numbered from its root.
                nodes: list[tuple[int, ...]] = [()]
                index: dict[tuple[int, ...], int] = {(): 0}
                for seq in nodes:  # grows while it runs: breadth first
                    if len(seq) < depth:
                        for j in usable:
                            index[(*seq, j)] = len(nodes)
                            nodes.append((*seq, j))
                    if len(children) + len(nodes) > MAX_CASCADE_NODES:
                        raise SpecError(f"its cascade table tells more than {MAX_CASCADE_NODES:,} histories apart",
                                        subtask=s.id, field="cascade")  # fmt: skip
                base = len(children)
                for seq in nodes:
                    row, q = [-1] * m, [0.0] * m
                    for j in usable:
                        nxt = (*seq, j)[-depth:] if depth else ()
                        row[j] = base + index[nxt]
                        q[j] = h.rate([names[f] for f in seq], names[j], profile_p[j])
                    children.append(row)
                    qs.append(q)
                for j in usable:
                    first[i, j] = qs[base][j]
            cls_ptr[i + 1] = len(weights)
        return cls(
            first=first,
            horizon=horizon,
            cls_ptr=cls_ptr,
            cls_w=np.array(weights, np.float64),
            cls_p=np.concatenate(rates) if rates else np.zeros((0, m, 2)),
            own=own,
            cas_root=cas_root,
            cas_child=np.array(children, np.int64).reshape(len(children), m),
            cas_q=np.array(qs, np.float64).reshape(len(qs), m),
        )


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _lognormal_capped_mean(mu: float, sigma: float, cap: int) -> float:
    """E[min(X, cap)] for X ~ LogNormal(mu, sigma)."""
    if sigma == 0:
        return min(math.exp(mu), cap)
    ln_c = math.log(cap)
    return math.exp(mu + sigma**2 / 2) * _normal_cdf((ln_c - mu - sigma**2) / sigma) + cap * (
        1.0 - _normal_cdf((ln_c - mu) / sigma)
    )
