"""A simulated meta-LLM: it reads BayesFlow's meta prompts and writes step-annotated workflow programs.

Offline stand-in for the optimizer LLM of BayesFlow (the paper's prior p(s_t | s_1:t-1)). It reads the prompt
protocol of the issue-19 contract (section 4): the lines ``Task kind:``, ``Models:`` (one ``- <name>: $<in> /
$<out> per million tokens`` line each), ``Default model:``, ``Steps at most:``, ``Request:``, ``Next step:`` /
``Complete from step:``, ``Score:``, ``Failures:``, ``Error:`` and one fenced python block (the current workflow),
all from the user messages (each field line at a line start; the ``Models:`` and ``Failures:`` blocks end at a
blank line, ``Error:`` at the next field; ``Steps at most`` defaults to the paper's 5; a default model the list
lacks, or none, is the first listed). It replies with one sentence and one fenced python block holding a whole
program of :mod:`adapters.step_library` (contract section 1), whose steps it draws from the prior below.

Requests:

- **write**: steps drawn from the prior from step 1 until it stops or reaches T.
- **extend** (``Next step: t``): the given steps 1..t-1 verbatim (fewer given: the missing ones drawn), plus step t
  drawn given them. The final ``return`` moves after the new step (it belongs to no step).
- **complete** (``Complete from step: t``): steps 1..t verbatim, then drawn steps until the prior stops or T.
- **refine**: exactly one edit of the given workflow. The edit kind is drawn with weights swap a model 0.30,
  change a sample count 0.15, insert a step 0.25 x (1 + f), delete a step 0.10 x (0.5 + s), replace a step
  0.20, over the edits the workflow admits, where f = min(1, failures / 5) reads the ``Failures:`` block (a
  count its first line states, "12 of 40", else its non-empty lines; "none" counts 0) and s the ``Score:``
  (0.5 when absent): many failures make an insertion, and a check, likelier; a high score makes trimming
  likelier. An insertion is a check (exam: verify / escalate / reconsider; math, qa: verify / revise; code: test
  / fix) with probability f / 2, else a step drawn from the prior at its place. A swap draws the new model
  with the step's price weight (below) among the models the step does not call; a new n comes from the step's
  n table without its current value; a replacement from the prior at its place. Every edit keeps the grammar
  and changes the step list; the other steps' code is kept as written (renumbered after an insertion or a
  deletion).
- **fix** (``Error:``): the first repair that applies: steps calling a model the ``Models:`` list lacks call
  the default model; on ``OverBudgetError`` / ``PastDeadlineError`` (or "budget" / "deadline") the costliest
  step (sum of its models' prices x n) takes its n table's least n, else its priciest model becomes the
  cheapest, else it goes; the step the error points at (the last ``line N`` inside a step, else ``Step N``;
  none: every step) is rewritten from its description where its code differs from the library's; else that
  step (none: the last) is replaced by a different draw from the prior (when no different step keeps the grammar,
  as a fallback whose test is replaced, that step and all after it are drawn afresh). The library's preamble is always
  restored, no ``try``/``except`` is ever added, and the result always compiles (else: rewritten whole).
- **not understood** (no task kind, no model line, no request, a bad number, a missing workflow where one is
  needed): the reply is a sentence saying so, with no python block, so the caller sees a format failure, as
  it would from a real LLM that could not follow the prompt.

The prior. Step kinds, P(next | previous); "start" is the first step; the grammar of
:mod:`adapters.step_library` removes the kinds it forbids at a position and the rest are renormalized (position
enters only there and through the stop table):

===========  ======  ====  ====  ========  ==========  ======  =========  =======
exam         answer  cot   vote  escalate  reconsider  verify  decompose  extract
===========  ======  ====  ====  ========  ==========  ======  =========  =======
start        0.25    0.30  0.25  0         0           0       0.20       0
decompose    0.25    0.40  0.35  0         0           0       0          0
answer       0.15    0.10  0.15  0.20      0.05        0.20    0          0.15
cot          0.10    0.10  0.15  0.20      0.05        0.25    0          0.15
vote         0.05    0.05  0.05  0.35      0.15        0.15    0          0.20
escalate     0       0.05  0.10  0.10      0.15        0.30    0          0.30
reconsider   0       0.05  0.10  0.15      0.05        0.25    0          0.40
verify       0.05    0.05  0.10  0.35      0.35        0       0          0.10
extract      0.10    0.10  0.20  0.20      0.10        0.30    0          0
===========  ======  ====  ====  ========  ==========  ======  =========  =======

===========  ======  ====  ====  ======  ======  =======
math, qa     answer  cot   vote  revise  verify  extract
===========  ======  ====  ====  ======  ======  =======
start        0.30    0.40  0.30  0       0       0
answer       0.05    0.10  0.20  0.25    0.20    0.20
cot          0.05    0.05  0.20  0.25    0.25    0.20
vote         0       0.05  0.05  0.25    0.30    0.35
revise       0.05    0.05  0.15  0.10    0.30    0.35
verify       0.05    0.10  0.20  0.55    0       0.10
extract      0.10    0.10  0.25  0.25    0.30    0
===========  ======  ====  ====  ======  ======  =======

===========  ========  ====  ====  ========
code         generate  test  fix   fallback
===========  ========  ====  ====  ========
start        1         0     0     0
generate     0.10      0.90  0     0
test         0.10      0     0.60  0.30
fix          0.10      0.90  0     0
fallback     0.10      0.90  0     0
===========  ========  ====  ====  ========

A step the library does not recognize counts as ``answer`` (code: ``generate``).

- **Stop.** After step p, when the workflow has an answer (code: a candidate), it stops with probability 0.15,
  0.30, 0.45, 0.60, 0.75 for p = 1..5 and 0.9 beyond; always after ``extract`` and at T.
- **Models.** Weight price^-1/2 (price = input + output $ per million tokens, floored at $0.01): cheaper models
  are more likely, as a meta-LLM told that calls cost money would lean, yet every model keeps a real chance (a
  uniform draw would waste most samples on the priciest models, a greedy one would never try them). Escalate,
  verify and fallback draw with weight price^+1/2 (a stronger judge or rescuer: price is the only strength
  signal the prompt gives); escalate avoids models that already answered while others remain. Reconsider and
  revise ask the model behind the current answer with probability 0.8 (when one model gave it), else draw as
  answer does. A vote asks one sample each of 2..min(5, #models) models (size uniform, drawn without
  replacement) with probability 0.5 when there are two models or more, else n samples of one model.
- **Sample counts.** vote: n = 3, 5, 7 with probability 0.50, 0.35, 0.15; code generate: n = 1, 2, 3 with
  0.40, 0.30, 0.30 (temperature 0 for one sample, 0.4 for more).

Seeded: sample i of batch b draws from ``random.Random(f"{seed}:{b}:{i}:{sha256(prompt)}")``, so a reply is a
function of (seed, batch id, sample index, prompt). Usage: input tokens = ceil(characters / 4) + 4 per message
(reported as the batch's reservation, which the executor took from :meth:`SimMetaLLM.input_tokens`); output
tokens = ceil(len(reply) / 4). Latency: ``ttft_s`` + output tokens / ``tokens_per_s``, slept on the run's clock;
a cancelled sample is charged the output tokens produced linearly after its first token. A reply longer than
``max_tokens`` is cut off there (and loses its closing fence).
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from adapters.step_library import (
    GENERATE_N,
    TASK_KINDS,
    VOTE_N,
    Model,
    Program,
    Step,
    assemble,
    describe,
    draw_models,
    draw_rest,
    draw_step,
    parse_program,
    preamble,
    recognize,
    render_step,
    valid,
)
from runtime.types import Adapter, Finish, SampleEnd, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runtime.types import Batch, Clock, Message, Report

__all__ = ["MetaRequest", "SimMetaLLM", "parse_request", "prompt_text", "respond"]

_FIELDS = (
    "Task kind",
    "Models",
    "Default model",
    "Steps at most",
    "Request",
    "Next step",
    "Complete from step",
    "Score",
    "Failures",
    "Error",
)
_HEADER = re.compile(rf"^({'|'.join(_FIELDS)}):[ \t]*(.*)$")
_MODEL_LINE = re.compile(
    r"^-\s*(?P<name>[A-Za-z0-9][\w.:/@+-]*?):\s*\$(?P<inp>[0-9.eE+-]+)\s*/\s*\$(?P<out>[0-9.eE+-]+)"
)
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
_BLOCKS = ("Models", "Failures", "Error")  # the fields whose lines continue below their header
_REQUESTS = ("write", "extend", "complete", "refine", "fix")
_CHECKS = {
    "exam": ("verify", "escalate", "reconsider"),
    "math": ("verify", "revise"),
    "qa": ("verify", "revise"),
    "code": ("test", "fix"),
}
_EDITS = {"swap": 0.30, "n": 0.15, "insert": 0.25, "delete": 0.10, "replace": 0.20}
_TRIES = 24  # draws an insertion or replacement may take to find a step that keeps the grammar


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaRequest:
    """What a meta prompt asks (contract section 4), as read from its lines."""

    task: str
    models: tuple[Model, ...]
    default_model: str
    limit: int
    request: str
    step: int | None = None
    score: float | None = None
    failures: int = 0
    error: str = ""
    program: str | None = None


def parse_request(text: str) -> MetaRequest:
    """The request a prompt states.

    Raises:
        UsageError: the prompt lacks what a request needs (a task kind, a model, a request, a number, a workflow).
    """
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in _BLOCK.sub("", text).splitlines():
        m = _HEADER.match(line)
        if m:
            current = m.group(1) if m.group(1) in _BLOCKS else None
            fields.setdefault(m.group(1), []).extend([m.group(2).strip()] if m.group(2).strip() else [])
        elif current is not None and line.strip():
            fields[current].append(line.strip())
        elif current != "Error":  # a blank line ends the models and the failures; an error may span paragraphs
            current = None
    task = _one(fields, "Task kind").lower()
    if task not in TASK_KINDS:
        raise UsageError(f"the prompt names no task kind of {', '.join(TASK_KINDS)}")
    models = tuple(_model(m) for line in fields.get("Models", []) if (m := _MODEL_LINE.match(line)))
    if not models:
        raise UsageError("the prompt lists no model as '- <name>: $<in> / $<out> per million tokens'")
    request = _one(fields, "Request").lower()
    if request not in _REQUESTS:
        raise UsageError(f"the prompt asks none of {', '.join(_REQUESTS)}")
    limit = _number(fields, "Steps at most")
    limit = 5 if limit is None else limit  # the paper's T
    if not 1 <= limit <= 20:
        raise UsageError(f"Steps at most must be 1..20, not {limit}")
    step = _number(fields, "Next step" if request == "extend" else "Complete from step")
    if request in ("extend", "complete") and (step is None or not int(request == "extend") <= step <= limit):
        raise UsageError(f"the {request} request needs a step number within {int(request == 'extend')}..{limit}")
    blocks = _BLOCK.findall(text)
    program = blocks[0] if blocks else None
    default = _one(fields, "Default model")
    needs = request == "refine" or (request == "extend" and (step or 0) > 1) or (request == "complete" and step)
    if needs and (program is None or parse_program(program, task) is None):
        raise UsageError(f"the {request} request needs a workflow with '# Step n:' comments in a python block")
    if request == "fix" and program is None:
        raise UsageError("the fix request needs the failing workflow in a python block")
    return MetaRequest(
        task=task,
        models=models,
        default_model=default if default in {m.name for m in models} else models[0].name,
        limit=limit,
        request=request,
        step=step,
        score=_score(fields),
        failures=_failures(fields.get("Failures", [])),
        error="\n".join(fields.get("Error", [])),
        program=program,
    )


def _one(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name, [])
    return values[0] if values else ""


def _model(m: re.Match[str]) -> Model:
    return Model(m.group("name"), _price(m.group("inp")), _price(m.group("out")))


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"a price must be a number, not {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"a price must be a non-negative number, not {text!r}")
    return value


def _number(fields: dict[str, list[str]], name: str) -> int | None:
    raw = _one(fields, name)
    if not raw:
        return None
    try:
        return int(raw.split()[0])
    except ValueError:
        raise UsageError(f"{name} must be a whole number, not {raw!r}") from None


def _score(fields: dict[str, list[str]]) -> float | None:
    m = re.match(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", _one(fields, "Score"))
    return min(1.0, max(0.0, float(m.group()))) if m else None


def _failures(lines: list[str]) -> int:
    """How many failures the block lists: a count its first line states ("12 of 40"), else its lines ("none": 0)."""
    count = re.match(r"\d+\b", lines[0]) if lines else None
    if count:
        return int(count.group())
    return sum(line.lower().strip(" -*.()") not in ("none", "") for line in lines)


# ---- answering ------------------------------------------------------------------------------------------------


def respond(text: str, rng: random.Random) -> str:
    """The meta-LLM's reply to a prompt: a sentence and one python block, or a sentence alone if not understood."""
    try:
        req = parse_request(text)
    except UsageError as exc:
        return f"I could not follow this request: {exc}. Please state the task kind, the models and the request."
    note, source = _HANDLERS[req.request](req, rng)
    return f"{note}\n\n```python\n{source}```\n"


def _fresh(req: MetaRequest, steps: Sequence[Step]) -> Program:
    chunks = tuple(render_step(req.task, s, k) for k, s in enumerate(steps, 1))
    return Program(preamble(req.task, req.default_model), chunks, "    return " + _ret(req.task))


def _ret(task: str) -> str:
    return "solution" if task == "code" else "answer"


def _given(req: MetaRequest) -> tuple[Program, list[Step]]:
    program = parse_program(req.program or "", req.task)
    assert program is not None  # parse_request checked it
    return program, [recognize(req.task, c) for c in program.chunks]


def _write(req: MetaRequest, rng: random.Random) -> tuple[str, str]:
    steps = draw_rest(req.task, [], req.limit, req.models, rng)
    return f"Here is a {len(steps)}-step workflow.", assemble(_fresh(req, steps))


def _extend(req: MetaRequest, rng: random.Random) -> tuple[str, str]:
    t = req.step or 1
    steps: list[Step] = []
    if t == 1:
        program = _fresh(req, [])
    else:
        program, steps = _given(req)
        program, steps = replace(program, chunks=program.chunks[: t - 1]), steps[: t - 1]
    chunks = list(program.chunks)
    while len(chunks) < t:
        step = draw_step(req.task, steps, len(chunks) + 1, req.limit, req.models, rng)
        assert step is not None  # answering steps are always allowed
        steps.append(step)
        chunks.append(render_step(req.task, step, len(chunks) + 1))
    kept = "" if t == 1 else "I kept step 1 and added " if t == 2 else f"I kept steps 1-{t - 1} and added "
    note = f"{kept or 'Here is '}step {t}: {describe(req.task, steps[-1])}."
    return note, assemble(replace(program, chunks=tuple(chunks)))


def _complete(req: MetaRequest, rng: random.Random) -> tuple[str, str]:
    t = req.step or 0
    program, steps = _given(req) if t >= 1 else (_fresh(req, []), [])
    program, steps = replace(program, chunks=program.chunks[:t]), steps[:t]
    more = draw_rest(req.task, steps, req.limit, req.models, rng)
    chunks = program.chunks + tuple(render_step(req.task, s, len(steps) + k) for k, s in enumerate(more, 1))
    note = f"I kept steps 1-{len(steps)} and added {len(more)} more." if steps else f"A {len(more)}-step workflow."
    return note, assemble(replace(program, chunks=chunks))


def _refine(req: MetaRequest, rng: random.Random) -> tuple[str, str]:
    program, steps = _given(req)
    f = min(1.0, req.failures / 5)
    s = 0.5 if req.score is None else req.score
    weights = dict(_EDITS, insert=_EDITS["insert"] * (1 + f), delete=_EDITS["delete"] * (0.5 + s))
    while weights:
        edit = rng.choices(list(weights), weights=list(weights.values()))[0]
        done = _EDIT[edit](req, _Draft(steps, list(program.chunks)), rng, f)
        if done is not None:
            return f"One edit: {done.what}.", assemble(replace(program, chunks=tuple(done.chunks)))
        del weights[edit]
    # No edit keeps the grammar (one foreign step and one model): rewrite it.
    return _write(req, rng)


@dataclass(slots=True)
class _Draft:
    """A workflow being edited: its steps and their chunks, side by side, and what the edit did."""

    steps: list[Step]
    chunks: list[str]
    what: str = ""

    def put(self, task: str, i: int, step: Step, what: str, *, insert: bool = False) -> _Draft:
        """Step i becomes ``step`` (or ``step`` goes in before step i), rendered from the library."""
        chunk = render_step(task, step, i + 1)
        if insert:
            self.steps.insert(i, step)
            self.chunks.insert(i, chunk)
        else:
            self.steps[i], self.chunks[i] = step, chunk
        self.what = what
        return self

    def drop(self, i: int, what: str) -> _Draft:
        del self.steps[i], self.chunks[i]
        self.what = what
        return self


def _swap(req: MetaRequest, draft: _Draft, rng: random.Random, f: float) -> _Draft | None:
    names = {m.name for m in req.models}
    options = [i for i, s in enumerate(draft.steps) if s.models and names - set(s.models)]
    if not options:
        return None
    i = rng.choice(options)
    step = draft.steps[i]
    j = rng.randrange(len(step.models))
    strong = step.kind in ("escalate", "verify", "fallback")
    new = draw_models(req.models, rng, strong=strong, avoid=frozenset(step.models))[0]
    models = (*step.models[:j], new, *step.models[j + 1 :])
    return draft.put(req.task, i, replace(step, models=models), f"in step {i + 1}, {new} instead of {step.models[j]}")


def _resize(req: MetaRequest, draft: _Draft, rng: random.Random, f: float) -> _Draft | None:
    tables = {"vote": VOTE_N, "generate": GENERATE_N}
    options = [i for i, s in enumerate(draft.steps) if s.kind in tables and len(s.models) == 1]
    if not options:
        return None
    i = rng.choice(options)
    step = draft.steps[i]
    table = {n: p for n, p in tables[step.kind].items() if n != step.n}
    n = rng.choices(list(table), weights=list(table.values()))[0]
    return draft.put(req.task, i, replace(step, n=n), f"in step {i + 1}, {n} samples instead of {step.n}")


def _insert(req: MetaRequest, draft: _Draft, rng: random.Random, f: float) -> _Draft | None:
    if len(draft.steps) >= req.limit:
        return None
    kinds = _CHECKS[req.task] if rng.random() < f / 2 else None
    steps = draft.steps
    for _ in range(_TRIES):
        u = rng.randint(1, len(steps) + 1)
        step = draw_step(req.task, steps[: u - 1], u, req.limit, req.models, rng, kinds=kinds)
        if step is not None and valid(req.task, [*steps[: u - 1], step, *steps[u - 1 :]], req.limit):
            return draft.put(req.task, u - 1, step, f"a new step {u}: {describe(req.task, step)}", insert=True)
    return None


def _delete(req: MetaRequest, draft: _Draft, rng: random.Random, f: float) -> _Draft | None:
    steps = draft.steps
    options = [i for i in range(len(steps)) if valid(req.task, steps[:i] + steps[i + 1 :], req.limit)]
    if not options:
        return None
    i = rng.choice(options)
    return draft.drop(i, f"step {i + 1} ({_name(req.task, draft.steps[i])}) removed")


def _replace(req: MetaRequest, draft: _Draft, rng: random.Random, f: float) -> _Draft | None:
    steps = draft.steps
    for _ in range(_TRIES):
        i = rng.randrange(len(steps))
        step = draw_step(req.task, steps[:i], i + 1, req.limit, req.models, rng)
        if (
            step is not None
            and step != draft.steps[i]
            and valid(req.task, [*steps[:i], step, *steps[i + 1 :]], req.limit)
        ):
            return draft.put(req.task, i, step, f"step {i + 1} is now: {describe(req.task, step)}")
    return None


def _name(task: str, step: Step) -> str:
    return "a step of its own" if step.kind == "other" else describe(task, step)


_EDIT = {"swap": _swap, "n": _resize, "insert": _insert, "delete": _delete, "replace": _replace}


def _fix(req: MetaRequest, rng: random.Random) -> tuple[str, str]:
    given = parse_program(req.program or "", req.task)
    if given is None:
        note, source = _write(req, rng)
        return f"The workflow had no steps to repair, so I rewrote it. {note}", source
    draft = _Draft([recognize(req.task, c) for c in given.chunks], list(given.chunks))
    at = _located(req, given)
    costly = re.search(r"OverBudget|PastDeadline|budget|deadline", req.error, re.IGNORECASE) is not None
    if not (_listed_models_only(req, draft) or (costly and _cheaper(req, draft)) or _rewrite(req, draft, at)):
        # The step is as the library writes it, or foreign: a different one goes in its place.
        i = at if at is not None else len(draft.steps) - 1
        new = _redraw(req, draft.steps, i, rng, old=draft.steps[i])
        if valid(req.task, [*draft.steps[:i], new, *draft.steps[i + 1 :]], req.limit) or not valid(
            req.task, draft.steps, req.limit
        ):
            draft.put(req.task, i, new, f"step {i + 1} rewritten: {describe(req.task, new)}")
        else:  # later steps need this one as it is (a fallback needs its test): redraw from it to the end
            draft = _redrawn_from(req, draft, i, rng)
    source = assemble(
        Program(preamble(req.task, req.default_model), tuple(draft.chunks), "    return " + _ret(req.task))
    )
    if not _compiles(source):  # a foreign step that does not parse elsewhere: every foreign step redrawn
        known = [s if s.kind != "other" else _redraw(req, draft.steps, i, rng) for i, s in enumerate(draft.steps)]
        if not valid(req.task, known, req.limit):
            known = draw_rest(req.task, [], req.limit, req.models, rng)
        source, draft.what = assemble(_fresh(req, known)), "the workflow rewritten from its steps"
    return f"Fixed the root cause: {draft.what}.", source


def _redrawn_from(req: MetaRequest, draft: _Draft, i: int, rng: random.Random) -> _Draft:
    """Steps 1..i kept, step i+1 on drawn afresh from the prior (step i+1 unlike the old one where it can be)."""
    for _ in range(_TRIES):
        rest = draw_rest(req.task, draft.steps[:i], req.limit, req.models, rng)
        if rest and rest[0] != draft.steps[i]:
            break
    chunks = [render_step(req.task, s, i + k) for k, s in enumerate(rest, 1)]
    return _Draft(draft.steps[:i] + rest, draft.chunks[:i] + chunks, f"steps {i + 1} on rewritten")


def _listed_models_only(req: MetaRequest, draft: _Draft) -> bool:
    """Steps that call a model the list lacks call the default model instead."""
    names = {m.name for m in req.models}
    strange = [i for i, s in enumerate(draft.steps) if set(s.models) - names]
    for i in strange:
        models = tuple(m if m in names else req.default_model for m in draft.steps[i].models)
        draft.put(req.task, i, replace(draft.steps[i], models=models), "")
    draft.what = f"step(s) {', '.join(str(i + 1) for i in strange)} now call only models of the list"
    return bool(strange)


def _rewrite(req: MetaRequest, draft: _Draft, at: int | None) -> bool:
    """The located step (none located: every step) rewritten from its description where the text differs."""
    changed = [
        i
        for i in ([at] if at is not None else range(len(draft.steps)))
        if draft.steps[i].kind != "other" and render_step(req.task, draft.steps[i], i + 1) != draft.chunks[i]
    ]
    for i in changed:
        draft.put(req.task, i, draft.steps[i], "")
    draft.what = f"step {at + 1} rewritten from its description" if at is not None else "steps rewritten as described"
    return bool(changed)


def _redraw(req: MetaRequest, base: list[Step], i: int, rng: random.Random, old: Step | None = None) -> Step:
    """A step for position i, unlike ``old``, that keeps the grammar (an answering step if no draw does)."""
    for _ in range(_TRIES):
        step = draw_step(req.task, base[:i], i + 1, req.limit, req.models, rng)
        if step is not None and step != old and valid(req.task, [*base[:i], step, *base[i + 1 :]], req.limit):
            return step
    kind = "generate" if req.task == "code" else "answer"
    return Step(kind, draw_models(req.models, rng), 1)


def _cheaper(req: MetaRequest, draft: _Draft) -> bool:
    """Cut the costliest step (n to its least, else its priciest model to the cheapest, else drop it)."""
    price = {m.name: m.price for m in req.models}
    costs = [sum(price.get(m, 0.0) for m in s.models) * s.n for s in draft.steps]
    if not any(costs):
        return False
    i = max(range(len(costs)), key=lambda k: costs[k])
    step = draft.steps[i]
    least = min({"vote": VOTE_N, "generate": GENERATE_N}.get(step.kind, {step.n: 1.0}))
    cheapest = min(req.models, key=lambda m: m.price).name
    top = max(step.models, key=lambda m: price.get(m, 0.0))
    if step.n > least:
        draft.put(
            req.task,
            i,
            replace(step, n=least),
            f"step {i + 1}, the costliest, now takes {least} sample{'s' if least > 1 else ''}",
        )
    elif cheapest not in step.models and price[top] > price[cheapest]:
        models = tuple(cheapest if m == top else m for m in step.models)
        draft.put(req.task, i, replace(step, models=models), f"step {i + 1}, the costliest, uses {cheapest}")
    else:
        rest = draft.steps[:i] + draft.steps[i + 1 :]
        if not valid(req.task, rest, req.limit):
            return False
        draft.drop(i, f"step {i + 1}, the costliest, removed")
    return True


def _located(req: MetaRequest, program: Program) -> int | None:
    """The step the error points at: the last ``line N`` inside a step, else a ``Step N`` it names."""
    lines = (req.program or "").splitlines()
    starts = [k for k, line in enumerate(lines) if re.match(r"^\s*# Step \d+:", line)]
    for raw in reversed(re.findall(r"line (\d+)", req.error)):
        n = int(raw) - 1
        inside = [i for i, start in enumerate(starts) if start <= n < len(lines)]
        if inside:
            return inside[-1]
    named = re.findall(r"Step (\d+)", req.error)
    if named and 1 <= int(named[-1]) <= len(program.chunks):
        return int(named[-1]) - 1
    return None


def _compiles(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


_HANDLERS = {"write": _write, "extend": _extend, "complete": _complete, "refine": _refine, "fix": _fix}


# ---- the adapter -----------------------------------------------------------------------------------------------


def prompt_text(messages: Sequence[Message]) -> str:
    """What the meta-LLM reads: the user messages (the system prompt's examples would confuse the fields)."""
    users = [m.content for m in messages if m.role == "user"]
    return "\n\n".join(users or [m.content for m in messages])


class SimMetaLLM(Adapter):
    """The simulated meta-LLM behind the Adapter interface (see the module docstring for what it does).

    Args:
        clock: the run's clock (its latency is slept on it).
        seed: the run's seed.
        ttft_s: seconds to the first output token.
        tokens_per_s: output tokens per second after that.
    """

    simulated = True

    def __init__(self, clock: Clock, seed: int = 0, *, ttft_s: float = 1.0, tokens_per_s: float = 60.0) -> None:
        if not (ttft_s >= 0 and tokens_per_s > 0):
            raise UsageError("the simulated meta-LLM needs ttft_s >= 0 and tokens_per_s > 0")
        self.clock = clock
        self.seed = seed
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s

    def input_tokens(self, estimate: int, messages: tuple[Message, ...] | None) -> int:
        if messages is None:
            raise UsageError("the simulated meta-LLM answers prompts: a call without messages has nothing to read")
        return math.ceil(sum(len(m.content) for m in messages) / 4) + 4 * len(messages)

    def reply(self, text: str, batch: int, index: int) -> str:
        """Sample ``index`` of batch ``batch``: a function of the seed, both numbers and the prompt text."""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return respond(text, random.Random(f"{self.seed}:{batch}:{index}:{digest}"))

    async def run(self, batch: Batch, report: Report) -> None:
        text = prompt_text(batch.messages or ())
        replies = [self.reply(text, batch.id, idx) for idx in range(batch.k)]
        tokens = [min(math.ceil(len(r) / 4), batch.max_tokens) for r in replies]
        latency = [self.ttft_s + t / self.tokens_per_s for t in tokens]
        pending = sorted(range(batch.k), key=lambda idx: (latency[idx], idx))
        start = self.clock.now()
        try:
            while pending:
                idx = pending[0]
                await self.clock.sleep_until(start + latency[idx], order=(batch.id, idx))
                pending.pop(0)
                full = math.ceil(len(replies[idx]) / 4) <= batch.max_tokens
                output = replies[idx] if full else replies[idx][: 4 * batch.max_tokens]
                report(
                    SampleEnd(
                        index=idx,
                        finish=Finish.COMPLETE if full else Finish.CUT_OFF,
                        input_tokens=batch.input_tokens,
                        output_tokens=tokens[idx],
                        output=output,
                        passed=full and _BLOCK.search(output) is not None,
                    )
                )
        finally:  # cancelled: each of the others is charged the tokens it has streamed by now
            elapsed = self.clock.now() - start
            for idx in sorted(pending):
                streamed = max(0.0, elapsed - self.ttft_s) * self.tokens_per_s
                report(
                    SampleEnd(
                        index=idx,
                        finish=Finish.CANCELLED,
                        input_tokens=batch.input_tokens,
                        output_tokens=min(tokens[idx], math.floor(streamed)),
                    )
                )
