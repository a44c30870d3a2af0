"""Run a model-written workflow program in the sandbox; its ``call_llm`` and ``exec_code`` calls cross a
channel to the parent, where a handler (the run's ledger and clock) answers or refuses each one.

    outcomes = await arun_program(source, inputs, handler=handler)   # one ProgramOutcome per input

The child is isolated as :func:`tools.sandbox.run_tests` isolates tests (the same :class:`Limits`, bubblewrap
or the audit hook, supervisor, scrubbed environment, no network, no files outside an empty work directory).
It loads the source as a module with ``call_llm``, ``exec_code`` and the error classes injected, and runs
``await workflow(inputs[i])`` for every input, ``concurrency`` at once, on an asyncio loop of its own. The
channel is the only way out: every call is a request the parent checks again (``LLMCall.from_json``) before
it awaits ``handler(index, op, payload)``.

The channel is the child's stdin and stdout, one JSON object a line::

    child:  {"id": 7, "index": 0, "op": "call_llm" | "exec_code", "payload": {...}}
            {"id": null, "index": 0, "op": "outcome", "payload": {"value", "error", "seconds"}}
    parent: {"id": 7, "ok": true, "value": ...}  or  {"id": 7, "error_type": "OverBudgetError", "message": "..."}

Before the program loads, the harness moves the channel to descriptors of its own and points descriptors 0
and 1 at /dev/null, so nothing the program prints or reads can forge, split or swallow a message. We chose
this over a nonce (as :func:`tools.sandbox.run_tests` puts on its report): a nonce only proves who wrote a
message, and a program shares its process with the harness, so it could read the nonce; what matters here
is that its output never interleaves with the channel. Code written to escape can still write to the
channel's descriptor, but all it can send is a request, checked like any other and answered by the same
handler: nothing ``call_llm`` does not already give it.

A line of :data:`REQUEST_CAP` bytes or more, one that is not a message, more than :data:`MAX_PENDING`
calls at once, or more than :data:`INFLIGHT_CAP` bytes held for them (requests, and replies the child has
not read: a call counts until its reply is written) kill the child: every input without an outcome gets a
``SandboxError`` outcome, and the parent goes on. A well-formed request the parent refuses (a bad payload,
an unknown op or input) raises ``UsageError`` in the program. A reply over :data:`MESSAGE_CAP` is a
``UsageError`` too; so is a request over the line cap, raised by the harness before it sends it (only a
forged line reaches the parent over it).

Limits: ``wall_s`` bounds the whole child, the handler's time included; ``cpu_s`` and ``memory_mb`` are the
child's across all inputs.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from anyio.streams.buffered import BufferedByteReceiveStream

from runtime.types import (
    CallRefusedError,
    LLMCall,
    OverBudgetError,
    PastDeadlineError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
    SandboxError,
    UsageError,
)
from tools import sandbox
from tools.sandbox import Limits

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio.abc import Process, TaskGroup

__all__ = [
    "INFLIGHT_CAP",
    "MAX_PENDING",
    "MESSAGE_CAP",
    "REQUEST_CAP",
    "ProgramHandler",
    "ProgramOutcome",
    "arun_program",
]

ProgramHandler = Callable[[int, str, Mapping[str, Any]], Awaitable[Any]]
"""``(input index, op, payload) -> reply``: ``op`` is ``"call_llm"`` (payload ``LLMCall.to_json()``, reply
``list[str]``) or ``"exec_code"`` (payload ``{"solution", "tests"}``, reply exec_code's result)."""

MESSAGE_CAP = 8 * 2**20  # bytes of a reply line: up to 64 answers of a call, or exec_code's report
# Bytes of a line from the child. A call_llm request is one prompt: 1 MiB of JSON is ~250k tokens, past the
# context of every model in the paper's tables (GPT-4o's is 128k); an exec_code request is a solution and
# its tests, source code a hundred times smaller (the problem's own tests, tests=None, never cross). An
# outcome is a workflow's answer, held to this by the harness.
REQUEST_CAP = 2**20
# Bytes the parent holds for calls in flight: request lines awaiting the handler (an exec_code waiting for
# a sandbox slot, a call waiting for the model) and replies awaiting a child that does not read. 64 maximal
# requests, or all MAX_PENDING calls at 16 KiB each (a 4k-token prompt): a program's real fan-out needs far
# less, and the parent's share stays within a child's own default memory limit.
INFLIGHT_CAP = 64 * 2**20
MAX_PENDING = 4096  # calls awaiting replies (or their replies' writing) at once: more is a flood, not a plan
_PROGRAM_HARNESS = str(Path(__file__).with_name("_program_harness.py"))
# Raised in the program under the same name (the harness defines these classes, with these bases), most
# specific first: a refusal, a bad call, or an endpoint's failure, which a program may catch and degrade.
_FORWARDED = (
    OverBudgetError,
    PastDeadlineError,
    CallRefusedError,
    UsageError,
    RateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
    ProviderError,
)
_ERROR_TEXT = 2000  # characters of a forwarded error's message (the harness's own cap on an outcome's error)
_DONE_GRACE_S = 1.0  # for a child that sent its last outcome to exit by itself


@dataclass(frozen=True, slots=True)
class ProgramOutcome:
    """What ``workflow(input)`` came to: the string it returned, or why not (``"OverBudgetError: ..."`` and
    the program's innermost frames, ``"timeout: ..."``, the sandbox's end), and the seconds it took."""

    value: str | None
    error: str | None
    seconds: float


async def arun_program(
    source: str,
    inputs: Sequence[str],
    *,
    handler: ProgramHandler,
    entry: str = "workflow",
    limits: Limits | None = None,
    concurrency: int = 8,
) -> list[ProgramOutcome]:
    """Run the program ``source`` in a fresh sandbox on every input; one outcome per input, in order.

    The handler's ``CallRefusedError``, ``UsageError`` and ``ProviderError`` (and their subclasses) raise
    the same class in the program, with the same message: a program may catch an endpoint's outage and
    degrade, as it may in process. Any other exception from the handler kills the child and propagates. Cancelling
    this call kills the child and everything it started before the cancellation goes on, and cancels the
    handler calls still running.

    Raises:
        UsageError: ``entry`` is not a name, an input is not a string, or ``concurrency`` is below 1.
        SandboxError: the sandbox cannot start.
    """
    if not entry.isidentifier():
        raise UsageError(f"entry must be a function's name, not {entry!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"concurrency must be a positive integer, not {concurrency!r}")
    if not all(isinstance(x, str) for x in inputs):
        raise UsageError("every input must be a string")
    if not inputs:
        return []
    limits = limits or Limits()
    isolation = await anyio.to_thread.run_sync(sandbox._isolation, limits.isolation)  # probes bwrap once
    job = {"source": source, "inputs": list(inputs), "entry": entry, "concurrency": concurrency}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ontime-program-") as workdir, tempfile.TemporaryFile() as err_f:
        argv, env = sandbox._child(_PROGRAM_HARNESS, limits, [], workdir, isolation)
        try:
            proc = await anyio.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err_f,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        channel = _Channel(proc, len(inputs), handler)
        try:
            with anyio.move_on_after(limits.wall_s) as wall:
                await channel.serve((json.dumps(job) + "\n").encode())
        finally:
            await _end(proc, gently=channel.finished)
        if channel.failure is not None:
            raise channel.failure
        if wall.cancelled_caught:
            reason = f"timeout: the program ran past its wall limit of {limits.wall_s:g} s"
        elif channel.broken is not None:
            reason = f"SandboxError: the program broke the channel ({channel.broken}), so it was stopped"
        else:
            reason = "SandboxError: " + sandbox._death(proc.returncode, limits, "workflow returned")
            reason += _tail(err_f)
    elapsed = time.monotonic() - start
    return [channel.outcomes.get(i) or ProgramOutcome(None, reason, elapsed) for i in range(len(inputs))]


class _Channel:
    """The parent's end: reads the child's lines, runs the handler for each request, writes the replies."""

    def __init__(self, proc: Process, count: int, handler: ProgramHandler) -> None:
        self.proc, self.count, self.handler = proc, count, handler
        self.outcomes: dict[int, ProgramOutcome] = {}
        self.broken: str | None = None  # why the child was stopped for what it sent
        self.failure: Exception | None = None  # the handler's, to propagate
        self.pending = 0  # calls whose reply is not written yet
        self.held = 0  # bytes of their requests and replies
        self.finished = False  # every outcome is in, or the child closed the channel: it is ending by itself
        self.writing = anyio.Lock()

    async def serve(self, job: bytes) -> None:
        """Send the job, then answer requests until every input has its outcome or the child ends."""
        assert self.proc.stdin is not None and self.proc.stdout is not None  # opened as pipes
        with contextlib.suppress(anyio.BrokenResourceError):  # the child died at once: its status says why
            await self.proc.stdin.send(job)
        lines = BufferedByteReceiveStream(self.proc.stdout)
        async with anyio.create_task_group() as tg:
            while len(self.outcomes) < self.count:
                try:
                    line: bytes | None = await lines.receive_until(b"\n", REQUEST_CAP)
                except anyio.IncompleteRead:  # the child ended
                    self.finished = True
                    break
                except anyio.DelimiterNotFound:
                    line = None
                if line is None or len(line) >= REQUEST_CAP:  # (a line that came whole in one read may be)
                    self._break(f"a message over {REQUEST_CAP} bytes", tg)
                else:
                    self._break(self._take(line, tg), tg)
                if self.broken is not None:  # here, or by a call whose replies the child does not read
                    break
            else:
                self.finished = True
            tg.cancel_scope.cancel()  # handler calls still running: the child no longer waits for them

    def _take(self, line: bytes, tg: TaskGroup) -> str | None:
        """Record an outcome or start a handler call; what is wrong with the line, if anything."""
        try:
            message = json.loads(line)
        except ValueError:
            return "a line that is not JSON"
        if not isinstance(message, dict) or set(message) != {"id", "index", "op", "payload"}:
            return "a line that is not a message"
        if message["op"] == "outcome":
            return self._outcome(message["index"], message["payload"])
        call_id = message["id"]
        if isinstance(call_id, bool) or not isinstance(call_id, int):
            return "a request without an integer id"
        if self.pending >= MAX_PENDING:
            return f"more than {MAX_PENDING} calls at once"
        if self.held + len(line) > INFLIGHT_CAP:
            return f"more than {INFLIGHT_CAP} bytes of calls in flight"
        self.pending += 1
        self.held += len(line)
        tg.start_soon(self._call, call_id, message["index"], message["op"], message["payload"], len(line), tg)
        return None

    def _break(self, reason: str | None, tg: TaskGroup) -> None:
        """Stop serving a child that broke the channel (the first reason stands)."""
        if reason is not None and self.broken is None:
            self.broken = reason
            tg.cancel_scope.cancel()

    def _outcome(self, index: Any, payload: Any) -> str | None:
        if not _is_index(index, self.count) or not isinstance(payload, dict):
            return "an outcome for no input"
        value, error, seconds = payload.get("value"), payload.get("error"), payload.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
            return "a malformed outcome"
        if not ((isinstance(value, str) and error is None) or (value is None and isinstance(error, str))):
            return "a malformed outcome"
        self.outcomes.setdefault(index, ProgramOutcome(value, error, float(seconds)))
        return None

    async def _call(self, call_id: int, index: Any, op: Any, payload: Any, size: int, tg: TaskGroup) -> None:
        """Answer one request. It stays pending, and its ``size`` bytes held (its reply's too, once made),
        until the reply is written: a child that stops reading cannot pile up replies in the parent."""
        try:
            try:
                if _is_index(index, self.count) and index in self.outcomes:
                    raise UsageError(f"{op}: workflow(inputs[{index}]) has already returned")
                value = await self.handler(*_request(index, op, payload, self.count))
                data = json.dumps({"id": call_id, "ok": True, "value": value}).encode()
                del value  # only ``data`` is held (and counted) while the reply waits to be written
            except _FORWARDED as exc:
                data = _refusal(call_id, exc)
            except Exception as exc:  # the handler's own failure (or a reply that is not JSON): the run's to see
                if self.failure is None:
                    self.failure = exc
                tg.cancel_scope.cancel()
                return
            if len(data) >= MESSAGE_CAP:
                data = _refusal(
                    call_id, UsageError(f"{op}: the reply is over the channel's cap of {MESSAGE_CAP} bytes")
                )
            if self.held + len(data) > INFLIGHT_CAP:
                self._break(f"more than {INFLIGHT_CAP} bytes of calls in flight", tg)
                return
            self.held += len(data)
            size += len(data)
            assert self.proc.stdin is not None
            async with self.writing:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):  # the child is gone
                    await self.proc.stdin.send(data + b"\n")
        finally:
            self.pending -= 1
            self.held -= size


def _request(index: Any, op: Any, payload: Any, count: int) -> tuple[int, str, dict[str, Any]]:
    """A request from the channel, checked as if the child had not checked it: the handler's arguments.

    Raises:
        UsageError: no such input or op, or the payload is not a valid call.
    """
    if not _is_index(index, count):
        raise UsageError(f"channel: no input {index!r}")
    if op == "call_llm":
        return index, op, LLMCall.from_json(payload).to_json()
    if op == "exec_code":
        if not isinstance(payload, dict) or set(payload) != {"solution", "tests"}:
            raise UsageError("exec_code: the request must hold exactly solution and tests")
        solution, tests = payload["solution"], payload["tests"]
        if not isinstance(solution, str) or not isinstance(tests, str | None):
            raise UsageError("exec_code: solution must be a string, and tests a string or None")
        return index, op, {"solution": solution, "tests": tests}
    raise UsageError(f"channel: unknown op {op!r}")


def _is_index(index: Any, count: int) -> bool:
    return isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count


def _refusal(call_id: int, exc: Exception) -> bytes:
    """The error reply: the most specific class the program knows, and the message (capped). Only the message
    crosses: a provider error's never holds a key, and its ``provider``/``status`` stay in the run's events."""
    name = next(c.__name__ for c in _FORWARDED if isinstance(exc, c))
    return json.dumps({"id": call_id, "error_type": name, "message": str(exc)[:_ERROR_TEXT]}).encode()


async def _end(proc: Process, *, gently: bool) -> None:
    """Stop the child with everything it started, and reap it; shielded, so that a cancelled caller waits
    for it (a bound of a few seconds at worst). ``gently``: it may be exiting by itself, so wait a moment
    first. SIGTERM lets the supervisor kill and reap the program's strays (bubblewrap's namespace dies with
    it), then SIGKILL takes the rest of the group."""
    with anyio.CancelScope(shield=True):
        if gently:
            with anyio.move_on_after(_DONE_GRACE_S):
                await proc.wait()
        if proc.returncode is None:
            sandbox._stop(proc.pid)
            with anyio.move_on_after(sandbox._STOP_GRACE_S):
                await proc.wait()
        sandbox._kill_group(proc.pid)
        with anyio.move_on_after(sandbox._STOP_GRACE_S):
            await _drain(proc)
        await proc.aclose()


async def _drain(proc: Process) -> None:
    """Read the child's stdout to its end, which comes when every process of the sandbox has gone (bwrap's
    namespace outlives bwrap by a moment). Only then has the stdin pipe no reader, so that asyncio drops a
    reply the child never read and closes the pipe; closed before, it would hold both until the loop ends."""
    assert proc.stdout is not None
    with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        while True:
            await proc.stdout.receive()


def _tail(err_f: Any, size: int = 500) -> str:
    """The end of the child's stderr, when it died without saying why on the channel."""
    err_f.seek(0, 2)
    err_f.seek(max(0, err_f.tell() - size))
    text = err_f.read().decode("utf-8", "replace").strip()
    return f"; stderr: {text}" if text else ""
