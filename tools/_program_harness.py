"""Runs inside the sandbox's child for :mod:`tools.program_sandbox` (``python -I -S``, standard library only):
isolates itself with :mod:`tools._sandbox_harness`'s machinery (supervisor, namespaces, limits, audit hook),
loads a workflow program and runs it on every input, each of its calls a request to the parent.

argv: cpu_s memory_bytes file_bytes isolation. stdin: one JSON line ``{"source", "inputs", "entry",
"concurrency"}``, then the parent's replies; stdout: requests and outcomes (the protocol is in
:mod:`tools.program_sandbox`). Before the program loads, the channel moves to descriptors of its own and
descriptors 0 and 1 become /dev/null: the program's prints and reads never touch it.

The program may import the standard library, except ``ssl`` (there is no network in here, and leaving it
out spares every spawn asyncio's import of it). The child cannot import ontime (bubblewrap's root holds
the standard library and the two harnesses only), so :func:`llm_request` checks a call as
``runtime.types.LLMCall`` does; a test holds the two to the same answers, and the parent checks every
request again anyway.
"""

import sys

if __name__ == "__main__":  # no network in here: spare asyncio's import of ssl, ~5 ms of every spawn
    sys.modules["ssl"] = None  # type: ignore[assignment]  # None makes an import fail: Python's own way

import asyncio  # noqa: TID251 (the program's own loop: programs are written for asyncio, as the paper's are)
import contextvars
import importlib.util
import inspect
import json
import linecache
import math
import os
import time
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools import _sandbox_harness as shared
else:  # run as a script (``-I`` puts no script folder on sys.path): load the sibling by its path

    def _sibling(name: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    shared = _sibling("_sandbox_harness")

PROGRAM = shared.PROGRAM
MAX_TEXT = 2000  # characters of an error kept
MAX_FRAMES = 3  # the program's own innermost frames in an error
MAX_LINE = 2**20  # bytes of a line to the parent: tools.program_sandbox.REQUEST_CAP (a test holds them equal)
MAX_VALUE = MAX_LINE - 1024  # bytes of a returned string as it crosses (escaped): room for the outcome's fields
_MAX_N = 64  # as runtime.types.LLMCall


class CallRefusedError(Exception):
    """The run refused a call (its budget or deadline would not allow it)."""


class OverBudgetError(CallRefusedError):
    """The call's worst-case cost does not fit in what is left of the budget."""


class PastDeadlineError(CallRefusedError):
    """The run's deadline has passed, or the call cannot finish before it."""


class UsageError(ValueError):
    """A call's arguments are wrong."""


class ProviderError(Exception):
    """A model endpoint failed (every sample of the call): the program may catch it and degrade."""


class ProviderRejectedError(ProviderError):
    """The endpoint refused the request itself (authentication, permissions, unknown model, bad request)."""


class ProviderUnavailableError(ProviderError):
    """A transient failure: server error, timeout, dropped connection or a reply that could not be parsed."""


class RateLimitedError(ProviderUnavailableError):
    """The endpoint asked the run to slow down."""


_ERRORS: dict[str, type[Exception]] = {
    c.__name__: c
    for c in (
        CallRefusedError,
        OverBudgetError,
        PastDeadlineError,
        UsageError,
        ProviderError,
        ProviderRejectedError,
        ProviderUnavailableError,
        RateLimitedError,
    )
}
_input: contextvars.ContextVar[int | None] = contextvars.ContextVar("input", default=None)


def llm_request(
    messages: Any,
    temperature: Any = 0.0,
    num_of_response: Any = 1,
    agent_role: Any = "",
    instructions: Any = "",
    *,
    model: Any = None,
    n: Any = None,
    max_tokens: Any = None,
    tag: Any = "",
) -> dict[str, Any]:
    """``LLMCall(...).to_json()`` for ``call_llm``'s arguments (``n`` overrides ``num_of_response``), checked
    as ``LLMCall`` checks them: a wrong argument raises :class:`UsageError` in the program, with the same
    message, before anything crosses the channel."""
    if isinstance(messages, str):
        messages = [messages]
    if not isinstance(messages, list | tuple) or not messages:
        raise UsageError("call_llm: messages must be a non-empty list of strings")
    if not all(isinstance(m, str) for m in messages):
        raise UsageError("call_llm: every message must be a string")
    if model is not None and not (isinstance(model, str) and model):
        raise UsageError(f"call_llm: model must be a model's name, not {model!r}")
    n = num_of_response if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_N:
        raise UsageError(f"call_llm: n (num_of_response) must be an integer from 1 to {_MAX_N}, not {n!r}")
    t = temperature
    if isinstance(t, bool) or not isinstance(t, int | float) or not (math.isfinite(t) and 0.0 <= t <= 2.0):
        raise UsageError(f"call_llm: temperature must be a number from 0 to 2, not {t!r}")
    for name, value in (("agent_role", agent_role), ("instructions", instructions), ("tag", tag)):
        if not isinstance(value, str):
            raise UsageError(f"call_llm: {name} must be a string, not {value!r}")
    cap = max_tokens
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 2**31):
        raise UsageError(f"call_llm: max_tokens must be a positive integer, not {cap!r}")
    return {"messages": list(messages), "model": model, "n": n, "temperature": t, "agent_role": agent_role,
            "instructions": instructions, "max_tokens": cap, "tag": tag}  # fmt: skip


class Channel:
    """The child's end: requests out as JSON lines, replies in, each resolving the call that waits on its id."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out
        self.buffer = bytearray()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.last_id = 0

    def first_line(self) -> bytes:
        """The job, read before the loop starts (what follows it stays in the buffer)."""
        while b"\n" not in self.buffer:
            chunk = os.read(self.fd_in, 1 << 16)
            if not chunk:
                os._exit(1)  # the parent is gone
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return line

    def send(self, message: dict[str, Any]) -> None:
        """One line, whole: ``json.dumps`` escapes every newline inside it. Blocks while the pipe is full
        (the parent reads all the time).

        Raises:
            UsageError: the line is over :data:`MAX_LINE` bytes (the parent would stop the child for it).
        """
        line = json.dumps(message).encode() + b"\n"
        if len(line) > MAX_LINE:
            raise UsageError(f"{message['op']}: the request is {len(line)} bytes, over the channel's cap of {MAX_LINE}")
        view = memoryview(line)
        while view:
            view = view[os.write(self.fd_out, view) :]

    async def ask(self, op: str, payload: dict[str, Any]) -> Any:
        index = _input.get()
        if index is None:
            raise UsageError(f"{op}: only a running workflow() may call it, not the program's top level")
        self.last_id += 1
        call_id = self.last_id
        future = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = future
        try:
            self.send({"id": call_id, "index": index, "op": op, "payload": payload})
            return await future
        finally:
            del self.waiting[call_id]

    def readable(self) -> None:
        chunk = os.read(self.fd_in, 1 << 16)
        if not chunk:
            os._exit(1)  # the parent is gone
        self.buffer += chunk
        while (end := self.buffer.find(b"\n")) >= 0:
            reply = json.loads(self.buffer[:end])
            del self.buffer[: end + 1]
            future = self.waiting.get(reply["id"])
            if future is None or future.done():  # the call was cancelled in the program
                continue
            if "error_type" in reply:
                future.set_exception(_ERRORS.get(reply["error_type"], CallRefusedError)(reply["message"]))
            else:
                future.set_result(reply["value"])


_channel: Channel  # set by main()


async def call_llm(
    messages: Any,
    temperature: Any = 0.0,
    num_of_response: Any = 1,
    agent_role: Any = "",
    instructions: Any = "",
    *,
    model: Any = None,
    n: Any = None,
    max_tokens: Any = None,
    tag: Any = "",
) -> Any:
    """Ask the parent for ``n`` answers to one prompt (see ``runtime.types.LLMCall``); the run may refuse."""
    payload = llm_request(messages, temperature, num_of_response, agent_role, instructions, model=model, n=n,
                          max_tokens=max_tokens, tag=tag)  # fmt: skip
    return await _channel.ask("call_llm", payload)


async def exec_code(solution: Any, tests: Any = None) -> Any:
    """Run ``solution`` against ``tests`` (None: the problem's public tests) in a sandbox of the parent's."""
    if not isinstance(solution, str) or not (tests is None or isinstance(tests, str)):
        raise UsageError("exec_code: solution must be a string, and tests a string or None")
    return await _channel.ask("exec_code", {"solution": solution, "tests": tests})


def describe(exc: BaseException) -> str:
    """The error's type and message, then the program's innermost frames (not the harness's)."""
    try:
        message = str(exc)
    except Exception:  # a program's exception whose __str__ fails
        message = ""
    head = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == PROGRAM][-MAX_FRAMES:]
    tail = "".join(traceback.format_list(frames)).rstrip()
    return (f"{head}\n{tail}" if tail else head)[:MAX_TEXT]


def load(source: str, entry: str) -> Callable[[str], Any]:
    """The program as a module (``program``) with the helpers and error classes injected; its ``entry``."""
    linecache.cache[PROGRAM] = (len(source), None, source.splitlines(True), PROGRAM)
    module = types.ModuleType("program")
    module.__dict__.update(call_llm=call_llm, exec_code=exec_code, **_ERRORS)
    sys.modules["program"] = module
    exec(compile(source, PROGRAM, "exec"), module.__dict__)
    function = module.__dict__.get(entry)
    if not callable(function):
        raise UsageError(f"the program defines no {entry}() to call")
    return function  # type: ignore[no-any-return]


def outcome(index: int, value: str | None, error: str | None, seconds: float) -> dict[str, Any]:
    return {
        "id": None,
        "index": index,
        "op": "outcome",
        "payload": {"value": value, "error": error, "seconds": seconds},
    }


async def run_all(job: dict[str, Any]) -> None:
    """Load the program (a failure is every input's outcome), then run ``entry`` on every input,
    ``concurrency`` at once, sending each outcome as it is known."""
    asyncio.get_running_loop().add_reader(_channel.fd_in, _channel.readable)
    inputs: list[str] = job["inputs"]
    try:
        workflow = load(job["source"], job["entry"])
    except BaseException as exc:  # the program's top level may raise anything, SystemExit too
        error = describe(exc)
        for i in range(len(inputs)):
            _channel.send(outcome(i, None, error, 0.0))
        return
    gate = asyncio.Semaphore(job["concurrency"])

    async def one(index: int) -> None:
        async with gate:
            _input.set(index)  # this task's context only: the calls it makes, and tasks it starts, are its
            start = time.monotonic()
            value, error = None, None
            try:
                result = workflow(inputs[index])
                if inspect.isawaitable(result):
                    result = await result
                if not isinstance(result, str):
                    error = f"workflow returned {type(result).__name__}, not str"
                elif len(json.dumps(result)) > MAX_VALUE:
                    error = (
                        f"workflow returned {len(result)} characters, over the channel's {MAX_VALUE} bytes (escaped)"
                    )
                else:
                    value = str(result)
            except BaseException as exc:  # whatever the program raises is its input's outcome
                try:
                    error = describe(exc)
                except MemoryError:
                    error = "MemoryError"
            _channel.send(outcome(index, value, error, time.monotonic() - start))

    await asyncio.gather(*(one(i) for i in range(len(inputs))))


def main() -> None:
    global _channel
    cpu_s, memory, file_size = (int(x) for x in sys.argv[1:4])
    shared._supervise()
    own_user_namespace = sys.argv[4] == "bubblewrap" or shared._unshare()
    _channel = Channel(os.dup(0), os.dup(1))  # close-on-exec copies; 0 and 1 become /dev/null
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    job = json.loads(_channel.first_line())
    os.set_blocking(_channel.fd_in, False)
    workdir = os.path.realpath(os.getcwd())
    stdlib = tuple(os.path.realpath(p) for p in sys.path if p)  # with -I -S: the standard library alone
    shared._limit(cpu_s, memory, file_size, nproc=own_user_namespace)
    shared._guard(workdir, (*stdlib, "/dev/null", "/dev/urandom", "/dev/zero"))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(run_all(job))
    os._exit(0)  # no teardown: tasks the program left behind, and its finalizers, do not run


if __name__ == "__main__":
    main()
