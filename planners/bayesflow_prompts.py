"""The meta-optimizer's prompts (issue 19 contract, section 4): what BayesFlow, AFlow-style MCTS and random search
ask the meta-LLM, and the task they describe to it.

Every request is one system prompt (the meta-optimizer's role, the helper interface of the paper's App. G as ontime
provides it, the format rules of App. H) and one user prompt whose protocol lines each appear once at a line start::

    Task kind: exam|math|qa|code
    Models:
    - <name>: $<in> / $<out> per million tokens
    Default model: <name>
    Steps at most: <T>
    Request: write|extend|complete|refine|fix

then the request's own lines (``Next step: t``; ``Complete from step: t``, t the number of steps kept as given;
``Score: R`` and a ``Failures:`` block; an ``Error:`` block) and the current workflow, if any, in one ```python
block. The task's problems never appear: the meta-LLM sees the task's description only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from runtime.types import UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "FIX_RULE",
    "HELPERS",
    "TaskKind",
    "TaskSpec",
    "complete_prompt",
    "extend_prompt",
    "fix_prompt",
    "refine_prompt",
    "system_prompt",
    "write_prompt",
]

TaskKind = Literal["exam", "math", "qa", "code"]
# The paper's sentence for self-correction (Sec. 5): it keeps a fix from hiding the error instead of removing it.
FIX_RULE = "Do not use any try-except blocks. Fix the root cause rather than catching it."

HELPERS: dict[str, str] = {
    "call_llm": '''async def call_llm(messages: list[str] | str, temperature: float = 0.0, num_of_response: int = 1,
                   agent_role: str = "", instructions: str = "", *, model: str | None = None,
                   n: int | None = None, max_tokens: int | None = None, tag: str = "") -> list[str]:
    """Ask `model` (None: the default model) for `n` (or `num_of_response`) answers to the messages, all gathered.
    The persona `agent_role` and the `instructions` form the system prompt. Every call is charged to the run's
    budget; a call that does not fit the budget or the deadline raises OverBudgetError or PastDeadlineError."""''',
    "exec_code": '''async def exec_code(solution: str, tests: str | None = None) -> str | list[dict] | dict:
    """Run `solution` against `tests` (None: the problem's public tests). Returns "no error" if every test passes;
    a list of {"test_case", "error_type", "error_message", "traceback"} for failed assertions; or
    {"exec_fail_case": message} if the code does not run."""''',
}

_ROLE = """You are a meta-optimizer that designs agentic workflows as Python code. A workflow answers one problem of \
a task by calling language models through the helpers below; you choose its prompts, models, sampling and control \
logic. Spend money only where it raises the score: every call is charged."""

_RULES = """Format rules:
- Define `async def workflow(problem: str) -> str`; it receives one problem's text and returns the final answer.
- Begin every major block inside `workflow` with a comment line `# Step <n>:` (n = 1, 2, ... in order) that says \
what the step does.
- The helpers are given; never import or define them. Import only the Python standard library.
- Use only the models listed, by name; omit `model=` for the default model.
- Reply with the whole workflow in exactly one ```python fenced block."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What the meta-LLM is told about the task a workflow will solve.

    Attributes:
        kind: the task's family (exam, math, qa, code).
        description: the task in words, with the answer format a scorer expects; never a problem of the task.
        models: the models a workflow may call, name -> (USD per million input tokens, per million output tokens).
        default_model: the model a call without ``model=`` uses; one of ``models``.
        max_steps: T, the most steps a workflow has (and the number of BayesFlow rounds).
        helpers: the helpers a workflow may call, names in :data:`HELPERS` (``exec_code`` only where public tests
            exist, as in the paper).
    """

    kind: TaskKind
    description: str
    models: Mapping[str, tuple[float, float]]
    default_model: str
    max_steps: int = 5
    helpers: tuple[str, ...] = ("call_llm",)

    def __post_init__(self) -> None:
        if self.kind not in ("exam", "math", "qa", "code"):
            raise UsageError(f"task kind must be exam, math, qa or code, not {self.kind!r}")
        if not self.description.strip():
            raise UsageError("a task needs a description")
        if not self.models:
            raise UsageError("a task needs at least one model")
        for name, prices in self.models.items():
            if len(prices) != 2 or not all(math.isfinite(p) and p >= 0 for p in prices):
                raise UsageError(f"model {name!r}: prices must be two finite non-negative numbers, not {prices!r}")
        if self.default_model not in self.models:
            raise UsageError(f"default model {self.default_model!r} is not one of the task's models")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise UsageError(f"max_steps must be a positive integer, not {self.max_steps!r}")
        unknown = [h for h in self.helpers if h not in HELPERS]
        if unknown or "call_llm" not in self.helpers:
            raise UsageError(f"helpers must include call_llm and come from {sorted(HELPERS)}, not {self.helpers!r}")


def system_prompt(task: TaskSpec) -> str:
    """The meta-optimizer's role, the helper interface and the format rules."""
    helpers = "\n\n".join(HELPERS[h] for h in task.helpers)
    return f"{_ROLE}\n\nHelpers (already defined in the workflow's namespace):\n```python\n{helpers}\n```\n\n{_RULES}"


def _header(task: TaskSpec, request: str) -> list[str]:
    models = [f"- {name}: ${p_in:g} / ${p_out:g} per million tokens" for name, (p_in, p_out) in task.models.items()]
    return [
        f"Task kind: {task.kind}",
        "Task description:",
        *(f"  {line}" for line in task.description.strip().splitlines()),
        "Models:",
        *models,
        f"Default model: {task.default_model}",
        f"Steps at most: {task.max_steps}",
        f"Request: {request}",
    ]


def _block(source: str) -> str:
    return f"```python\n{source.rstrip()}\n```"


def write_prompt(task: TaskSpec) -> str:
    """A whole new workflow (random search; AFlow's initial workflow)."""
    return "\n".join([*_header(task, "write"), f"Write a complete workflow of at most {task.max_steps} steps."])


def extend_prompt(task: TaskSpec, prefix: str, next_step: int) -> str:
    """Exactly one more step, ``next_step``, after the given steps (the SMC's draw s_t ~ p(s_t | s_1:t-1))."""
    lines = [*_header(task, "extend"), f"Next step: {next_step}"]
    if next_step == 1:
        lines.append("Write the workflow's first step only: its preamble and `# Step 1:`.")
    else:
        lines.append(
            f"Keep steps 1 to {next_step - 1} as given and add exactly step {next_step}; reply with the whole "
            f"workflow up to and including step {next_step}."
        )
        lines.append(_block(prefix))
    return "\n".join(lines)


def complete_prompt(task: TaskSpec, prefix: str, kept: int) -> str:
    """A look-ahead completion of a prefix of ``kept`` steps (s~_t+1:T ~ p(. | s_1:t))."""
    return "\n".join(
        [
            *_header(task, "complete"),
            f"Complete from step: {kept}",
            f"Keep steps 1 to {kept} as given and write the remaining steps (at most {task.max_steps} in all); "
            "reply with the whole runnable workflow.",
            _block(prefix),
        ]
    )


def refine_prompt(task: TaskSpec, source: str, score: float, failures: Sequence[str], *, history: str = "") -> str:
    """One consequential edit of a scored workflow (the paper's refiner; AFlow's expansion).

    ``failures`` are the lines of the ``Failures:`` block, saying where it fell short (question positions, errors,
    cost), never a problem's text; ``history`` optionally tells what earlier edits of it scored (AFlow's
    tree-structured experience). A blank line ends each block.
    """
    lines = [*_header(task, "refine"), f"Score: {score:.4f}", "Failures:", *(failures or ["none"]), ""]
    if history:
        lines += ["Earlier edits of this workflow:", history, ""]
    lines.append(
        "Make one consequential edit that should raise the score (a step added, removed or rewritten, a model, "
        "a prompt or a sample count changed), keep the step format, and reply with the whole workflow."
    )
    lines.append(_block(source))
    return "\n".join(lines)


def fix_prompt(task: TaskSpec, source: str, error: str) -> str:
    """The paper's self-correction: the same request with the captured error log, asking for a runnable version."""
    return "\n".join(
        [
            *_header(task, "fix"),
            f"The workflow below failed to run. Reply with a corrected, runnable version. {FIX_RULE}",
            "Error:",
            *(f"  {line}" for line in error.strip().splitlines()[-20:]),
            "",
            _block(source),
        ]
    )
