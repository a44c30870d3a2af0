"""``ontime profile``: measure a spec's profiles by running its models for real, under a budget and a deadline.

Cascade sampling (VineLM §4.2): each *question* of a subtask is one fresh run of it (its own run id, so serve-sim
draws a fresh hidden class) on a model drawn at random; only after a failure does it go deeper, on another random
model, with the repair prompt, up to the loop's horizon or ``depth`` (a subtask without a loop: its first attempt
only). Every invocation goes through :func:`runtime.open_run`, so through the ledger (a run is given what is left
of the profiling budget: the whole never exceeds it) and the real clock (each run's deadline is what is left of the
profiling deadline). From a recorded attempts file (the reflection CSV format) nothing is called: the paths are read
from the file by :func:`planners.cascade_sampling.cascade_sample`, charged the spec's prices for their tokens.

The cascade estimator (:mod:`planners.cascade_estimates`) turns the paths into P(model succeeds | the models before
it failed) per trie node with a 95% interval and a count. The written spec keeps the models, subtasks and prompts and
replaces each measured subtask's profiles: ``p`` is the first-attempt rate, ``output_tokens`` a lognormal with the
measured mean and std, a loop subtask gets a ``cascade`` table of the observed prefixes, and ``measured`` holds every
rate's interval and count and the token and latency samples' summaries (the loader accepts and ignores it).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import numpy as np

from adapters.chat_adapter import ChatAdapter
from adapters.endpoints import make_backend
from adapters.sim_server import SimServer
from planners.cascade_estimates import estimate
from planners.cascade_sampling import Observations, PathOutcomes, PathTrie, cascade_sample
from runtime._api import open_run
from runtime._prompts import render
from runtime._spec import _load_yaml, parse_workflow
from runtime.types import (
    BatchLaunched,
    Decision,
    Launch,
    Planner,
    Reason,
    SampleFinished,
    SampleStatus,
    UsageError,
    Workflow,
    check_budget,
    check_limit,
    to_usd,
)
from tools.reflection_data import load_attempts

if TYPE_CHECKING:
    from collections.abc import Callable

    from planners.cascade_estimates import CascadeRate
    from runtime.types import Adapter, Event, Snapshot, Subtask

__all__ = ["AGAINST", "ESTIMATORS", "ProfileReport", "SubtaskMeasure", "profile"]

AGAINST = ("endpoints", "serve-sim", "recorded")
ESTIMATORS = ("vinelm_lite", "vinelm", "vinelm_eb")  # the cascade estimators that give 95% intervals
MAX_DEPTH = 8

# One invocation: (model, succeeded, output tokens, latency in seconds or None when not measured).
Invocation = tuple[str, bool, int, float | None]
# Per subtask, per question, the paths run on it (live: one; recorded: every path drawn, sharing checkpoints).
Paths = dict[str, list[list[list[Invocation]]]]


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    mean: float
    std: float

    @classmethod
    def of(cls, xs: list[float]) -> Summary:
        return cls(len(xs), float(np.mean(xs)), float(np.std(xs))) if xs else cls(0, math.nan, math.nan)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": round(self.mean, 6), "std": round(self.std, 6)}


@dataclass(frozen=True, slots=True)
class SubtaskMeasure:
    """What was measured of one subtask: its paths' conditional rates (95% intervals), tokens and latencies."""

    id: str
    depth: int
    questions: int
    invocations: int
    rates: tuple[CascadeRate, ...]
    output_tokens: dict[str, Summary]
    latency_s: dict[str, Summary]

    def rates_dict(self) -> dict[str, dict[str, Any]]:
        return {
            ">".join(r.path): {
                "rate": round(r.rate, 6),
                "low": round(r.low, 6),
                "high": round(r.high, 6),
                "count": r.count,
            }
            for r in self.rates
            if r.count > 0 or len(r.path) == 1
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "questions": self.questions,
            "invocations": self.invocations,
            "rates": self.rates_dict(),
            "output_tokens": {m: s.to_dict() for m, s in self.output_tokens.items()},
            "latency_s": {m: s.to_dict() for m, s in self.latency_s.items()},
        }


@dataclass(frozen=True, slots=True)
class ProfileReport:
    """What ``ontime profile`` measured and spent, and the spec it wrote (``spec``)."""

    against: str
    estimator: str
    budget: float
    deadline: float
    spent: float
    spent_pusd: int
    elapsed: float
    invocations: int
    # "budget", "deadline", "questions", "done" (a recorded file: every reachable path ran), or the reason the
    # runs of a whole round got no answer (``unreachable``, ``provider_rejected``, ...)
    stopped: str
    subtasks: tuple[SubtaskMeasure, ...]
    spec: dict[str, Any] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "against": self.against, "estimator": self.estimator, "budget": self.budget, "deadline": self.deadline,
            "spent": self.spent, "spent_pusd": self.spent_pusd, "elapsed": round(self.elapsed, 3),
            "invocations": self.invocations, "stopped": self.stopped,
            "subtasks": {s.id: s.to_dict() for s in self.subtasks},
        }  # fmt: skip


def profile(
    spec: str | Path,
    *,
    budget: float,
    deadline: float,
    questions: int | None = None,
    depth: int | None = None,
    against: Literal["endpoints", "serve-sim", "recorded"] = "endpoints",
    recorded: str | Path | None = None,
    estimator: str = "vinelm_lite",
    seed: int = 0,
    speed: float = 50.0,
    progress: Callable[[int, int], None] | None = None,
) -> ProfileReport:
    """Measure the profiles of the spec at ``spec`` within ``budget`` dollars and ``deadline`` seconds.

    Args:
        questions: fresh runs (paths) per subtask at most (default: until the budget or the deadline runs out).
        depth: the most invocations a path of a loop subtask gets (default: its horizon, at most 8).
        against: ``"endpoints"`` (the spec's), ``"serve-sim"`` (one started on loopback from the spec itself, its
            latencies divided by ``speed``) or ``"recorded"`` (the attempts file ``recorded``).
        estimator: one of :data:`ESTIMATORS`.
        progress: called with (pico-dollars spent, invocations) after each path.

    Raises:
        UsageError: bad input (spec, limits, file, a simulated model profiled against endpoints), before any call.
    """
    budget_pusd = check_budget(budget)
    check_limit("deadline", deadline)
    if against not in AGAINST:
        raise UsageError(f"--against must be one of {', '.join(AGAINST)}, not {against!r}")
    if (recorded is not None) != (against == "recorded"):
        raise UsageError("an attempts file goes with --against recorded (and it needs one)")
    if estimator not in ESTIMATORS:
        raise UsageError(f"unknown estimator {estimator!r} (with intervals: {', '.join(ESTIMATORS)})")
    for name, v, top in (("questions", questions, 10**7), ("depth", depth, MAX_DEPTH)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top):
            raise UsageError(f"{name} must be an integer in 1..{top:,}, not {v!r}")
    raw = _read(Path(spec))
    wf = parse_workflow(raw, source=str(spec))
    depths = {s.id: _depth(s, depth) for s in wf.subtasks}
    start = time.monotonic()
    if against == "recorded":
        assert recorded is not None
        paths, spent, stopped = _from_file(wf, Path(recorded), budget_pusd, depths, questions, seed)
    else:
        sim = [m for m, x in wf.models.items() if x.endpoint is None]
        if against == "endpoints" and sim:
            raise UsageError(f"model {sim[0]!r} is simulated (no endpoint): profile it with --against serve-sim")
        paths, spent, stopped = anyio.run(
            _live, wf, raw, against, budget_pusd, float(deadline), depths, questions, seed, speed, progress
        )
    measures = tuple(_measure(s, depths[s.id], paths[s.id], estimator) for s in wf.subtasks)
    written = _written(raw, wf, measures)
    parse_workflow(written, source="the measured spec")  # what is written must load
    return ProfileReport(against, estimator, float(budget), float(deadline), to_usd(spent), spent,
                         time.monotonic() - start, sum(m.invocations for m in measures), stopped, measures,
                         written)  # fmt: skip


def write(report: ProfileReport, out: str | Path) -> None:
    """Write the measured spec as JSON.

    Raises:
        UsageError: the file cannot be written.
    """
    try:
        Path(out).write_text(json.dumps(report.spec, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = _load_yaml(text) if path.suffix.lower() in {".yaml", ".yml"} else json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the spec ({exc})") from None
    except Exception as exc:  # yaml's errors
        raise UsageError(f"{path}: not a spec ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a spec (the top level is not an object)")
    return data


def _depth(s: Subtask, depth: int | None) -> int:
    if s.loop is None:
        return 1
    return max(1, min(s.loop.horizon, depth or MAX_DEPTH, MAX_DEPTH))


# -- live: endpoints or serve-sim -----------------------------------------------------------------------------


class _PathPlanner(Planner):
    """One path of cascade sampling: a random affordable model, again after each failure, up to ``depth``."""

    name = "profile"
    in_thread = False

    def __init__(self, rng: random.Random, depth: int) -> None:
        self.rng, self.depth = rng, depth

    def decide(self, snapshot: Snapshot) -> Decision:
        if not snapshot.ready or len(snapshot.failed) >= self.depth:
            return Decision()
        i, t = snapshot.ready[0], snapshot.table
        worst = t.worst_cost if snapshot.worst_pusd is None else snapshot.worst_pusd
        usable = [j for j in range(t.n_models) if t.kind[i, j] >= 0]
        fits = [j for j in usable if worst[i, j] <= snapshot.budget_left_pusd]
        if not fits:
            return Decision(reason=Reason.BUDGET)
        return Decision({i: Launch(self.rng.choice(fits), 1)})


def _pointed(raw: dict[str, Any], url: str) -> dict[str, Any]:
    """The spec with every model an OpenAI-compatible endpoint at serve-sim's ``url``, and every subtask with a
    prompt and a verifier serve-sim's answers can be told apart by."""
    data = copy.deepcopy(raw)
    for m in data["models"].values():
        m.pop("api_key", None)
        m.pop("api_key_env", None)
        m["provider"], m["base_url"] = "openai", url + "/v1"
    for s in data["subtasks"]:
        s.setdefault("prompt", f"Subtask {s['id']}.")
        if s.get("verifier") is None:
            s["verifier"] = {"exact": s.get("reference") or f"[sim] {s['id']}: done"}  # serve-sim's success
    return data


def _single(wf: Workflow, s: Subtask) -> Workflow:
    """Subtask ``s`` alone: its dependencies' places in the prompt hold their reference outputs."""
    refs = {d.id: d.reference for d in wf.subtasks if d.id in s.deps}
    messages = render(s, refs)
    user = None if messages is None else messages[-1].content
    alone = dataclasses.replace(s, deps=(), prompt=user)
    return Workflow(name=f"{wf.name}:{s.id}", models=wf.models, subtasks=(alone,), source=wf.source)


async def _live(
    wf: Workflow,
    raw: dict[str, Any],
    against: str,
    budget_pusd: int,
    deadline_s: float,
    depths: dict[str, int],
    questions: int | None,
    seed: int,
    speed: float,
    progress: Callable[[int, int], None] | None,
) -> tuple[Paths, int, str]:
    end = time.monotonic() + deadline_s
    server = None
    if against == "serve-sim":
        server = SimServer(wf, seed=seed, speed=speed)
        wf = parse_workflow(_pointed(raw, await server.start()), source=wf.source)
    paths: Paths = {s.id: [] for s in wf.subtasks}
    spent, count, stopped = 0, 0, "questions"
    backends = {name: make_backend(m) for name, m in wf.real_models.items()}
    try:
        adapters: dict[str, Adapter] = {}
        for name, backend in backends.items():
            ep = wf.models[name].endpoint
            assert ep is not None
            adapters[name] = ChatAdapter(backend, ep.model, temperature=ep.temperature)
        singles = [(s, _single(wf, s)) for s in wf.subtasks]
        q, why = 0, None
        while questions is None or q < questions:
            ran = False
            for s, alone in singles:
                left_s, left = end - time.monotonic(), budget_pusd - spent
                if left_s <= 0:
                    return paths, spent, "deadline"
                if left <= 0:
                    return paths, spent, "budget"
                events: list[Event] = []
                planner = _PathPlanner(random.Random(f"{seed}:{q}:{s.id}"), depths[s.id])
                async with open_run(alone, to_usd(left), left_s, planner=planner, adapters=adapters, seed=seed,
                                    run_id=f"profile-{seed}-{q}-{s.id}", on_event=events.append) as r:  # fmt: skip
                    result = await r.execute()
                spent += result.cost_pusd
                path = _path(events)
                if path:
                    paths[s.id].append([path])
                    count += len(path)
                    ran = True
                if progress is not None:
                    progress(spent, count)
                why = result.reason
            if not ran:  # no subtask got an answer this round: why the last one did not
                stopped = "deadline" if time.monotonic() >= end else "budget" if why is Reason.BUDGET else str(why)
                break
            q += 1
    finally:
        with anyio.CancelScope(shield=True):
            for backend in backends.values():
                await backend.aclose()
            if server is not None:
                await server.stop()
    return paths, spent, stopped


def _path(events: list[Event]) -> list[Invocation]:
    """A run's invocations in order, up to the first one that did not end in a verdict (an endpoint error, the
    deadline): what comes after it was not observed."""
    models = {e.batch: e.model for e in events if isinstance(e, BatchLaunched)}
    out: list[Invocation] = []
    for e in events:
        if not isinstance(e, SampleFinished):
            continue
        if e.status not in (SampleStatus.SUCCEEDED, SampleStatus.FAILED):
            break
        out.append((models[e.batch], e.status is SampleStatus.SUCCEEDED, e.output_tokens, e.latency_s))
    return out


# -- recorded ------------------------------------------------------------------------------------------------


def _from_file(
    wf: Workflow, path: Path, budget_pusd: int, depths: dict[str, int], questions: int | None, seed: int
) -> tuple[Paths, int, str]:
    """Cascade sampling over recorded attempts: a model's fresh answer, or its own repair if it already failed on
    the path (agent ``retry``), charged at the spec's prices; each subtask gets an equal share of the budget."""
    attempts = load_attempts(path)
    first: dict[tuple[str, tuple[str, str]], tuple[bool, int, int]] = {}
    retry: dict[tuple[str, tuple[str, str]], tuple[bool, int, int]] = {}
    for a in attempts:
        row = (a.right, a.input_tokens, a.output_tokens)
        if a.attempt == 1:
            first[a.model, a.question] = row
        elif a.agent == "retry":
            retry[a.model, a.question] = row
    known = {m for m, _ in first}
    paths: Paths = {}
    spent, share = 0, budget_pusd // len(wf.subtasks)
    rng = np.random.default_rng(seed)
    stopped = "done"
    for s in wf.subtasks:
        names = list(s.profiles)
        data = {}
        for m in names:
            ep = wf.models[m].endpoint
            data[m] = m if m in known else (ep.model if ep is not None and ep.model in known else None)
            if data[m] is None:
                raise UsageError(f"{path}: no attempts of model {m!r} (known: {', '.join(sorted(known))})")
        qs = sorted(set.intersection(*({q for m2, q in first if m2 == data[m]} for m in names)))
        if not qs:
            raise UsageError(f"{path}: no question every model of subtask {s.id!r} answered")
        trie = PathTrie(names, depths[s.id])
        kind = np.minimum(trie.repeat, 1)
        ok, price, tokens = (
            np.zeros((2, len(names), len(qs)), bool),
            np.zeros((2, len(names), len(qs))),
            np.zeros((2, len(names), len(qs)), np.int64),
        )
        for mi, m in enumerate(names):
            spec = wf.models[m]
            for qi, q in enumerate(qs):
                for r, rows in enumerate((first, retry)):
                    got = rows.get((data[m] or "", q))
                    if got is not None:  # a repair the file lacks: wrong, and free (as tools/reflection_cascade)
                        ok[r, mi, qi], tokens[r, mi, qi] = got[0], got[2]
                        price[r, mi, qi] = got[1] * spec.input_price_per_mtok + got[2] * spec.output_price_per_mtok
        cost = price[kind, trie.model].T * 1e6  # dollars per million tokens x tokens = pico-dollars
        table = PathOutcomes(trie, ok[kind, trie.model].T.copy(), cost)
        obs = cascade_sample(table, float(share), rng, max_draws=questions)
        spent += math.ceil(obs.spent)
        if questions is None and obs.executed.sum() < table.reachable().sum():
            stopped = "budget"
        toks = tokens[kind, trie.model].T
        ran = obs.executed
        # Each executed node without an executed child ends a path: its prefixes ran before it, on that question.
        ends = ran & ~np.column_stack([ran[:, n + 1 : trie.end[n]].any(axis=1) for n in range(trie.size)])
        paths[s.id] = [
            [
                [
                    (names[trie.model[a]], bool(obs.success[qi, a]), int(toks[qi, a]), None)
                    for a in trie.ancestors[n, : trie.depth[n]]
                ]
                for n in np.flatnonzero(ends[qi])
            ]
            for qi in range(len(qs))
            if ran[qi].any()
        ]
    return paths, spent, stopped if questions is None else "questions"


# -- estimates and the written spec ---------------------------------------------------------------------------


def _measure(s: Subtask, depth: int, paths: list[list[list[Invocation]]], method: str) -> SubtaskMeasure:
    names = list(s.profiles)
    trie = PathTrie(names, depth)
    node = {trie.path(n): n for n in range(trie.size)}
    executed = np.zeros((len(paths), trie.size), bool)
    success = np.zeros_like(executed)
    tokens: dict[str, list[float]] = {m: [] for m in names}
    latency: dict[str, list[float]] = {m: [] for m in names}
    for q, runs in enumerate(paths):
        for path in runs:
            prefix: tuple[str, ...] = ()
            for model, ok, out, lat in path[:depth]:
                prefix = (*prefix, model)
                if executed[q, node[prefix]]:  # a checkpoint of this question: counted once
                    continue
                executed[q, node[prefix]] = True
                success[q, node[prefix]] = ok
                tokens[model].append(float(out))
                if lat is not None:
                    latency[model].append(lat)
    rates: tuple[CascadeRate, ...] = ()
    if executed.any():
        rates = tuple(estimate(method, trie, Observations(trie, executed, success)).cascade_rates(trie))
    return SubtaskMeasure(
        s.id, depth, len(paths), int(executed.sum()), rates,
        {m: Summary.of(x) for m, x in tokens.items()}, {m: Summary.of(x) for m, x in latency.items()},
    )  # fmt: skip


def _written(raw: dict[str, Any], wf: Workflow, measures: tuple[SubtaskMeasure, ...]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    by_id = {m.id: m for m in measures}
    for sub in out["subtasks"]:
        m = by_id[sub["id"]]
        if not m.rates:  # nothing ran: the spec's own profiles stay
            sub["measured"] = {"questions": 0}
            continue
        first = {r.path[0]: r.rate for r in m.rates if len(r.path) == 1}
        for key in ("difficulty", "cascade", "replay"):
            sub.pop(key, None)
        profiles = {}
        for model, prof in sub["profiles"].items():
            tok = m.output_tokens[model]
            dist = {"mean": round(max(1.0, tok.mean), 3), "std": round(tok.std, 3)} if tok.count else _tokens(prof)
            profiles[model] = {"p": round(first[model], 6), "output_tokens": dist}
        sub["profiles"] = profiles
        if m.depth > 1:
            sub["cascade"] = {">".join(r.path): round(r.rate, 6) for r in m.rates if r.count > 0 or len(r.path) == 1}
        sub["measured"] = m.to_dict()
    return out


def _tokens(prof: Any) -> dict[str, Any]:
    """A profile's output-token distribution as the spec writes it (a pool: its rows' mean and std)."""
    if isinstance(prof, dict) and "output_tokens" in prof:
        return dict(prof["output_tokens"])
    rows = [float(r[1]) for r in prof.get("samples", [])] if isinstance(prof, dict) else []
    return (
        {"mean": round(max(1.0, float(np.mean(rows))), 3), "std": round(float(np.std(rows)), 3)}
        if rows
        else {"fixed": 1}
    )
