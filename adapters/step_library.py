"""The steps the simulated meta-LLM writes workflows from: code templates per task kind, their grammar and prior.

A workflow is the paper's step-annotated program (App. H): a preamble (imports, small helpers, ``DEFAULT_MODEL``,
``async def workflow(problem)`` and the running variables it starts with), then one chunk per step, each opening
with ``    # Step <n>: <what>``, then ``return answer`` (``return solution`` for code). Every template reads and
writes only the running variables, so steps compose in any order the grammar allows:

- exam, math, qa: ``context`` (the question, plus a planning step's notes), ``answer`` (the current answer),
  ``answers`` (every answer so far: what agreement is judged on), ``rejected`` (a verification said no).
- code: ``solution`` (the current solution), ``candidates`` (solutions not yet tested), ``report`` (the last
  test report).

The final ``return`` belongs to no step: a projection to t steps ends with step t, and whoever extends a workflow
moves the return after its new last step (:func:`assemble`).

Grammar (a step is allowed at position p when its condition holds on the steps before it):

========== ==========================================================================================
step       allowed when
========== ==========================================================================================
decompose  p = 1 and T >= 2 (a planning call whose notes go into every later prompt)
answer,    always (they produce an answer); at p = T they are the only steps allowed if no answer exists
cot, vote
escalate,  two answers could disagree (two or more answers so far) or a verification has run: the
reconsider workflow's own signal, never the answer key, decides at run time whether they call a model
verify,    an answer exists (extract: and the step before is not extract)
revise,
extract
generate   always (code)
test       candidates exist that have not been tested
fix,       the current candidates have a test report
fallback
========== ==========================================================================================

A workflow may stop after step p only when an answer (code: a candidate) exists. How steps, models and sizes are
drawn is the prior, stated in :mod:`adapters.sim_meta_llm`; its numbers live here (:data:`PRIOR`, :data:`STOP`,
:data:`VOTE_N`, :data:`GENERATE_N`, :data:`P_PANEL`, :data:`P_OWN_MODEL`).
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import random
    from collections.abc import Mapping, Sequence

__all__ = [
    "GENERATE_N",
    "KINDS",
    "PRIOR",
    "P_OWN_MODEL",
    "P_PANEL",
    "STOP",
    "TASK_KINDS",
    "VOTE_N",
    "Model",
    "Program",
    "Step",
    "allowed",
    "assemble",
    "can_stop",
    "describe",
    "draw_models",
    "draw_rest",
    "draw_step",
    "parse_program",
    "preamble",
    "recognize",
    "render_step",
    "stop_probability",
    "valid",
]

_K = TypeVar("_K")
TASK_KINDS = ("exam", "math", "qa", "code")
_ANSWERING = ("answer", "cot", "vote")  # the steps that produce an answer from nothing
KINDS: Mapping[str, tuple[str, ...]] = {
    "exam": ("answer", "cot", "vote", "escalate", "reconsider", "verify", "decompose", "extract"),
    "math": ("answer", "cot", "vote", "revise", "verify", "extract"),
    "qa": ("answer", "cot", "vote", "revise", "verify", "extract"),
    "code": ("generate", "test", "fix", "fallback"),
}

# P(next step kind | previous step kind): rows sum to 1; the grammar removes the steps it forbids and the rest
# are renormalized. "other" is a step the library does not recognize (a foreign chunk kept as written).
_EXAM: dict[str, dict[str, float]] = {
    "start": {"answer": 0.25, "cot": 0.30, "vote": 0.25, "decompose": 0.20},
    "decompose": {"answer": 0.25, "cot": 0.40, "vote": 0.35},
    "answer": {
        "answer": 0.15,
        "cot": 0.10,
        "vote": 0.15,
        "escalate": 0.20,
        "reconsider": 0.05,
        "verify": 0.20,
        "extract": 0.15,
    },
    "cot": {
        "answer": 0.10,
        "cot": 0.10,
        "vote": 0.15,
        "escalate": 0.20,
        "reconsider": 0.05,
        "verify": 0.25,
        "extract": 0.15,
    },
    "vote": {
        "answer": 0.05,
        "cot": 0.05,
        "vote": 0.05,
        "escalate": 0.35,
        "reconsider": 0.15,
        "verify": 0.15,
        "extract": 0.20,
    },
    "escalate": {"cot": 0.05, "vote": 0.10, "escalate": 0.10, "reconsider": 0.15, "verify": 0.30, "extract": 0.30},
    "reconsider": {"cot": 0.05, "vote": 0.10, "escalate": 0.15, "reconsider": 0.05, "verify": 0.25, "extract": 0.40},
    "verify": {"answer": 0.05, "cot": 0.05, "vote": 0.10, "escalate": 0.35, "reconsider": 0.35, "extract": 0.10},
    "extract": {"answer": 0.10, "cot": 0.10, "vote": 0.20, "escalate": 0.20, "reconsider": 0.10, "verify": 0.30},
}
_EXAM["other"] = _EXAM["answer"]
_SOLVE: dict[str, dict[str, float]] = {
    "start": {"answer": 0.30, "cot": 0.40, "vote": 0.30},
    "answer": {"answer": 0.05, "cot": 0.10, "vote": 0.20, "revise": 0.25, "verify": 0.20, "extract": 0.20},
    "cot": {"answer": 0.05, "cot": 0.05, "vote": 0.20, "revise": 0.25, "verify": 0.25, "extract": 0.20},
    "vote": {"cot": 0.05, "vote": 0.05, "revise": 0.25, "verify": 0.30, "extract": 0.35},
    "revise": {"answer": 0.05, "cot": 0.05, "vote": 0.15, "revise": 0.10, "verify": 0.30, "extract": 0.35},
    "verify": {"answer": 0.05, "cot": 0.10, "vote": 0.20, "revise": 0.55, "extract": 0.10},
    "extract": {"answer": 0.10, "cot": 0.10, "vote": 0.25, "revise": 0.25, "verify": 0.30},
}
_SOLVE["other"] = _SOLVE["answer"]
_CODE: dict[str, dict[str, float]] = {
    "start": {"generate": 1.0},
    "generate": {"generate": 0.10, "test": 0.90},
    "test": {"generate": 0.10, "fix": 0.60, "fallback": 0.30},
    "fix": {"generate": 0.10, "test": 0.90},
    "fallback": {"generate": 0.10, "test": 0.90},
}
_CODE["other"] = _CODE["generate"]
PRIOR: Mapping[str, Mapping[str, Mapping[str, float]]] = {"exam": _EXAM, "math": _SOLVE, "qa": _SOLVE, "code": _CODE}

STOP = (0.15, 0.30, 0.45, 0.60, 0.75)  # P(stop after step p) for p = 1..5 when stopping is allowed; 0.9 after
VOTE_N = {3: 0.50, 5: 0.35, 7: 0.15}  # samples of a self-consistency vote on one model
GENERATE_N = {1: 0.40, 2: 0.30, 3: 0.30}  # candidate solutions per code generation
P_PANEL = 0.5  # a vote asks one sample each of 2-5 models (uniform size) rather than n samples of one
P_OWN_MODEL = 0.8  # reconsider / revise ask the model that gave the current answer, when one did


@dataclass(frozen=True, slots=True)
class Model:
    """A model of the prompt's ``Models:`` list, with its prices in dollars per million tokens."""

    name: str
    input_price: float
    output_price: float

    @property
    def price(self) -> float:
        """What a call costs, roughly: the weights of the model draws use it (floored at one cent)."""
        return max(0.01, self.input_price + self.output_price)


@dataclass(frozen=True, slots=True)
class Step:
    """One step: its kind, the models it calls (a vote's panel has several) and its sample count."""

    kind: str
    models: tuple[str, ...] = ()
    n: int = 1


@dataclass(frozen=True, slots=True)
class _State:
    """What the steps so far leave behind, as far as the grammar cares."""

    answers: int = 0  # answers in the pool (code: 1 once candidates exist)
    checked: bool = False  # a verification ran since the last escalate / reconsider / revise
    tested: bool = False  # code: the current candidates have a test report
    author: str | None = None  # the one model behind the current answer, if one
    used: frozenset[str] = frozenset()  # models that gave answers


def _after(state: _State, step: Step) -> _State:
    k, one = step.kind, step.models[0] if len(step.models) == 1 else None
    if k == "other":  # a foreign step: taken to leave an answer (code: untested candidates) and nothing else
        return replace(state, answers=state.answers + 1, author=None, tested=False)
    if k in ("answer", "cot", "revise"):
        return replace(
            state,
            answers=state.answers + 1,
            author=one,
            used=state.used | set(step.models),
            checked=state.checked and k != "revise",
        )
    if k == "vote":
        return replace(
            state, answers=state.answers + max(step.n, len(step.models)), author=one, used=state.used | set(step.models)
        )
    if k in ("escalate", "reconsider"):
        return replace(state, answers=1, checked=False, author=one, used=state.used | set(step.models))
    if k == "verify":
        return replace(state, checked=True)
    if k in ("generate", "fix", "fallback"):
        return replace(state, answers=1, tested=False)
    if k == "test":
        return replace(state, tested=True)
    return state  # decompose, extract


def _replay(steps: Sequence[Step]) -> _State:
    state = _State()
    for step in steps:
        state = _after(state, step)
    return state


def allowed(task: str, before: Sequence[Step], position: int, limit: int) -> tuple[str, ...]:
    """The step kinds the grammar allows at ``position`` (1-based) after ``before``, with at most ``limit`` steps."""
    state, prev = _replay(before), before[-1].kind if before else "start"

    def ok(kind: str) -> bool:
        if position == limit and state.answers == 0 and kind not in (*_ANSWERING, "generate"):
            return False
        if kind == "decompose":
            return position == 1 and limit >= 2
        if kind in ("escalate", "reconsider"):
            return state.answers >= 2 or state.checked
        if kind in ("verify", "revise"):
            return state.answers >= 1
        if kind == "extract":
            return state.answers >= 1 and prev != "extract"
        if kind == "test":
            return state.answers >= 1 and not state.tested
        if kind in ("fix", "fallback"):
            return state.tested
        return True

    return tuple(k for k in KINDS[task] if ok(k))


def can_stop(steps: Sequence[Step]) -> bool:
    """Whether a workflow may end after ``steps``: it has an answer (code: a candidate)."""
    return bool(steps) and _replay(steps).answers >= 1


def valid(task: str, steps: Sequence[Step], limit: int) -> bool:
    """Whether every step is allowed where it stands and the workflow may end after the last."""
    if not 1 <= len(steps) <= limit:
        return False
    for p, step in enumerate(steps, 1):
        if step.kind != "other" and step.kind not in allowed(task, steps[: p - 1], p, limit):
            return False
    return can_stop(steps)


def stop_probability(steps: Sequence[Step]) -> float:
    """P(the workflow ends after ``steps``) under the prior: 1 after extract, the :data:`STOP` table otherwise."""
    if not can_stop(steps):
        return 0.0
    if steps[-1].kind == "extract":
        return 1.0
    return STOP[len(steps) - 1] if len(steps) <= len(STOP) else 0.9


def _pick(weights: Mapping[_K, float], rng: random.Random) -> _K:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def draw_models(
    models: Sequence[Model],
    rng: random.Random,
    *,
    strong: bool = False,
    k: int = 1,
    avoid: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """k distinct models: weight price^-1/2 (cheap ones more likely), or price^+1/2 when ``strong``.

    Models in ``avoid`` are left out while enough others remain.
    """
    pool = [m for m in models if m.name not in avoid]
    pool = pool if len(pool) >= k else list(models)
    chosen: list[str] = []
    for _ in range(min(k, len(pool))):
        left = [m for m in pool if m.name not in chosen]
        weights = [m.price**0.5 if strong else m.price**-0.5 for m in left]
        chosen.append(rng.choices(left, weights=weights)[0].name)
    return tuple(chosen)


def draw_step(
    task: str,
    before: Sequence[Step],
    position: int,
    limit: int,
    models: Sequence[Model],
    rng: random.Random,
    *,
    kinds: Sequence[str] | None = None,
) -> Step | None:
    """One step drawn from the prior at ``position`` after ``before`` (None if the grammar allows none).

    ``kinds`` restricts the draw (a refinement that wants a check); the prior's weights still rank them.
    """
    ok = [k for k in allowed(task, before, position, limit) if kinds is None or k in kinds]
    if not ok:
        return None
    row = PRIOR[task][before[-1].kind if before else "start"]
    weights = {k: row.get(k, 0.0) for k in ok}
    if sum(weights.values()) == 0:
        weights = dict.fromkeys(ok, 1.0)
    kind = _pick(weights, rng)
    return _draw_params(kind, _replay(before), models, rng)


def _draw_params(kind: str, state: _State, models: Sequence[Model], rng: random.Random) -> Step:
    if kind in ("test", "extract"):
        return Step(kind)
    if kind == "vote":
        if len(models) >= 2 and rng.random() < P_PANEL:
            size = rng.randint(2, min(5, len(models)))
            return Step(kind, draw_models(models, rng, k=size))
        return Step(kind, draw_models(models, rng), _pick(VOTE_N, rng))
    if kind == "generate":
        return Step(kind, draw_models(models, rng), _pick(GENERATE_N, rng))
    if kind in ("reconsider", "revise") and state.author is not None and rng.random() < P_OWN_MODEL:
        return Step(kind, (state.author,))
    if kind == "escalate":
        return Step(kind, draw_models(models, rng, strong=True, avoid=state.used))
    return Step(kind, draw_models(models, rng, strong=kind in ("verify", "fallback")))


def draw_rest(task: str, before: Sequence[Step], limit: int, models: Sequence[Model], rng: random.Random) -> list[Step]:
    """Steps drawn from the prior after ``before`` until the workflow stops or has ``limit`` steps."""
    steps = list(before)
    while len(steps) < limit:
        p = stop_probability(steps)
        if p > 0 and rng.random() < p:
            break
        step = draw_step(task, steps, len(steps) + 1, limit, models, rng)
        if step is None:
            break
        steps.append(step)
    return steps[len(before) :]


# ---- rendering -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    """How the prompts of an answer task read."""

    role: str  # the persona
    fmt: str  # the answer format every answering prompt states
    ask: str  # a direct question
    think: str  # a step-by-step one
    form: str  # the format's name, for the extract step's description


_TEXT = {
    "exam": _Text(
        "careful test taker",
        "End your reply with 'Answer: <letter>'.",
        "Choose the correct option.",
        "Think step by step, then choose the correct option.",
        "'Answer: <letter>'",
    ),
    "math": _Text(
        "math expert",
        "Put the final answer in \\boxed{}.",
        "Solve the problem.",
        "Solve the problem step by step, checking each calculation.",
        "\\boxed{}",
    ),
    "qa": _Text(
        "precise reader",
        "End your reply with 'Answer: <short answer>'.",
        "Answer the question.",
        "Find the facts the question needs step by step, then answer it.",
        "'Answer: <short answer>'",
    ),
}

_DESCRIBE = {
    "answer": "Answer directly with {m}",
    "cot": "Reason step by step with {m}",
    "vote": "Self-consistency vote over {n} samples of {m}",
    "panel": "Majority vote of {k} models: {ms}",
    "escalate": "Escalate to {m} if the answers disagree or a check failed",
    "reconsider": "Reconsider the answer with {m} if the answers disagree or a check failed",
    "revise": "Reflect on the answer and revise it with {m}",
    "verify": "Verify the proposed answer with {m}",
    "decompose": "Break the question down with {m} before answering",
    "extract": "Normalize the final answer to {f}",
    "generate": "Generate {n} candidate {solutions} with {m}",
    "test": "Run the public tests and return the first passing solution",
    "fix": "Fix the failing solution from its test report with {m}",
    "fallback": "Fall back to a fresh attempt by {m} that sees the test report",
}
_RECOGNIZE = [
    (re.compile("^" + re.escape(text.split("{")[0])), "vote" if kind == "panel" else kind)
    for kind, text in _DESCRIBE.items()
]


def describe(task: str, step: Step) -> str:
    """The step's ``# Step n:`` description (what a reader, and :func:`recognize`, sees)."""
    kind = "panel" if step.kind == "vote" and len(step.models) > 1 else step.kind
    fmt = _TEXT[task].form if task in _TEXT else ""
    m = step.models[0] if step.models else ""
    return _DESCRIBE[kind].format(
        m=m,
        n=step.n,
        k=len(step.models),
        ms=", ".join(step.models),
        f=fmt,
        solutions="solution" if step.n == 1 else "solutions",
    )


_BODY = {  # after the call; exam, math and qa share them through the preamble's final / as_answer helpers
    "answer": "    answer = replies[0]\n    answers.append(answer)",
    "vote": "    answers.extend(replies)\n    winner = majority(replies)\n"
    '    answer = f"Majority of {len(replies)} answers.\\n{as_answer(winner)}" if winner else replies[0]',
    "settle": "        answer = replies[0]\n        answers = [answer]\n        rejected = False",
    "code": "    candidates = [code_of(r) for r in replies]\n    solution = candidates[0]",
}
_lit = json.dumps  # a Python string literal (JSON's escapes are Python's)


def _call(
    out: str,
    messages: Sequence[str],
    *,
    temperature: float,
    role: str,
    instructions: str,
    model: str,
    n: int = 1,
    indent: int = 4,
) -> str:
    """A ``call_llm`` statement as the paper's workflows write it: keyword arguments, one per line.

    ``messages`` are Python expressions (names, literals, f-strings); a long list gets one per line.
    """
    pad = " " * indent
    listed = "[" + ", ".join(messages) + "]"
    if indent + len(listed) > 90:
        listed = "[\n" + "".join(f"{pad}        {m},\n" for m in messages) + f"{pad}    ]"
    args = (
        f"messages={listed}",
        f"temperature={temperature}",
        f"num_of_response={n}",
        f"agent_role={_lit(role)}",
        f"instructions={_lit(instructions)}",
        f"model={model}",
    )
    return f"{pad}{out}{' = await ' if out else ''}call_llm(\n" + "".join(f"{pad}    {a},\n" for a in args) + f"{pad})"


def render_step(task: str, step: Step, number: int) -> str:
    """The step's code chunk, numbered ``number``, without a trailing newline."""
    head = f"    # Step {number}: {describe(task, step)}"
    model = _lit(step.models[0]) if step.models else "DEFAULT_MODEL"
    if task == "code":
        return f"{head}\n{_render_code(step, model)}"
    text = _TEXT[task]
    role, fmt, ask = text.role, text.fmt, text.ask
    k = step.kind
    if k in ("answer", "cot"):
        lead = ask if k == "answer" else text.think
        how = "Answer directly and briefly." if k == "answer" else "Show your reasoning before the final answer."
        call = _call(
            "replies", ["context", _lit(f"{lead} {fmt}")], temperature=0.0, role=role, instructions=how, model=model
        )
        return f"{head}\n{call}\n{_BODY['answer']}"
    if k == "vote":
        msgs = ["context", _lit(f"{text.think} {fmt}")]
        how = "Reason independently: the answers are compared by majority vote."
        if len(step.models) == 1:
            call = _call("replies", msgs, temperature=0.7, n=step.n, role=role, instructions=how, model=model)
            return f"{head}\n{call}\n{_BODY['vote']}"
        call = _call("", msgs, temperature=0.0, role=role, instructions=how, model="name", indent=12)
        gather = (
            f"    panel = {_lit(list(step.models))}\n    batches = await asyncio.gather(\n        *(\n{call}\n"
            "            for name in panel\n        )\n    )\n    replies = [batch[0] for batch in batches]"
        )
        return f"{head}\n{gather}\n{_BODY['vote']}"
    if k == "escalate":
        how = "Other solvers disagreed on this question: work it out carefully yourself."
        call = _call(
            "replies",
            ["context", _lit(f"{ask} {fmt}")],
            temperature=0.0,
            role=role,
            instructions=how,
            model=model,
            indent=8,
        )
        return f"{head}\n    if in_doubt(answers, rejected):\n{call}\n{_BODY['settle']}"
    if k == "reconsider":
        tell = _lit(f"Your answer may be wrong. Reconsider the question carefully. {fmt}")
        how = "Check your earlier reasoning for mistakes before answering again."
        call = _call(
            "replies",
            ["context", 'f"Your previous answer: {final(answer)}"', tell],
            temperature=0.0,
            role=role,
            instructions=how,
            model=model,
            indent=8,
        )
        return f"{head}\n    if in_doubt(answers, rejected):\n{call}\n{_BODY['settle']}"
    if k == "revise":
        tell = _lit(f"If the solution is right, restate its final answer; otherwise correct it. {fmt}")
        call = _call(
            "replies",
            ["context", 'f"Proposed solution:\\n{answer}"', "concern", tell],
            temperature=0.0,
            role=role,
            instructions="Review the solution critically before answering.",
            model=model,
        )
        concern = '"A checker judged this answer incorrect." if rejected else "Check every step for mistakes."'
        return f"{head}\n    concern = {concern}\n{call}\n{_BODY['answer']}\n    rejected = False"
    if k == "verify":
        tell = _lit(
            "Is the proposed answer correct? Check it independently. "
            "End your reply with 'Verdict: correct' or 'Verdict: incorrect'."
        )
        call = _call(
            "verdicts",
            ["context", 'f"Proposed answer: {final(answer)}"', tell],
            temperature=0.0,
            role="strict grader",
            instructions="Judge the answer on its merits; do not be swayed by it.",
            model=model,
        )
        return f'{head}\n{call}\n    rejected = "verdict: incorrect" in verdicts[0].lower()'
    if k == "decompose":
        tell = "Do not answer yet. List the key concepts, facts and reasoning steps needed to answer this question."
        call = _call(
            "notes",
            ["problem", _lit(tell)],
            temperature=0.2,
            role="analytical planner",
            instructions="Plan the solution; give no final answer.",
            model=model,
        )
        return f'{head}\n{call}\n    context = f"{{problem}}\\n\\nNotes from a first analysis:\\n{{notes[0]}}"'
    if k == "extract":
        tell = _lit(f"State the final answer this reply gives. Reply with nothing else. {fmt}")
        call = _call(
            "replies",
            ['f"Reply:\\n{answer}"', tell],
            temperature=0.0,
            role="precise extractor",
            instructions="Copy the chosen answer; do not solve anything.",
            model="DEFAULT_MODEL",
            indent=8,
        )
        return (
            f"{head}\n    value = final(answer)\n    if not value:\n{call}\n        value = final(replies[0])\n"
            "    answer = as_answer(value) if value else answer"
        )
    raise ValueError(f"no template for step kind {k!r} in task {task!r}")


def _render_code(step: Step, model: str) -> str:
    k = step.kind
    if k == "test":
        return (
            "    reports = [await exec_code(candidate) for candidate in candidates]\n"
            "    for candidate, result in zip(candidates, reports):\n"
            '        if result == "no error":\n            return candidate\n    report = reports[0]'
        )
    if k == "generate":
        tell = "Write a correct, complete Python solution. Reply with only the code in a Python code block."
        call = _call(
            "replies",
            ["problem", _lit(tell)],
            temperature=0.0 if step.n == 1 else 0.4,
            n=step.n,
            role="expert Python programmer",
            instructions="Use exactly the function name and signature the problem asks for.",
            model=model,
        )
    elif k == "fix":
        failing = 'f"This solution fails the public tests:\\n{solution}\\n\\nTest report:\\n{report}"'
        tell = _lit("Fix the root cause. Reply with only the corrected code in a Python code block.")
        call = _call(
            "replies",
            ["problem", failing, tell],
            temperature=0.1,
            role="expert Python debugger",
            instructions="Change only what the failures require.",
            model=model,
        )
    elif k == "fallback":
        failed = 'f"Earlier attempts failed the public tests. Last report:\\n{report}"'
        tell = _lit("Write a new solution from scratch. Reply with only the code in a Python code block.")
        call = _call(
            "replies",
            ["problem", failed, tell],
            temperature=0.3,
            role="senior Python developer",
            instructions="Focus on passing the test cases.",
            model=model,
        )
    else:
        raise ValueError(f"no template for step kind {k!r} in task 'code'")
    return f"{call}\n{_BODY['code']}"


_HELPERS = {
    "exam": r'''def final(text: str) -> str:
    """The option letter after the last 'Answer:' in a reply ('' when there is none)."""
    found = re.findall(r"Answer:\s*\(?([A-J])\b", text)
    return found[-1] if found else ""


def as_answer(value: str) -> str:
    """The answer in the form the grader reads."""
    return f"Answer: {value}"''',
    "math": r'''def final(text: str) -> str:
    """The last \\boxed{...} of a reply, else what follows its last 'Answer:' ('' when neither)."""
    boxed = re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", text)
    if boxed:
        return boxed[-1].strip()
    found = re.findall(r"Answer:\s*(.+)", text)
    return found[-1].strip().rstrip(".") if found else ""


def as_answer(value: str) -> str:
    """The answer in the form the grader reads."""
    return "\\boxed{" + value + "}"''',
    "qa": r'''def final(text: str) -> str:
    """What follows the last 'Answer:' of a reply, else its last non-empty line."""
    found = re.findall(r"Answer:\s*(.+)", text)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def as_answer(value: str) -> str:
    """The answer in the form the grader reads."""
    return f"Answer: {value}"''',
}
_SHARED = r'''def majority(replies: list[str]) -> str:
    """The most common final answer among the replies; a tie goes to the answer given first."""
    values = [final(r) for r in replies if final(r)]
    if not values:
        return ""
    counts = collections.Counter(v.lower() for v in values)
    top = max(counts.values())
    return next(v for v in values if counts[v.lower()] == top)


def in_doubt(answers: list[str], rejected: bool) -> bool:
    """The workflow's own signal that its answer may be wrong: the answers disagree, or a check rejected it."""
    return rejected or len({final(a).lower() for a in answers} - {""}) > 1'''
_DOC = {
    "exam": "Answer a multiple-choice question; each step below works on the running answer.",
    "math": "Solve a math problem; each step below works on the running answer.",
    "qa": "Answer a question about a passage; each step below works on the running answer.",
    "code": "Solve a programming problem: write code, run the public tests, repair what fails.",
}


def preamble(task: str, default_model: str) -> str:
    """Everything before Step 1: docstring, imports, helpers, ``DEFAULT_MODEL``, the function and its variables."""
    if task == "code":
        head = f'"""{_DOC[task]}"""\n\nimport re\n\nDEFAULT_MODEL = {json.dumps(default_model)}\nFENCE = "`" * 3\n'
        helper = (
            "def code_of(reply: str) -> str:\n"
            '    """The code of a reply: its last fenced block, or the whole reply when it has none."""\n'
            '    blocks = re.findall(FENCE + r"(?:python)?\\n(.*?)" + FENCE, reply, re.DOTALL)\n'
            "    return blocks[-1] if blocks else reply"
        )
        state = (
            '    solution = ""  # the current solution\n'
            "    candidates: list[str] = []  # solutions not yet tested\n"
            '    report: object = "not tested yet"  # the last test report'
        )
    else:
        imports = "import asyncio\nimport collections\nimport re"
        head = f'"""{_DOC[task]}"""\n\n{imports}\n\nDEFAULT_MODEL = {json.dumps(default_model)}\n'
        helper = f"{_HELPERS[task]}\n\n\n{_SHARED}"
        state = (
            "    context = problem  # the question, with a planning step's notes once there are any\n"
            '    answer = ""  # the current answer\n'
            "    answers: list[str] = []  # every answer so far: what agreement is judged on\n"
            "    rejected = False  # whether a verification judged the current answer incorrect"
        )
    return f"{head}\n\n{helper}\n\n\nasync def workflow(problem: str) -> str:\n{state}"


# ---- reading programs back -------------------------------------------------------------------------------------

_MARKER = re.compile(r"^(\s*)# Step (\d+):\s?(.*)$")
_RETURN = re.compile(r"^(\s*)return [A-Za-z_]\w*\s*$")


@dataclass(frozen=True, slots=True)
class Program:
    """A workflow cut into its preamble, its step chunks (without the final return) and that return line."""

    preamble: str
    chunks: tuple[str, ...]
    ret: str


def parse_program(source: str, task: str) -> Program | None:
    """The program's parts (None when it has no ``# Step`` chunk): the cut of the contract's section 1."""
    lines = source.splitlines()
    starts = [i for i, line in enumerate(lines) if _MARKER.match(line)]
    if not starts:
        return None
    chunks = ["\n".join(lines[a:b]).rstrip() for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
    last = chunks[-1].split("\n")
    indent = _MARKER.match(last[0]).group(1)  # type: ignore[union-attr]
    ret = f"{indent}return {'solution' if task == 'code' else 'answer'}"
    # The final return is everything from the last line at the chunk's own indentation that returns a name.
    for i in range(len(last) - 1, 0, -1):
        m = _RETURN.match(last[i])
        if m and m.group(1) == indent:
            ret, chunks[-1] = last[i].rstrip(), "\n".join(last[:i]).rstrip()
            break
        if last[i].strip():
            break
    return Program("\n".join(lines[: starts[0]]).rstrip(), tuple(chunks), ret)


def _renumbered(chunk: str, k: int) -> str:
    first, sep, rest = chunk.partition("\n")
    m = _MARKER.match(first)
    return (f"{m.group(1)}# Step {k}: {m.group(3)}" if m else first) + sep + rest


def assemble(program: Program) -> str:
    """The program's source: chunks renumbered 1, 2, ... in order, the final return after the last."""
    chunks = [_renumbered(c, k) for k, c in enumerate(program.chunks, 1)]
    return f"{program.preamble}\n\n" + "\n\n".join(chunks) + f"\n{program.ret}\n"


def recognize(task: str, chunk: str) -> Step:
    """The step a chunk holds, read from its description and its code; ``Step("other")`` if not the library's."""
    m = _MARKER.match(chunk.split("\n")[0])
    text = m.group(3) if m else ""
    kind = next((k for pattern, k in _RECOGNIZE if pattern.match(text)), "other")
    if kind not in KINDS[task]:
        return Step("other")
    try:
        tree = ast.parse(textwrap.dedent(chunk))
    except SyntaxError:
        return Step("other")
    models: list[str] = []
    n = 1
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            if any(isinstance(t, ast.Name) and t.id == "panel" for t in node.targets):
                models += [e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                value = kw.value.value if isinstance(kw.value, ast.Constant) else None
                if kw.arg == "model" and isinstance(value, str):
                    models.append(value)
                elif kw.arg in ("num_of_response", "n") and isinstance(value, int):
                    n = value
    return Step(kind, tuple(models), n)
