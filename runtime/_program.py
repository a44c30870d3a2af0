"""Workflows written as code: a :class:`Program`, and the helpers a program calls (``call_llm``, ``exec_code``).

A program is an ``async def workflow(problem: str) -> str`` (the BayesFlow paper's format, Appendix H). A user's
own function runs in ontime's process (``Program(fn)``); a program read from a file or from text (a model wrote
it) only ever runs in the sandbox, so its module is never executed here: ``MODELS``, ``DEFAULT_MODEL`` and
``EXAMPLE`` are read from its syntax tree as literals. ``call_llm`` and ``exec_code`` reach the run that is
executing the program through a context variable, so a program imports them (``from runtime import call_llm``)
and never sees the run itself; :func:`current_run` is the handle for code that does (an optimizer).
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime._spec import _check_model, _parse_model
from runtime.types import LLMCall, ModelSpec, SpecError, UsageError
from runtime.types._errors import unreadable

if TYPE_CHECKING:
    from runtime._program_run import ProgramRun

__all__ = ["ENTRY", "Program", "ProgramFn", "call_llm", "current_run", "exec_code", "load_program", "parse_models"]

ProgramFn = Callable[[str], Awaitable[str]]
ENTRY = "workflow"  # the function a program file defines, called with the input as ``problem``
_CONSTANTS = ("MODELS", "DEFAULT_MODEL", "EXAMPLE")

_CURRENT: ContextVar[ProgramRun | None] = ContextVar("ontime_program_run", default=None)


class Program:
    """A workflow written as an async Python function of one string (the problem) that returns the answer.

    ``Program(fn)`` wraps a function of one's own, run in this process; :func:`load_program` and
    :meth:`from_source` read model-written code, which runs only in the sandbox. Run either with
    :func:`runtime.run`.

    Args:
        fn: ``async def workflow(problem: str) -> str``; it calls :func:`runtime.call_llm` (and
            :func:`runtime.exec_code`) for its models.
        name: what events and the journal call the program (default: the function's name).
        models: the models it may call, as a workflow spec's ``"models"`` block or :class:`runtime.ModelSpec`
            objects by name (``runtime.run(..., models=...)`` may give them instead).
        default_model: the model of a call that names none (default: the only model, if there is one).
        example: the input ``ontime run`` gives it when none is given.

    Raises:
        UsageError: ``fn`` is not an async function, or a model is malformed (:class:`SpecError`).
    """

    __slots__ = ("default_model", "description", "example", "fn", "models", "name", "source")

    def __init__(
        self,
        fn: ProgramFn,
        *,
        name: str | None = None,
        models: Mapping[str, Any] | None = None,
        default_model: str | None = None,
        example: str | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise UsageError(f"a program is an async function of the problem (async def workflow), not {fn!r}")
        self.fn: ProgramFn | None = fn
        self.source: str | None = None
        self.name: str = name or str(getattr(fn, "__name__", ENTRY))
        self.description = inspect.getdoc(fn) or ""
        self.models = None if models is None else parse_models(models, self.name)
        self.default_model = _text_or_none(default_model, "default_model", self.name)
        self.example = _text_or_none(example, "example", self.name)

    @classmethod
    def from_source(cls, source: str, *, name: str = "program") -> Program:
        """A program from its text (see :mod:`runtime._program` for the format), checked without running it.

        Raises:
            SpecError: not Python, no ``async def workflow(problem)``, or ``MODELS``, ``DEFAULT_MODEL`` or
                ``EXAMPLE`` not a literal of the right kind.
        """
        if not isinstance(source, str):
            raise UsageError(f"a program's source must be text, not {type(source).__name__}")
        try:
            tree = ast.parse(source, filename=name)
        except SyntaxError as exc:
            raise SpecError(f"not valid Python (line {exc.lineno}: {exc.msg})", source=name) from None
        except ValueError as exc:  # a NUL byte
            raise SpecError(f"not valid Python ({exc})", source=name) from None
        entry = [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == ENTRY]
        if not entry or len(entry[0].args.args) != 1:
            raise SpecError(f"defines no `async def {ENTRY}(problem)` at the top level", source=name)
        found = _literals(tree, name)
        program = cls.__new__(cls)  # no function: the text is all there is, and it never runs here
        program.fn, program.source, program.name = None, source, name
        program.description = ast.get_docstring(tree) or ""
        models = found.get("MODELS")
        program.models = None if models is None else parse_models(models, name)
        program.default_model = _text_or_none(found.get("DEFAULT_MODEL"), "DEFAULT_MODEL", name)
        program.example = _text_or_none(found.get("EXAMPLE"), "EXAMPLE", name)
        return program

    @property
    def sandboxed(self) -> bool:
        """Whether it runs in the sandbox (model-written code read as text) rather than in this process."""
        return self.source is not None

    def __repr__(self) -> str:
        return f"Program({self.name!r}, {'sandboxed' if self.sandboxed else 'in process'})"


def load_program(path: str | PathLike[str]) -> Program:
    """A program file (``.py``), read as text and checked; it will run in the sandbox, never in this process.

    Raises:
        SpecError: the file cannot be read, or is not a program (:meth:`Program.from_source`).
    """
    if not isinstance(path, str | PathLike):
        raise UsageError(f"a program's path must be a string or a path, not {path!r}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read the file ({unreadable(exc)})", source=str(path)) from None
    return Program.from_source(text, name=str(path))


def parse_models(block: Mapping[str, Any], source: str | None) -> dict[str, ModelSpec]:
    """A models block (a workflow spec's ``"models"``, or :class:`ModelSpec` objects) checked as a spec's are.

    Raises:
        SpecError: not a mapping, empty, or a malformed model.
    """
    if not isinstance(block, Mapping) or not block:
        raise SpecError("must be a non-empty mapping of model names to models", source=source, field="models")
    out = {}
    for name, spec in block.items():
        if isinstance(spec, ModelSpec):
            _check_model(spec, source)
            out[spec.name] = spec
        else:
            out[str(name)] = parsed = _parse_model(str(name), spec, source)
            _check_model(parsed, source)
    return out


def _literals(tree: ast.Module, source: str) -> dict[str, Any]:
    """The module-level constants a program may declare, evaluated as literals (nothing is executed)."""
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in _CONSTANTS:
                try:
                    found[target.id] = ast.literal_eval(value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    raise SpecError(f"{target.id} must be a literal (a dict, a string)", source=source) from None
    return found


def _text_or_none(value: object, what: str, source: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise SpecError(f"{what} must be a string, not {type(value).__name__}", source=source)
    return value


def current_run() -> ProgramRun:
    """The run executing the calling program: its ledger, clock and events, for code that calls into it
    directly (an optimizer evaluating model-written programs under its own budget).

    Raises:
        UsageError: called outside a program run by :func:`runtime.run`.
    """
    run = _CURRENT.get()
    if run is None:
        raise UsageError("call_llm, exec_code and current_run work inside a program run by runtime.run")
    return run


async def call_llm(
    messages: list[str] | str,
    temperature: float = 0.0,
    num_of_response: int = 1,
    agent_role: str = "",
    instructions: str = "",
    *,
    model: str | None = None,
    n: int | None = None,
    max_tokens: int | None = None,
    tag: str = "",
) -> list[str]:
    """Ask ``model`` (default: the program's default model) for ``n`` answers (``num_of_response``) to one
    prompt, as one batch under the run's budget and deadline; the BayesFlow paper's helper (Appendix G).

    Returns the answers in sample order: a sample whose endpoint failed is left out (so fewer than ``n`` may
    come back), a sample cut off at ``max_tokens`` returns what it wrote.

    Raises:
        OverBudgetError: the call's worst case does not fit in what is left of the budget (nothing is spent).
        PastDeadlineError: the run's deadline has passed.
        ProviderError: every sample's endpoint failed.
        UsageError: a bad argument, an unknown model, or called outside a program run.
    """
    request = LLMCall(
        messages=(messages,) if isinstance(messages, str) else tuple(messages),
        model=model,
        n=num_of_response if n is None else n,
        temperature=temperature,
        agent_role=agent_role,
        instructions=instructions,
        max_tokens=max_tokens,
        tag=tag,
    )
    return list((await current_run().call(request)).outputs)


async def exec_code(solution: str, tests: str | None = None) -> str | list[dict[str, Any]] | dict[str, str]:
    """Run ``solution`` against ``tests`` (default: the problem's public tests, the run's ``tests`` option) in the
    code sandbox; the BayesFlow paper's helper: ``"no error"``, the failing test cases, or
    ``{"exec_fail_case": message}``. Async so that the deadline can stop it.

    Raises:
        PastDeadlineError: the run's deadline has passed.
        UsageError: no tests at all, or called outside a program run.
    """
    return await current_run().exec_code(solution, tests)
