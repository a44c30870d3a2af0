"""The step-annotated program format of BayesFlow (the paper's Sec. 3 and App. H), as text operations.

A workflow is Python source whose major blocks each start with a comment line ``# Step <n>:``. Everything before
Step 1 is the *preamble* (docstring, imports, the MODELS block, the ``async def workflow(problem)`` line); the
*chunk* of step n runs from its marker line to the next marker (the last chunk to the end of the source). The SMC
works on these chunks: a prefix of t steps is the preamble and chunks 1..t, the projection of a complete workflow
to t steps is the same cut, and a look-ahead completion is joined onto its prefix.

Markers are found with :mod:`tokenize` (a ``# Step 1:`` inside a string literal is not a marker); a prefix that
does not tokenize (cut in the middle of a statement) falls back to matching marker lines.
"""

from __future__ import annotations

import ast
import io
import itertools
import re
import sys
import tokenize
from dataclasses import dataclass

from runtime.types import SpecError

__all__ = ["ENTRY", "StepProgram", "check", "extract_code", "join"]

ENTRY = "workflow"  # the function a program defines and the runtime calls with the problem text
_MARK = re.compile(r"^([ \t]*)# Step (\d+):")
_FENCE = re.compile(r"```python[ \t]*\n(.*?)```", re.DOTALL)
_IMPORT = re.compile(r"^(import|from)\s+\S")
_ENTRY_LINE = re.compile(rf"^async\s+def\s+{ENTRY}\b")
# Names a program uses without importing: the runtime injects them (contract, section 1).
_INJECTED = frozenset({"call_llm", "exec_code", "CallRefusedError", "OverBudgetError", "PastDeadlineError"})


def _marker_lines(source: str) -> list[int]:
    """0-based indices of the lines that open a step: comments alone on their line that match the marker."""
    lines = source.splitlines(keepends=True)
    try:
        found = []
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            row, col = tok.start
            if tok.type == tokenize.COMMENT and not lines[row - 1][:col].strip() and _MARK.match(lines[row - 1]):
                found.append(row - 1)
        return found
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [i for i, line in enumerate(lines) if _MARK.match(line)]


@dataclass(frozen=True, slots=True)
class StepProgram:
    """A program split into its preamble and step chunks; ``source`` puts them back together unchanged."""

    preamble: str
    steps: tuple[str, ...]

    @classmethod
    def parse(cls, source: str) -> StepProgram:
        """Split ``source`` at its step markers (a program without markers is all preamble)."""
        lines = source.splitlines(keepends=True)
        starts = _marker_lines(source)
        if not starts:
            return cls(source, ())
        bounds = [*starts, len(lines)]
        chunks = tuple("".join(lines[a:b]) for a, b in itertools.pairwise(bounds))
        return cls("".join(lines[: starts[0]]), chunks)

    @property
    def source(self) -> str:
        return self.preamble + "".join(self.steps)

    @property
    def numbers(self) -> tuple[int, ...]:
        """The numbers the markers carry, in order (1, 2, ... in a well-formed program)."""
        return tuple(int(m.group(2)) for m in (_MARK.match(chunk) for chunk in self.steps) if m)

    def prefix(self, t: int) -> StepProgram:
        """The first t steps (the whole program if it has fewer): a prefix, or a projection to t steps."""
        if t < 0:
            raise SpecError(f"a prefix has at least 0 steps, not {t}")
        return StepProgram(self.preamble, self.steps[:t])

    def renumbered(self) -> StepProgram:
        """The same program with its markers numbered 1, 2, ... in order (a model may skip or repeat one)."""
        steps = tuple(_MARK.sub(rf"\g<1># Step {n}:", chunk, count=1) for n, chunk in enumerate(self.steps, start=1))
        return StepProgram(self.preamble, steps)


def join(prefix: StepProgram, continuation: StepProgram) -> StepProgram:
    """Steps 1..t of ``prefix`` followed by steps t+1.. of ``continuation`` (t = the prefix's length).

    So that the weight of a look-ahead is the reward of (s_1:t, s~_t+1:T) as Alg. 1 defines it, whatever a model's
    reply did to the steps it was told to keep. A prefix cut from a runnable workflow ends in its ``return``, which
    would make the joined steps dead code: that final return is dropped when steps follow. Imports the continuation
    added to its preamble are carried over (a later step may need them). A continuation with no step beyond t
    leaves the prefix as it is; an empty prefix takes the continuation whole.
    """
    rest = continuation.steps[len(prefix.steps) :]
    if not rest:
        return prefix
    if not prefix.steps:
        return continuation.renumbered()
    head = _drop_final_return(prefix)
    last = head.steps[-1] if head.steps[-1].endswith("\n") else head.steps[-1] + "\n"
    preamble = _merge_imports(head.preamble, continuation.preamble)
    return StepProgram(preamble, (*head.steps[:-1], last, *rest)).renumbered()


def _drop_final_return(program: StepProgram) -> StepProgram:
    """The program without the ``return`` that ends ``workflow``, when that return sits in the last chunk."""
    try:
        tree = ast.parse(program.source)
    except SyntaxError:
        return program
    entry = next((n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == ENTRY), None)
    if entry is None or not isinstance(entry.body[-1], ast.Return):
        return program
    last = entry.body[-1]
    first_line = len((program.preamble + "".join(program.steps[:-1])).splitlines())  # lines before the last chunk
    start, end = last.lineno - 1 - first_line, (last.end_lineno or last.lineno) - first_line
    if start < 1:  # the return is not inside the last chunk (below its marker line)
        return program
    lines = program.steps[-1].splitlines(keepends=True)
    return StepProgram(program.preamble, (*program.steps[:-1], "".join(lines[:start] + lines[end:])))


def _merge_imports(preamble: str, other: str) -> str:
    """``preamble`` with the top-level import lines of ``other`` it lacks, put just above ``async def workflow``."""
    have = {line.strip() for line in preamble.splitlines()}
    extra = [line for line in other.splitlines(keepends=True) if _IMPORT.match(line) and line.strip() not in have]
    if not extra:
        return preamble
    lines = preamble.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if _ENTRY_LINE.match(line)), 0)
    return "".join(lines[:at] + extra + lines[at:])


def check(source: str) -> str | None:
    """Why ``source`` cannot run as a workflow program, checked before any money is spent on it; None if it can.

    It must parse, define ``async def workflow`` taking the problem, and import only the standard library (the
    helpers are injected, never imported).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    entry = next((n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == ENTRY), None)
    if entry is None:
        return f"the program defines no top-level `async def {ENTRY}(problem)`"
    if not entry.args.args and not entry.args.posonlyargs:
        return f"`{ENTRY}` must take the problem text as its argument"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if not node.level else ["."]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in _INJECTED or name.startswith(".") or top not in sys.stdlib_module_names:
                return f"imports {name!r}: a program may import only the standard library (its helpers are given)"
    return None


def extract_code(reply: str) -> str:
    """The program in a model's reply: its one ```python block (of several, the last that defines ``workflow``).

    Raises:
        SpecError: the reply holds no complete ```python block.
    """
    blocks = _FENCE.findall(reply)
    if len(blocks) > 1:
        blocks = [b for b in blocks if re.search(rf"\basync\s+def\s+{ENTRY}\b", b)] or blocks
    if not blocks:
        raise SpecError("the reply holds no complete ```python block")
    return str(blocks[-1])
