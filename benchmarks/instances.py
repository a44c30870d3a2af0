"""Benchmark workflows: the MCP paper's ProofFlow and CodeFlow suites, built from their real dependency
graphs, and random DAGs for scaling studies.

The graphs are real ($ONTIME_DATA_DIR/workflows: ProofFlow lemma DAGs, CodeFlowBench-Repo subproblems); the
model catalogs are the paper's, with list prices from genai-prices; the execution profiles are 512-sample
empirical pools per (subtask, model) drawn from the generative model below, because the paper's recorded
pools are not public. benchmarks/README.md states every assumption and how the scales were matched to the
recorded ProofFlow runs (proofflow_baseline_token_time.json).

Generative model, per (subtask i, model m), seeded by (suite, instance, subtask, model):

- difficulty d_i = base(kind) + 0.6 z_len(i) + 0.25 (number of dependencies) + N(0, 1.1), where z_len is
  the standardized log length of the subtask's statement over its suite;
- success of one attempt: p = sigmoid(strength(m, kind) - d_i), clipped to [0.002, 0.98];
- output tokens: lognormal around the model's median for that kind of step, times exp(0.3 z_len(i)),
  log-sd ``spread``; failed attempts run 1.3x longer (a prover that does not close a goal keeps trying);
- latency: time to first token + tokens / throughput, times lognormal(0, 0.15) serving jitter; every pool
  row records its own latency, as the paper's pools do.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import runtime

__all__ = [
    "CODEFLOW",
    "PROOFFLOW",
    "Instance",
    "ModelCard",
    "Suite",
    "check_graph",
    "codeflow_graph",
    "load_codeflow",
    "load_proofflow",
    "random_dag",
]

POOL_SIZE = 512


@dataclass(frozen=True, slots=True)
class ModelCard:
    """A model of a suite's catalog: who it is, what it costs (list price) and how it behaves."""

    name: str
    hf_id: str  # the model the paper ran
    price_model: str  # the genai-prices (provider, model) whose list price we charge
    price_provider: str
    tokens_per_s: float
    ttft_s: float
    max_output_tokens: int
    strength: dict[str, float]  # per kind of step, in logits against difficulty
    median_tokens: dict[str, float]  # per kind of step
    spread: float  # log-sd of output tokens


@dataclass(frozen=True, slots=True)
class Suite:
    """A benchmark suite: its models and the difficulty baseline of each kind of step."""

    name: str
    models: tuple[ModelCard, ...]
    base_difficulty: dict[str, float]
    prompt_tokens: int  # the instruction template around a subtask's statement


# The paper's ProofFlow catalog (Appendix C.2): three formalizer/prover families. A family is one model
# here (its formalizer runs "formalize" steps, its prover "prove" steps). Prices: the base model each
# family is fine-tuned from (Goedel-V2 on Qwen3-32B and Qwen3-8B, Kimina on Qwen2.5-7B).
PROOFFLOW = Suite(
    name="proofflow",
    models=(
        ModelCard(
            "goedel-32b", "Goedel-LM/Goedel-Prover-V2-32B + Goedel-Formalizer-V2-32B", "Qwen/Qwen3-32B",
            "huggingface_nebius", tokens_per_s=113.0, ttft_s=0.8, max_output_tokens=16384,
            strength={"formalize": 2.6, "prove": 1.4}, median_tokens={"formalize": 320.0, "prove": 9000.0},
            spread=0.6,
        ),
        ModelCard(
            "goedel-8b", "Goedel-LM/Goedel-Prover-V2-8B + Goedel-Formalizer-V2-8B", "Qwen/Qwen3-8B",
            "huggingface_nscale", tokens_per_s=160.0, ttft_s=0.5, max_output_tokens=16384,
            strength={"formalize": 2.0, "prove": 0.8}, median_tokens={"formalize": 300.0, "prove": 8000.0},
            spread=0.6,
        ),
        ModelCard(
            "kimina-7b", "AI-MO/Kimina-Prover-Preview-Distill-7B + Kimina-Autoformalizer-7B",
            "qwen/qwen-2.5-7b-instruct", "openrouter", tokens_per_s=180.0, ttft_s=0.5, max_output_tokens=16384,
            strength={"formalize": 1.6, "prove": 0.3}, median_tokens={"formalize": 280.0, "prove": 6300.0},
            spread=0.65,
        ),
    ),
    base_difficulty={"formalize": 0.2, "prove": 1.3},
    prompt_tokens=700,
)  # fmt: skip

# The paper's CodeFlow catalog: Qwen3 4B and 30B-A3B, instruct and thinking (2507 releases).
CODEFLOW = Suite(
    name="codeflow",
    models=(
        ModelCard(
            "qwen3-30b-thinking", "Qwen/Qwen3-30B-A3B-Thinking-2507", "Qwen/Qwen3-30B-A3B-Thinking-2507",
            "huggingface_nebius", tokens_per_s=140.0, ttft_s=0.6, max_output_tokens=38912,
            strength={"code": 2.2}, median_tokens={"code": 9500.0}, spread=0.55,
        ),
        ModelCard(
            "qwen3-30b-instruct", "Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B-Instruct-2507",
            "huggingface_nebius", tokens_per_s=140.0, ttft_s=0.6, max_output_tokens=38912,
            strength={"code": 0.9}, median_tokens={"code": 900.0}, spread=0.45,
        ),
        ModelCard(
            "qwen3-4b-thinking", "Qwen/Qwen3-4B-Thinking-2507", "Qwen/Qwen3-4B-Thinking-2507",
            "huggingface_nscale", tokens_per_s=230.0, ttft_s=0.3, max_output_tokens=38912,
            strength={"code": 1.2}, median_tokens={"code": 11000.0}, spread=0.6,
        ),
        ModelCard(
            "qwen3-4b-instruct", "Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Instruct-2507",
            "huggingface_nscale", tokens_per_s=230.0, ttft_s=0.3, max_output_tokens=38912,
            strength={"code": -0.6}, median_tokens={"code": 850.0}, spread=0.5,
        ),
    ),
    base_difficulty={"code": 3.0},
    prompt_tokens=600,
)  # fmt: skip

# Random DAGs for scaling studies use the ProofFlow catalog and difficulties.
RANDOM = dataclasses.replace(PROOFFLOW, name="random")


@dataclass(frozen=True, slots=True)
class Step:
    """One subtask before it gets profiles: its id, kind, dependencies and the text that sizes it."""

    id: str
    kind: str
    deps: tuple[str, ...]
    text: str
    context: int = 0  # tokens of dependency context in its prompt


@dataclass(slots=True)
class Instance:
    """A benchmark workflow: where it came from and the workflow itself (profiles included)."""

    suite: str
    id: str
    workflow: runtime.Workflow
    nodes: int  # nodes of the source graph (lemmas, subproblems)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def subtasks(self) -> int:
        return len(self.workflow.subtasks)


@dataclass(slots=True)
class Loaded:
    """Instances built from a data file, and the entries that were skipped, with the reason."""

    instances: list[Instance]
    skipped: list[tuple[str, str]]


def _price(card: ModelCard) -> tuple[float, float]:
    """(input, output) US dollars per million tokens, from genai-prices' bundled snapshot (no network)."""
    from genai_prices import data_snapshot

    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            if (provider.id, model.id) == (card.price_provider, card.price_model):
                prices = model.prices
                if isinstance(prices, list):  # conditional prices: the unconditional (first) one
                    prices = prices[0].prices
                return _mtok(prices.input_mtok), _mtok(prices.output_mtok)
    raise LookupError(f"genai-prices has no price for {card.price_provider}/{card.price_model}")


def _mtok(price: Any) -> float:
    """A price per million tokens as a float (a tiered price: its base tier)."""
    return float(getattr(price, "base", price) or 0)


def _models(suite: Suite) -> dict[str, dict[str, Any]]:
    out = {}
    for card in suite.models:
        inp, outp = _price(card)
        speed = {"tokens_per_s": card.tokens_per_s, "ttft_s": card.ttft_s, "max_output_tokens": card.max_output_tokens}
        out[card.name] = {"provider": "sim", "input_price_per_mtok": inp, "output_price_per_mtok": outp, **speed}
    return out


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _pool(card: ModelCard, kind: str, difficulty: float, z_len: float, rng: np.random.Generator) -> list[list[Any]]:
    """512 attempts of one step on one model: [success, output tokens, latency s]."""
    p = min(0.98, max(0.002, 1.0 / (1.0 + math.exp(-(card.strength[kind] - difficulty)))))
    ok = rng.random(POOL_SIZE) < p
    median = card.median_tokens[kind] * math.exp(0.3 * z_len)
    tokens = np.exp(np.log(median) + card.spread * rng.standard_normal(POOL_SIZE)) * np.where(ok, 1.0, 1.3)
    tokens = np.clip(np.round(tokens), 1, None).astype(np.int64)
    capped = np.minimum(tokens, card.max_output_tokens)
    latency = (card.ttft_s + capped / card.tokens_per_s) * np.exp(0.15 * rng.standard_normal(POOL_SIZE))
    return [[int(o), int(t), round(float(lat), 3)] for o, t, lat in zip(ok, tokens, latency, strict=True)]


def _build(suite: Suite, instance_id: str, steps: list[Step], stats: tuple[float, float]) -> runtime.Workflow:
    """The workflow of one instance: every step gets a pool on every model of the suite."""
    mean, sd = stats
    subtasks = []
    for s in steps:
        z_len = (math.log(1 + len(s.text)) - mean) / sd
        rng = np.random.default_rng(_seed(suite.name, instance_id, s.id))
        difficulty = suite.base_difficulty[s.kind] + 0.6 * z_len + 0.25 * len(s.deps) + 1.1 * rng.standard_normal()
        profiles = {
            card.name: {"samples": _pool(card, s.kind, difficulty, z_len, np.random.default_rng(
                _seed(suite.name, instance_id, s.id, card.name)))}
            for card in suite.models
        }  # fmt: skip
        tokens = suite.prompt_tokens + len(s.text) // 4 + s.context
        subtasks.append({"id": s.id, "deps": list(s.deps), "input_tokens": tokens, "profiles": profiles})
    spec = {"name": f"{suite.name}-{instance_id}", "models": _models(suite), "subtasks": subtasks}
    return runtime.parse_workflow(spec, source=f"{suite.name}:{instance_id}")


def _length_stats(texts: list[str]) -> tuple[float, float]:
    logs = np.log1p([len(t) for t in texts]) if texts else np.zeros(1)
    return float(np.mean(logs)), float(np.std(logs)) or 1.0


def check_graph(nodes: dict[str, tuple[str, ...]]) -> str | None:
    """Why a dependency graph is unusable (self-dependency, unknown dependency, cycle), or None."""
    for nid, deps in nodes.items():
        if nid in deps:
            return f"node {nid!r} depends on itself"
        for d in deps:
            if d not in nodes:
                return f"node {nid!r} depends on unknown node {d!r}"
    state: dict[str, int] = {}
    for root in nodes:
        stack = [(root, iter(nodes[root]))]
        state[root] = 1
        while stack:
            nid, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[nid] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return f"cycle through {nxt!r}"
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(nodes[nxt])))
    return None


def _read(path: str | Path, what: str) -> list[Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise runtime.SpecError(f"cannot read the {what} data ({exc})", source=str(path)) from exc
    if not isinstance(data, list):
        raise runtime.SpecError(f"the {what} data must be a JSON array", source=str(path))
    return data


def _entry_id(entry: Any, fields: tuple[str, ...], k: int, seen: dict[str, int]) -> str:
    """An entry's id: its ``fields`` joined by '/' (its index where missing), with '#2', '#3', ... on
    repeats. ProofFlow ids repeat across sources and one CodeFlow problem appears twice; a repeated id
    would silently stand for the first entry everywhere (tasks, seeds, the resumable store)."""
    parts = [str(entry[f]).removesuffix(".json") for f in fields if f in entry] if isinstance(entry, dict) else []
    eid = "/".join(parts) if len(parts) == len(fields) else str(k)
    seen[eid] = seen.get(eid, 0) + 1
    return eid if seen[eid] == 1 else f"{eid}#{seen[eid]}"


def load_proofflow(path: str | Path, limit: int | None = None) -> Loaded:
    """ProofFlow proof graphs as formalize-then-prove workflows: every node is formalized, every claim
    (not a premise or definition) then proved: ``formalize(v) <- formalize(u)``, ``prove(v) <- formalize(v),
    prove(u)`` for each dependency u."""
    entries = _read(path, "ProofFlow")
    seen: dict[str, int] = {}
    graphs: list[tuple[str, dict[str, tuple[str, ...]], dict[str, str]]] = []
    skipped: list[tuple[str, str]] = []
    for k, entry in enumerate(entries):
        eid = _entry_id(entry, ("origin", "id"), k, seen)
        try:
            nodes = {str(n["id"]): tuple(str(d) for d in n["dependencies"]) for n in entry["proof_graph"]}
            texts = {str(n["id"]): str(n.get("statement", "")) for n in entry["proof_graph"]}
        except (KeyError, TypeError) as exc:
            skipped.append((eid, f"malformed entry ({exc!r})"))
            continue
        why = check_graph(nodes) if nodes else "empty proof graph"
        if why:
            skipped.append((eid, why))
            continue
        graphs.append((eid, nodes, texts))
    stats = _length_stats([t for _, _, texts in graphs for t in texts.values()])
    out = []
    for eid, nodes, texts in graphs[:limit]:
        steps = []
        for nid, deps in nodes.items():
            context = sum(len(texts[d]) for d in deps) // 4
            steps.append(Step(f"formalize:{nid}", "formalize", tuple(f"formalize:{d}" for d in deps), texts[nid],
                              context))  # fmt: skip
        claims = {nid for nid in nodes if not nid.startswith(("tc", "def"))}
        for nid, deps in nodes.items():
            if nid in claims:
                pre = [f"formalize:{nid}"] + [f"prove:{d}" for d in deps if d in claims]
                steps.append(Step(f"prove:{nid}", "prove", tuple(pre), texts[nid], len(texts[nid]) // 4))
        out.append(Instance("proofflow", eid, _build(PROOFFLOW, eid, steps, stats), nodes=len(nodes)))
    return Loaded(out, skipped)


def codeflow_graph(entry: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """A CodeFlowBench-Repo problem's subproblems and what each calls (KeyError, TypeError, ValueError or
    SyntaxError if the entry is malformed); :func:`check_graph` says whether the graph is usable."""
    nodes = {}
    for sub in entry["subproblems"]:
        deps = sub["dependencies"]
        deps = ast.literal_eval(deps) if isinstance(deps, str) else deps
        nodes[str(sub["name"])] = tuple(str(d) for d in deps)
    return nodes


def load_codeflow(path: str | Path, limit: int | None = None) -> Loaded:
    """CodeFlowBench-Repo problems as code workflows: one code subtask per subproblem, with its real
    dependencies (a subproblem's prompt carries the code of those it calls)."""
    entries = _read(path, "CodeFlow")
    seen: dict[str, int] = {}
    problems: list[tuple[str, dict[str, tuple[str, ...]], dict[str, str], dict[str, str]]] = []
    skipped: list[tuple[str, str]] = []
    for k, entry in enumerate(entries):
        eid = _entry_id(entry, ("problem-id",), k, seen)
        try:
            nodes = codeflow_graph(entry)
            texts = {str(s["name"]): str(s.get("statement", "")) for s in entry["subproblems"]}
            code = {str(s["name"]): str(s.get("solution", "")) for s in entry["subproblems"]}
        except (KeyError, TypeError, ValueError, SyntaxError) as exc:
            skipped.append((eid, f"malformed entry ({exc!r})"))
            continue
        why = check_graph(nodes) if nodes else "no subproblems"
        if why:
            skipped.append((eid, why))
            continue
        problems.append((eid, nodes, texts, code))
    stats = _length_stats([t + code[n] for _, _, texts, code in problems for n, t in texts.items()])
    out = []
    for eid, nodes, texts, code in problems[:limit]:
        steps = [
            Step(f"code:{nid}", "code", tuple(f"code:{d}" for d in deps), texts[nid] + code[nid],
                 sum(len(code[d]) for d in deps) // 4)
            for nid, deps in nodes.items()
        ]  # fmt: skip
        out.append(Instance("codeflow", eid, _build(CODEFLOW, eid, steps, stats), nodes=len(nodes)))
    return Loaded(out, skipped)


def random_dag(n: int, *, width: float = 2.0, fan_in: float = 1.5, seed: int = 0, suite: Suite = RANDOM) -> Instance:
    """A random layered DAG of ``n`` formalize/prove-like steps, for scaling studies.

    Layers hold about ``width`` steps; each step depends on about ``fan_in`` steps of earlier layers
    (at least one, when there is an earlier layer). Kinds alternate so both difficulty baselines appear.
    """
    if n < 1:
        raise ValueError(f"a DAG needs at least one subtask, not {n}")
    rng = np.random.default_rng(_seed("random", n, width, fan_in, seed))
    steps = []
    k = 0
    while k < n:
        size = min(n - k, max(1, int(rng.poisson(width - 1)) + 1))
        earlier = [f"s{x}" for x in range(k)]  # the steps of the earlier layers
        for x in range(k, k + size):
            deps: tuple[str, ...] = ()
            if earlier:
                count = min(len(earlier), max(1, int(rng.poisson(fan_in - 1)) + 1))
                recent = earlier[-max(count, int(2 * width)) :]
                deps = tuple(sorted(rng.choice(recent, size=min(count, len(recent)), replace=False).tolist()))
            steps.append(Step(f"s{x}", "prove" if x % 2 else "formalize", deps, "x" * int(rng.lognormal(5.0, 0.6))))
        k += size
    stats = _length_stats([s.text for s in steps])
    iid = f"n{n}-w{width:g}-f{fan_in:g}-s{seed}"
    return Instance(suite.name, iid, _build(suite, iid, steps, stats), nodes=n,
                    info={"width": width, "fan_in": fan_in, "seed": seed})  # fmt: skip


def scale_check(loaded: Loaded, recorded: str | Path) -> list[dict[str, Any]]:
    """Median tokens and time per problem of the recorded step-by-step ProofFlow runs (one pass over a
    problem's steps), and of the same pass over the generated pools: one mean attempt per prove step."""

    def medians(source: str, tokens: list[float], times: list[float]) -> dict[str, Any]:
        tok, secs = round(float(np.median(tokens))), round(float(np.median(times)), 1)
        return {"source": source, "problems": len(tokens), "median_tokens": tok, "median_time_s": secs}

    data = json.loads(Path(recorded).read_text(encoding="utf-8"))
    rows = []
    for key in ("benchmark_stepproof_think", "benchmark_stepproof_nothink"):
        runs = data[key]["rows"]
        source = f"recorded {key.removeprefix('benchmark_')}"
        rows.append(medians(source, [r["total_tokens"] for r in runs], [r["total_time"] for r in runs]))
    for card in PROOFFLOW.models:
        tokens, times = [], []
        for inst in loaded.instances:
            table = runtime.ProfileTable.from_workflow(inst.workflow)
            j = table.model_index(card.name)
            tok = lat = 0.0
            for i, sid in enumerate(table.subtask_ids):
                if sid.startswith("prove:"):
                    lo, hi = table.pool_start[i, j], table.pool_start[i, j] + table.pool_len[i, j]
                    tok += float(np.minimum(table.pool_tokens[lo:hi], table.max_tokens[j]).mean())
                    lat += float(table.pool_latency[lo:hi].mean())
            tokens.append(tok)
            times.append(lat)
        rows.append(medians(f"generated pools, {card.name}, one attempt per prove step", tokens, times))
    return rows
