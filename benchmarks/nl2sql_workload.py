"""The NL2SQL repair workload (the VineLM paper's NL2SQL workflow, §1 and §5.1) on simulated models.

One loop subtask: generate SQL for a German question about a Spider dev database, execute it (a tool stage), and
repair it with the execution feedback, up to ``horizon`` invocations, each on any of the chosen models. Every
invocation after the first failure is a repair whoever failed (``repairs="any"``): the repair prompt shows the failed
query and what :mod:`tools.sql` said about it.

**Outcomes are simulated, not recorded.** Each question q has a latent difficulty ``d_q = h_q + NOISE * e_q``, where
``h_q`` is its Spider hardness (easy 0, medium 1, hard 2, extra 3, by :func:`tools.spider.hardness`) and
``e_q ~ N(0, 1)`` is drawn from ``(seed, question id)``. Model m's first generation on q is right with probability
``Phi(a_m - SLOPE * d_q)`` and a repair by m with ``Phi(a_m + REPAIR_SHIFT - SLOPE * d_q)``, each a fixed coin of
``(seed, question id, model, kind)``: a run that draws q sees the same outcome every time m generates (or repairs) it.
The shared ``d_q`` makes failures informative: a question one model missed is harder for every model.

Parameters (all chosen; none measured on this German data):

- ``MARGINAL_SLOPE = 0.5`` and ``NOISE = 1.5``: the probit of a model's accuracy drops by 0.5 per hardness level
  (``SLOPE = 0.5 / sqrt(1 - 0.25 * NOISE**2) = 0.756`` on the latent scale), as across Spider's levels for few-shot
  GPT-4 and Codex in the DIN-SQL paper (Pourreza & Rafiei 2023, Spider dev EX by hardness, from memory, not checked
  here: GPT-4 86.7/73.1/59.2/31.9, Codex 84.7/67.3/47.1/26.5, probit slopes 0.50 and 0.55 per level). NOISE is how
  much questions of one level differ: larger makes a failure stronger evidence of a hard question.
- ``REPAIR_SHIFT = -0.8``: repairs are weaker than first attempts, as in the recorded reflection data, where a retry
  after a failure succeeds at 12-30%. With it, a model's repair after its own failure is right 16-27% of the time
  on the full data (:func:`accuracy_by_hardness`). Sensitivity (range over the 8 models): REPAIR_SHIFT -0.5 gives
  21-35%, -1.0 gives 13-24%; NOISE 1.0 (SLOPE 0.577) with -0.8 gives 22-36%.
- ``a_m``: solved so that model m's first-attempt accuracy over Spider dev's hardness mix (24/43/17/16% easy to
  extra) is ``MODELS[m].target``: 0.60 to 0.83, ranking the eight models of the paper's NL2SQL-8 by plausible
  strength around Codex-davinci's 67.0% Spider dev EX (Rajkumar et al. 2022) and DIN-SQL GPT-4's 82.8% (from
  memory). Chosen, not measured; the machine-translated schemas would cost real models a few points.
- Output tokens: the gold query's sqlglot tokens x ``BPE_PER_TOKEN = 1.6`` (German identifiers split into several
  BPE tokens) + the model's ``overhead`` (a fence, and for reasoning models their thinking), chosen. Input tokens: the
  prompt (instructions + schema + question) at ``CHARS_PER_TOKEN = 3.2``, median over the split.
- Prices: genai-prices list prices of the real models in :data:`MODELS` (provider, id given there).
- Speeds: round public figures of each model's usual API (chosen; the benchmark deadline decides only ordering).
  **The SQL execution tool stage** costs no money and ``SQL_EXEC_S = 0.01`` s (the slowest gold query here took
  5.6 ms, median 0.15 ms, opening the database included); ontime has no tool-stage field yet, so it is added to
  every model's ``ttft_s``.

Runs draw a question of the *test* split; planners plan with the same simulation over the disjoint *profile* split
(1 question in 4 by a stable hash of its id, :func:`benchmarks.vine_workloads.split_of`). Nothing a planner reads comes
from a test question. The data: :data:`SLICE` (58 questions on two databases, shipped) or a full ``nl2sql/`` folder.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from adapters.pricing import list_price
from benchmarks._report import EXAMPLES
from benchmarks.vine_workloads import Workload, split_of
from runtime.types import LatentClasses, Loop, ModelSpec, PoolProfile, Subtask, UsageError, Workflow
from tools.spider import (
    HARDNESS,
    hardness,
    load_questions,
    load_schemas,
    parse,
    quote_keywords,
    sql_tokens,
    wrong_variants,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tools.spider import Question, Schema

__all__ = [
    "DEFAULT_MODELS",
    "MODELS",
    "SLICE",
    "VARIANTS",
    "Outcomes",
    "SimModel",
    "accuracy_by_hardness",
    "data_root",
    "example_spec",
    "nl2sql",
    "nl2sql_variant",
    "simulate",
]

SLICE = EXAMPLES / "nl2sql"
MARGINAL_SLOPE = 0.5
NOISE = 1.5
SLOPE = MARGINAL_SLOPE / math.sqrt(1 - (MARGINAL_SLOPE * NOISE) ** 2)  # 0.756
REPAIR_SHIFT = -0.8
BPE_PER_TOKEN = 1.6
CHARS_PER_TOKEN = 3.2
SQL_EXEC_S = 0.01
MAX_TOKENS = 2048
SPIDER_MIX = (0.24, 0.43, 0.17, 0.16)  # Spider dev's hardness mix (248/446/174/166 of 1034)
INSTRUCTIONS = (
    "Schreibe eine SQLite-Abfrage, die die Frage beantwortet. Antworte nur mit der Abfrage in einem ```sql-Block."
)
_N = NormalDist()


@dataclass(frozen=True, slots=True)
class SimModel:
    """A simulated model standing for a real one: its list price's id, target accuracy, length and speed."""

    price_id: tuple[str, str]  # (genai-prices provider, model id)
    target: float  # first-attempt accuracy over Spider dev's hardness mix
    overhead: int  # output tokens besides the query
    tokens_per_s: float
    ttft_s: float

    @property
    def skill(self) -> float:
        """``a_m``: the probit intercept that gives ``target`` over :data:`SPIDER_MIX`."""
        scale = math.sqrt(1 + (SLOPE * NOISE) ** 2)

        def acc(a: float) -> float:
            return sum(w * _N.cdf((a - SLOPE * h) / scale) for h, w in enumerate(SPIDER_MIX))

        lo, hi = -10.0, 10.0
        for _ in range(80):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if acc(mid) < self.target else (lo, mid)
        return (lo + hi) / 2


# The paper's NL2SQL-8 models (§5.1).
MODELS: dict[str, SimModel] = {
    "deepseek-v3.2": SimModel(("openrouter", "deepseek/deepseek-v3.2"), 0.76, 20, 30.0, 1.5),
    "gemma-3-27b": SimModel(("openrouter", "google/gemma-3-27b-it"), 0.60, 12, 60.0, 0.5),
    "qwen3-32b": SimModel(("groq", "qwen/qwen3-32b"), 0.66, 250, 400.0, 0.3),
    "gpt-oss-120b": SimModel(("groq", "openai/gpt-oss-120b"), 0.72, 150, 500.0, 0.3),
    "llama-3.3-70b": SimModel(("groq", "llama-3.3-70b-versatile"), 0.64, 12, 250.0, 0.3),
    "glm-4.7": SimModel(("zai", "glm-4.7"), 0.77, 200, 60.0, 1.0),
    "kimi-k2.5": SimModel(("moonshotai", "kimi-k2.5"), 0.79, 200, 40.0, 1.2),
    "claude-sonnet-4.6": SimModel(("anthropic", "claude-sonnet-4-6"), 0.83, 20, 60.0, 1.0),
}
DEFAULT_MODELS = ("gemma-3-27b", "qwen3-32b", "glm-4.7", "claude-sonnet-4.6")
# name -> (models, horizon): the default (4 models), and the paper's NL2SQL-2 and NL2SQL-8.
VARIANTS: dict[str, tuple[tuple[str, ...], int]] = {
    "nl2sql": (DEFAULT_MODELS, 3),
    "nl2sql-2": (("gemma-3-27b", "claude-sonnet-4.6"), 4),
    "nl2sql-8": (tuple(MODELS), 3),
}


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Simulated outcomes: per model, whether its first generation / its repair of question q is right."""

    questions: tuple[str, ...]
    levels: tuple[int, ...]  # Spider hardness, 0 (easy) to 3 (extra)
    first: dict[str, tuple[bool, ...]]
    repair: dict[str, tuple[bool, ...]]


def data_root(data_dir: Path | None) -> Path:
    """The folder holding ``spider_dev_de.jsonl``: the shipped slice, ``data_dir/nl2sql`` or ``data_dir`` itself.

    Raises:
        UsageError: neither holds the questions.
    """
    if data_dir is None:
        return SLICE
    for root in (Path(data_dir) / "nl2sql", Path(data_dir)):
        if (root / "spider_dev_de.jsonl").is_file():
            return root
    raise UsageError(f"no nl2sql/spider_dev_de.jsonl under {data_dir}")


def simulate(questions: Sequence[Question], schemas: dict[str, Schema], models: Sequence[str], seed: int) -> Outcomes:
    """Each model's simulated outcomes on ``questions`` (the module docstring gives the model).

    Raises:
        UsageError: an unknown model.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise UsageError(f"unknown models {', '.join(unknown)} (known: {', '.join(MODELS)})")
    levels = tuple(HARDNESS.index(hardness(q.gold_sql, schemas.get(q.db_id))) for q in questions)
    first: dict[str, tuple[bool, ...]] = {}
    repair: dict[str, tuple[bool, ...]] = {}
    diffs = [h + NOISE * random.Random(f"{seed}:{q.id}").gauss() for q, h in zip(questions, levels, strict=True)]
    for m in models:
        a = MODELS[m].skill
        for kind, shift, out in (("first", 0.0, first), ("repair", REPAIR_SHIFT, repair)):
            out[m] = tuple(
                random.Random(f"{seed}:{q.id}:{m}:{kind}").random() < _N.cdf(a + shift - SLOPE * d)
                for q, d in zip(questions, diffs, strict=True)
            )
    return Outcomes(tuple(q.id for q in questions), levels, first, repair)


def nl2sql(
    data_dir: Path | None = None, models: Sequence[str] = DEFAULT_MODELS, horizon: int = 3, seed: int = 0
) -> Workload:
    """The NL2SQL repair workload on the shipped slice (``data_dir=None``) or a full ``nl2sql/`` data folder.

    Raises:
        UsageError: an unknown model, unreadable data, a horizon < 1, or a split with no question.
    """
    if not (isinstance(horizon, int) and horizon >= 1):
        raise UsageError(f"horizon={horizon!r} must be an integer >= 1")
    root = data_root(data_dir)
    questions = load_questions(root / "spider_dev_de.jsonl")
    schemas = load_schemas(root / "tables.json")
    models = tuple(models)
    outcomes = simulate(questions, schemas, models, seed)
    parts = {s: [i for i, q in enumerate(questions) if split_of(("nl2sql", q.id)) == s] for s in ("profile", "test")}
    if not parts["profile"] or not parts["test"]:
        raise UsageError(f"{root}: too few questions to split into profile and test ({len(questions)})")
    specs = {m: _model(m) for m in models}

    def workflow(idx: list[int], tag: str) -> Workflow:
        first = {m: [outcomes.first[m][i] for i in idx] for m in models}
        repair = {m: [outcomes.repair[m][i] for i in idx] for m in models}
        history = LatentClasses.replay(first, repair, repairs="any")
        gold = [sql_tokens(questions[i].gold_sql) for i in idx]
        pools = {
            m: PoolProfile(tuple((ok, _output_tokens(m, g), None) for ok, g in zip(first[m], gold, strict=True)))
            for m in models
        }
        prompts = [_prompt_chars(questions[i], schemas.get(questions[i].db_id)) for i in idx]
        inputs = round(statistics.median(prompts) / CHARS_PER_TOKEN)
        loop = Subtask(id="sql", deps=(), input_tokens=inputs, profiles=pools, loop=Loop(horizon), history=history)
        return Workflow(name=f"nl2sql-{tag}", models=specs, subtasks=(loop,))

    name = next((k for k, (ms, h) in VARIANTS.items() if ms == models and h == horizon), "nl2sql")
    return Workload(
        name, workflow(parts["test"], "test"), workflow(parts["profile"], "profile"),
        len(parts["test"]), len(parts["profile"]),
    )  # fmt: skip


def nl2sql_variant(name: str, data_dir: Path | None = None, seed: int = 0) -> Workload:
    """One of :data:`VARIANTS` (``nl2sql``, ``nl2sql-2``, ``nl2sql-8``).

    Raises:
        UsageError: an unknown variant.
    """
    if name not in VARIANTS:
        raise UsageError(f"unknown NL2SQL variant {name!r} (known: {', '.join(VARIANTS)})")
    models, horizon = VARIANTS[name]
    return nl2sql(data_dir, models=models, horizon=horizon, seed=seed)


def accuracy_by_hardness(outcomes: Outcomes) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per model and hardness level (and ``all``): (first-attempt accuracy, accuracy of its repair after its own
    failed first attempt, number of questions)."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for m, firsts in outcomes.first.items():
        row = {}
        for level in (*HARDNESS, "all"):
            idx = [i for i, h in enumerate(outcomes.levels) if level in ("all", HARDNESS[h])]
            failed = [i for i in idx if not firsts[i]]
            acc = sum(firsts[i] for i in idx) / len(idx) if idx else math.nan
            rep = sum(outcomes.repair[m][i] for i in failed) / len(failed) if failed else math.nan
            row[level] = (acc, rep, len(idx))
        out[m] = row
    return out


def _model(name: str) -> ModelSpec:
    sim = MODELS[name]
    try:
        inp, out = list_price(*sim.price_id)
    except LookupError as exc:
        raise UsageError(f"no list price for {name} ({sim.price_id}): {exc}") from None
    return ModelSpec(name=name, provider="sim", input_price_per_mtok=inp, output_price_per_mtok=out,
                     tokens_per_s=sim.tokens_per_s, ttft_s=sim.ttft_s + SQL_EXEC_S,
                     max_output_tokens=MAX_TOKENS)  # fmt: skip


def _output_tokens(model: str, gold_tokens: int) -> int:
    return min(MAX_TOKENS, math.ceil(max(1, gold_tokens) * BPE_PER_TOKEN) + MODELS[model].overhead)


def _prompt_chars(q: Question, schema: Schema | None) -> int:
    return len(INSTRUCTIONS) + len(schema.text() if schema else "") + len(q.question_de) + 2


def example_spec(question_id: str = "dev-0053", data_dir: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """A real-endpoint spec for one question (examples/nl2sql/pets.json): two OpenAI-compatible models standing for
    gemma-3-27b and claude-sonnet-4.6, an SQL-execution verifier with the gold query, ``reference`` the gold query
    rewritten by sqlglot (another text, the same result: only execution can tell it is right) and ``wrong`` its
    mutated variants, so ``ontime serve-sim`` answers with one or the other.

    Raises:
        UsageError: no such question.
    """
    root = data_root(data_dir)
    question = next((q for q in load_questions(root / "spider_dev_de.jsonl") if q.id == question_id), None)
    if question is None:
        raise UsageError(f"no question {question_id!r} in {root}")
    schema = load_schemas(root / "tables.json")[question.db_id]
    gold = quote_keywords(question.gold_sql, schema)
    database = f"databases/{question.db_id}.sqlite"
    wrong = wrong_variants(root / database, gold, schema, seed=seed)
    rewritten = parse(gold, schema).sql(dialect="sqlite", pretty=True)
    prompt = f"Schema:\n{schema.text()}\n\nFrage: {question.question_de}"
    models = {}
    for alias, name, p in (("small", "gemma-3-27b", 0.5), ("large", "claude-sonnet-4.6", 0.85)):
        spec = _model(name)
        models[alias] = {
            "provider": "openai", "model": name, "base_url": "http://127.0.0.1:8765/v1",
            "input_price_per_mtok": spec.input_price_per_mtok, "output_price_per_mtok": spec.output_price_per_mtok,
            "tokens_per_s": spec.tokens_per_s, "ttft_s": spec.ttft_s, "max_output_tokens": 400, "timeout_s": 10,
        }  # fmt: skip
        models[alias]["p"] = p
    tokens = _output_tokens("claude-sonnet-4.6", sql_tokens(gold))
    subtask = {
        "id": "sql", "input_tokens": round(_prompt_chars(question, schema) / CHARS_PER_TOKEN), "loop": {"horizon": 3},
        "system": INSTRUCTIONS, "prompt": prompt,
        "verifier": {"sql": {"database": database, "gold": gold, "max_rows": 1000}, "timeout_s": 2},
        "reference": f"```sql\n{rewritten}\n```", "wrong": [f"```sql\n{v.sql}\n```" for v in wrong],
        "profiles": {a: {"p": m.pop("p"), "output_tokens": {"mean": tokens, "std": tokens / 4}}
                     for a, m in models.items()},
    }  # fmt: skip
    return {"name": f"nl2sql_{question.db_id}", "models": models, "subtasks": [subtask]}
