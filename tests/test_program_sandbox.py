"""Model-written workflows in the sandbox (issue 19): outcomes per input, the channel's checks, and
containment. With a handler that plays the parent's ledger, a program cannot overspend, outlive the
deadline, read the keys or reach the network, in both isolation modes (bubblewrap skipped where it does not
work)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.types import (
    CallRefusedError,
    LimitError,
    LLMCall,
    OverBudgetError,
    PastDeadlineError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
    UsageError,
)
from tools import _program_harness, program_sandbox, sandbox
from tools.program_sandbox import INFLIGHT_CAP, MAX_PENDING, MESSAGE_CAP, REQUEST_CAP, arun_program
from tools.sandbox import Limits

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from tools.program_sandbox import ProgramHandler, ProgramOutcome
    from tools.sandbox import Isolation

pytestmark = pytest.mark.anyio

FAST = Limits(wall_s=10, cpu_s=2, memory_mb=256, file_mb=1)
_NO_BWRAP = sandbox._bwrap_problem()
MODES = [
    pytest.param("bubblewrap", marks=pytest.mark.skipif(_NO_BWRAP is not None, reason=str(_NO_BWRAP))),
    "audit-hook",
]


@pytest.fixture(params=MODES)
def isolated(request: pytest.FixtureRequest) -> Limits:
    """``FAST`` limits in each isolation mode."""
    mode: Isolation = request.param
    return replace(FAST, isolation=mode)


class Ledger:
    """A parent's ledger in miniature: every answer costs one unit, and a call that would pass the budget
    is refused whole, as the run's ledger refuses a batch whose worst case does not fit."""

    def __init__(self, budget: int) -> None:
        self.budget, self.spent, self.refused = budget, 0, 0
        self.calls: list[tuple[int, str, Mapping[str, Any]]] = []

    async def __call__(self, index: int, op: str, payload: Mapping[str, Any]) -> Any:
        self.calls.append((index, op, payload))
        if op == "exec_code":
            return "no error"
        call = LLMCall.from_json(payload)
        if self.spent + call.n > self.budget:
            self.refused += 1
            raise OverBudgetError(f"{call.n} more answers would pass the budget of {self.budget}")
        self.spent += call.n
        return [f"{call.prompt} #{k}" for k in range(call.n)]


async def _echo(index: int, op: str, payload: Mapping[str, Any]) -> Any:
    return [f"{index}:{payload['messages'][0]}"] * payload["n"] if op == "call_llm" else payload


async def test_each_input_gets_its_own_outcome() -> None:
    source = '''
"""Step-annotated, as the meta-LLM writes them."""
async def workflow(problem):
    # Step 1: ask
    answers = await call_llm([problem, "be brief"], temperature=0.7, num_of_response=2, agent_role="tester")
    # Step 2: decide
    if problem == "raise":
        return {}["missing"]
    if problem == "number":
        return 42
    return " / ".join(answers)
'''
    out = await arun_program(source, ["a", "raise", "number", "b"], handler=_echo, limits=FAST)
    assert [o.value for o in out] == ["0:a / 0:a", None, None, "3:b / 3:b"]
    assert out[1].error is not None and out[1].error.startswith("KeyError: 'missing'\n")
    assert 'File "<program>", line 8, in workflow' in out[1].error  # the program's frame, not the harness's
    assert out[2].error == "workflow returned int, not str"
    assert all(o.seconds >= 0 for o in out)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("async def workflow(problem:\n    return problem\n", "SyntaxError: "),
        ("async def solve(problem):\n    return problem\n", "UsageError: the program defines no workflow() to call"),
        ("import numpy\nasync def workflow(problem):\n    return problem\n", "ModuleNotFoundError: "),
        ("x = call_llm\nraise SystemExit(3)\n", "SystemExit: 3"),
    ],
    ids=["syntax", "no-workflow", "third-party-import", "exit-at-load"],
)
async def test_a_program_that_does_not_load_fails_every_input(source: str, error: str) -> None:
    out = await arun_program(source, ["a", "b"], handler=_echo, limits=FAST)
    assert [o.value for o in out] == [None, None]
    assert all(o.error is not None and o.error.startswith(error) for o in out), out


async def test_another_entry_and_no_inputs() -> None:
    source = "def helper(x):\n    return x.upper()\nasync def main(problem):\n    return helper(problem)\n"
    [out] = await arun_program(source, ["q"], handler=_echo, entry="main", limits=FAST)
    assert (out.value, out.error) == ("Q", None)
    assert await arun_program(source, [], handler=_echo) == []
    with pytest.raises(UsageError):
        await arun_program(source, ["q"], handler=_echo, entry="main()")
    with pytest.raises(UsageError):
        await arun_program(source, ["q"], handler=_echo, concurrency=0)
    with pytest.raises(UsageError):
        await arun_program(source, [b"q"], handler=_echo)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("raised", "seen"),
    [
        (OverBudgetError("no money"), "OverBudgetError"),
        (PastDeadlineError("no time"), "PastDeadlineError"),
        (CallRefusedError("no"), "CallRefusedError"),
        (UsageError("bad call"), "UsageError"),
        (LimitError("a subclass the program does not know"), "UsageError"),
    ],
)
async def test_a_refusal_raises_the_same_class_in_the_program(raised: Exception, seen: str) -> None:
    source = """
async def workflow(problem):
    try:
        await call_llm(problem)
    except (OverBudgetError, PastDeadlineError) as exc:
        assert isinstance(exc, CallRefusedError)
        return f"{type(exc).__name__}: {exc}"
    except (CallRefusedError, UsageError) as exc:
        return f"{type(exc).__name__}: {exc}"
"""

    async def refuse(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        raise raised

    [out] = await arun_program(source, ["q"], handler=refuse, limits=FAST)
    assert out.value == f"{seen}: {raised}"


@pytest.mark.parametrize(
    ("raised", "mro"),
    [
        (ProviderError("down", provider="p"), "ProviderError"),
        (ProviderRejectedError("bad model", provider="p", status=404), "ProviderRejectedError ProviderError"),
        (ProviderUnavailableError("outage", provider="p"), "ProviderUnavailableError ProviderError"),
        (RateLimitedError("slow down", provider="p"), "RateLimitedError ProviderUnavailableError ProviderError"),
    ],
)
async def test_a_provider_error_is_raised_in_the_program_which_may_degrade(raised: Exception, mro: str) -> None:
    """As in process (``call_llm`` raises ``ProviderError``): one endpoint's outage is the program's to catch,
    not a crash of the run; the class, its bases and the message cross, the message capped."""
    source = """
async def workflow(problem):
    try:
        await call_llm(problem)
    except ProviderError as exc:
        bases = [c.__name__ for c in type(exc).__mro__ if c.__name__.endswith("Error") and c is not Exception]
        return " ".join(bases) + "|" + str(exc)
"""

    async def fail(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        raise raised

    [out] = await arun_program(source, ["q"], handler=fail, limits=FAST)
    assert out.value == f"{mro}|{raised}"

    async def verbose(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        raise ProviderUnavailableError("x" * 10**6, provider="p")

    [out] = await arun_program(source, ["q"], handler=verbose, limits=FAST)
    assert out.value is not None
    assert out.value.startswith("ProviderUnavailableError ProviderError|xxx")
    assert len(out.value) <= 100 + program_sandbox._ERROR_TEXT


async def test_the_handlers_own_failure_propagates_and_stops_the_child() -> None:
    source = "async def workflow(problem):\n    await call_llm(problem)\n    return 'never'\n"

    async def broken(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        raise RuntimeError("the ledger is broken")

    with pytest.raises(RuntimeError, match="the ledger is broken"):
        await arun_program(source, ["q", "r"], handler=broken, limits=FAST)
    assert _harnesses() == []


# --- (a) a program cannot overspend ---------------------------------------------------------------------


async def test_a_program_cannot_overspend_even_retrying_refused_calls(isolated: Limits) -> None:
    """It loops on call_llm forever and swallows every OverBudgetError: the ledger lets 3 calls of 3 answers
    through (9 of 10 units), refuses every call after, and the wall limit ends the program."""
    source = """
async def workflow(problem):
    while True:
        try:
            await call_llm(problem, n=3)
        except OverBudgetError:
            pass
"""
    ledger = Ledger(budget=10)
    [out] = await arun_program(source, ["q"], handler=ledger, limits=replace(isolated, wall_s=1.5))
    assert out.error is not None and out.error.startswith("timeout"), out
    assert ledger.spent == 9 and ledger.refused > 10, (ledger.spent, ledger.refused)


async def test_the_channel_is_the_only_way_to_the_handler(isolated: Limits) -> None:
    """Ontime's modules are not importable in the child, and lines printed in the channel's format (to
    stdout, stderr or descriptor 1) reach no handler: only the one real call does."""
    forged = json.dumps({"id": 1, "index": 0, "op": "call_llm", "payload": {"messages": ["forged"]}})
    source = f"""
import os, sys
async def workflow(problem):
    missing = []
    for name in ("runtime", "tools", "ontime", "anyio"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    for _ in range(100):
        print({forged!r})
        print({forged!r}, file=sys.stderr)
        os.write(1, {forged!r}.encode() + b"\\n")
    sys.stdout.flush()
    [answer] = await call_llm("real")
    return " ".join(missing) + " | " + answer
"""
    ledger = Ledger(budget=10)
    [out] = await arun_program(source, ["q"], handler=ledger, limits=isolated)
    assert out.value == "runtime tools ontime anyio | real #0", out
    assert [payload["messages"] for _, _, payload in ledger.calls] == [["real"]]


# --- (b) a program cannot outlive the deadline -----------------------------------------------------------


_HANGS = {
    "asyncio-sleep": "await asyncio.sleep(3600)",
    "busy-loop": "while True:\n        pass",
    "blocking-sleep": "time.sleep(3600)",
    "ignores-cancel": "while True:\n        try:\n            await asyncio.sleep(3600)\n"
    "        except BaseException:\n            pass",
    "pending-call": "await call_llm('hang')",
}


@pytest.mark.timeout(30)  # a child left running would hang the test: it fails instead
@pytest.mark.parametrize("hang", list(_HANGS), ids=list(_HANGS))
async def test_a_program_cannot_outlive_the_deadline(isolated: Limits, hang: str) -> None:
    """The deadline is a cancel scope around arun_program: when it expires, the child and every process it
    is made of are gone within a small bound, however the program waits, and a handler call still pending
    is cancelled."""
    source = f"""
import asyncio, time
async def workflow(problem):
    await call_llm("started")
    {_HANGS[hang]}
"""
    tree: set[int] = set()
    cancelled: list[bool] = []
    before = _descendants(os.getpid())  # what earlier tests left running (a Ray worker, say) is not the child's

    async def handler(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        if payload["messages"] == ["started"]:
            tree.update(_descendants(os.getpid()) - before)  # the child's processes, seen from outside it
            return ["go"]
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    deadline = 0.5
    start = time.monotonic()
    with anyio.move_on_after(deadline) as scope:
        await arun_program(source, ["q", "r"], handler=handler, limits=replace(isolated, wall_s=60, cpu_s=60))
    returned = time.monotonic() - start
    assert scope.cancelled_caught and returned < deadline + 2.5, returned
    assert len(tree) >= 2, tree  # the supervisor (or bwrap) and the program at least
    for _ in range(30):  # processes reparented out of a dead namespace are reaped by init
        if not _alive(tree):
            break
        await anyio.sleep(0.05)
    assert _alive(tree) == set()
    assert time.monotonic() - start < deadline + 3.0
    assert cancelled == ([True, True] if hang == "pending-call" else [])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_too(anyio_backend: str) -> None:
    """Library code runs on asyncio and trio alike: the channel, and the kill at the deadline."""
    source = "async def workflow(p):\n    [a] = await call_llm(p)\n    while p == 'hang':\n        pass\n    return a\n"
    [out] = await arun_program(source, ["q"], handler=_echo, limits=FAST)
    assert out.value == "0:q"
    start = time.monotonic()
    with anyio.move_on_after(0.5):
        await arun_program(source, ["hang"], handler=_echo, limits=FAST)
    assert time.monotonic() - start < 3.0
    assert _harnesses() == []


# --- (c) a program cannot read the keys -------------------------------------------------------------------


async def test_a_program_cannot_read_the_keys(
    isolated: Limits, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    openai, anthropic = f"marker-openai-{uuid.uuid4().hex}", f"marker-anthropic-{uuid.uuid4().hex}"  # not key-shaped
    monkeypatch.setenv("OPENAI_API_KEY", openai)
    monkeypatch.setenv("ANTHROPIC_API_KEY", anthropic)
    monkeypatch.setenv("HOME", str(tmp_path))
    keys = tmp_path / ".config" / "ontime" / "keys.env"
    keys.parent.mkdir(parents=True)
    keys.write_text(f"OPENAI_API_KEY={openai}\nANTHROPIC_API_KEY={anthropic}\n")
    source = f"""
import json, os
PATHS = ["/proc/{{}}/environ".format(os.getppid()), "/proc/{os.getpid()}/environ", "/proc/1/environ",
         "/proc/self/environ", {str(keys)!r}, os.path.expanduser("~/.config/ontime/keys.env"),
         "../" * 30 + {str(keys)!r}.lstrip("/")]
async def workflow(problem):
    seen = {{"environ": dict(os.environ)}}
    for path in PATHS:
        try:
            with open(path, "rb") as f:
                seen[path] = f.read().decode(errors="replace")
        except OSError as exc:
            seen[path] = type(exc).__name__
    return json.dumps(seen)
"""
    [out] = await arun_program(source, ["q"], handler=_echo, limits=isolated)
    assert out.value is not None, out
    assert openai not in out.value and anthropic not in out.value
    seen = json.loads(out.value)
    assert set(seen["environ"]) <= {"PATH", "LANG", "HOME", "TMPDIR", "PWD"}
    assert all(v in ("PermissionError", "FileNotFoundError") for k, v in seen.items() if k != "environ"), seen


# --- (d) a program cannot reach the network ----------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[tuple[int, list[str]]]:
    """A real HTTP server on loopback; the paths of the requests it received."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads ``received``."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_a_program_cannot_reach_the_network(isolated: Limits, http_server: tuple[int, list[str]]) -> None:
    port, received = http_server
    source = f"""
import json, socket, urllib.request
async def workflow(problem):
    tries = {{
        "connect": lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1),
        "socket": lambda: socket.socket().connect(("127.0.0.1", {port})),
        "urllib": lambda: urllib.request.urlopen("http://127.0.0.1:{port}/from-the-program", timeout=1),
        "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port})),
    }}
    seen = {{}}
    for name, attempt in tries.items():
        try:
            attempt()
            seen[name] = "reached"
        except Exception as exc:
            seen[name] = type(exc).__name__
    return json.dumps(seen)
"""
    [out] = await arun_program(source, ["q"], handler=_echo, limits=isolated)
    assert out.value is not None, out
    assert "reached" not in json.loads(out.value).values(), out.value
    assert received == []


# --- the channel's checks -----------------------------------------------------------------------------------


async def test_a_request_the_parent_refuses_is_a_usage_error_in_the_program() -> None:
    """The child checks its calls, but the parent does not trust it: a request sent past the child's
    checks (through the harness's own channel object) is refused, and the handler never sees it."""
    source = """
async def workflow(problem):
    channel = call_llm.__globals__["_channel"]
    seen = []
    for op, payload in [("call_llm", {"messages": 5}), ("call_llm", {"messages": ["x"], "n": 10**6}),
                        ("call_llm", {"messages": ["x"], "api_key": "x"}), ("shell", {}),
                        ("exec_code", {"solution": 1, "tests": None})]:
        try:
            await channel.ask(op, payload)
            seen.append("accepted")
        except UsageError as exc:
            seen.append(str(exc))
    try:
        await call_llm("x", n=0)
    except UsageError as exc:
        seen.append(str(exc))
    return "\\n".join(seen)
"""
    ledger = Ledger(budget=10)
    [out] = await arun_program(source, ["q"], handler=ledger, limits=FAST)
    assert out.value is not None, out
    assert out.value.splitlines() == [
        "call_llm: messages must be a non-empty list of strings",
        "call_llm: n (num_of_response) must be an integer from 1 to 64, not 1000000",
        "call_llm: unknown argument 'api_key'",
        "channel: unknown op 'shell'",
        "exec_code: solution must be a string, and tests a string or None",
        "call_llm: n (num_of_response) must be an integer from 1 to 64, not 0",
    ]
    assert ledger.calls == []


@pytest.mark.parametrize(
    ("code", "broken"),
    [
        ("os.write(fd, b'not json\\n')", "a line that is not JSON"),
        ("os.write(fd, b'[1, 2]\\n')", "a line that is not a message"),
        (f"os.write(fd, b'x' * {REQUEST_CAP + 1})", f"a message over {REQUEST_CAP} bytes"),
        (
            'os.write(fd, b\'{"id": "7", "index": 0, "op": "call_llm", "payload": {}}\\n\')',
            "a request without an integer id",
        ),
        ("await asyncio.gather(*(call_llm('x') for _ in range(5000)))", f"more than {MAX_PENDING} calls at once"),
    ],
    ids=["garbage", "not-a-message", "oversized", "string-id", "flood"],
)
async def test_a_child_that_breaks_the_channel_is_stopped(code: str, broken: str) -> None:
    """Outcomes already sent stand; every other input gets the reason, and the parent goes on."""
    source = f"""
import asyncio, os
async def workflow(problem):
    if problem == "first":
        return "done"
    await asyncio.sleep(0.2)
    fd = call_llm.__globals__["_channel"].fd_out
    {code}
    await asyncio.sleep(60)
"""

    async def slow(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        await anyio.sleep_forever()

    out = await arun_program(source, ["first", "second"], handler=slow, limits=FAST)
    assert out[0].value == "done"
    assert out[1].value is None
    assert out[1].error == f"SandboxError: the program broke the channel ({broken}), so it was stopped"
    assert _harnesses() == []


async def _stop_reading(source_body: str, handler: ProgramHandler) -> ProgramOutcome:
    """The outcome of a child that stops reading its replies, then runs ``source_body`` (``send`` writes a
    request line itself, ``big`` is a string of ``REQUEST_CAP // 2`` characters, ``request`` a valid call)."""
    source = f"""
import asyncio
async def workflow(problem):
    channel = call_llm.__globals__["_channel"]
    asyncio.get_running_loop().remove_reader(channel.fd_in)
    big = "x" * {REQUEST_CAP // 2}
    request = call_llm.__globals__["llm_request"]("x")

    def send(i, op, payload):
        channel.send({{"id": 10**6 + i, "index": 0, "op": op, "payload": payload}})

    {source_body}
    await asyncio.sleep(60)
"""
    [out] = await arun_program(source, ["q"], handler=handler, limits=FAST)
    return out


def _broke(reason: str) -> str:
    return f"SandboxError: the program broke the channel ({reason}), so it was stopped"


async def test_a_call_counts_as_pending_until_its_reply_is_written() -> None:
    """A child that stops reading and floods: the replies fill the pipe (64 KiB, ~1500 of them), and the
    rest, blocked on it, are still calls in flight."""
    body = f"for i in range({2 * MAX_PENDING}):\n        send(i, 'call_llm', request)"
    out = await _stop_reading(body, _echo)
    assert out.error == _broke(f"more than {MAX_PENDING} calls at once")


async def test_the_bytes_of_requests_in_flight_are_capped() -> None:
    """Requests under the line cap, but more of them at once than ``INFLIGHT_CAP`` holds: the parent would
    hold them all while the handler waits (for a sandbox slot, for budget); it stops the child instead."""

    async def slow(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        await anyio.sleep_forever()

    count = 2 * INFLIGHT_CAP // REQUEST_CAP + 1
    body = f"for i in range({count}):\n        send(i, 'exec_code', {{'solution': big, 'tests': None}})"
    out = await _stop_reading(body, slow)
    assert out.error == _broke(f"more than {INFLIGHT_CAP} bytes of calls in flight")


async def test_replies_the_child_does_not_read_count_in_flight() -> None:
    """Small requests, big replies, a child that never reads them: the parent stops it at the cap."""

    async def big(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        return ["y" * (MESSAGE_CAP // 2)]

    count = 2 * INFLIGHT_CAP // MESSAGE_CAP + 1
    body = f"for i in range({count}):\n        send(i, 'call_llm', request)"
    out = await _stop_reading(body, big)
    assert out.error == _broke(f"more than {INFLIGHT_CAP} bytes of calls in flight")


async def test_a_request_or_a_value_over_the_line_cap_is_the_programs_error() -> None:
    """The child refuses to send a line the parent would stop it for: a call raises ``UsageError`` in the
    program, an answer too long (escaped, as it crosses) is the input's error outcome."""
    assert _program_harness.MAX_LINE == REQUEST_CAP
    source = f"""
async def workflow(problem):
    if problem == "value":
        return "\\u00e9" * {REQUEST_CAP // 4}
    try:
        await call_llm("x" * {REQUEST_CAP})
    except UsageError as exc:
        return str(exc)
"""
    call, value = await arun_program(source, ["call", "value"], handler=_echo, limits=FAST)
    assert call.value is not None and call.value.startswith("call_llm: the request is ")
    assert call.value.endswith(f"bytes, over the channel's cap of {REQUEST_CAP}")
    assert value.value is None
    assert value.error is not None and value.error.startswith(f"workflow returned {REQUEST_CAP // 4} characters")


async def test_a_reply_over_the_cap_is_a_usage_error() -> None:
    source = """
async def workflow(problem):
    try:
        await call_llm(problem)
    except UsageError as exc:
        return str(exc)
"""

    async def huge(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        return ["x" * MESSAGE_CAP]

    [out] = await arun_program(source, ["q"], handler=huge, limits=FAST)
    assert out.value == f"call_llm: the reply is over the channel's cap of {MESSAGE_CAP} bytes"


async def test_a_program_over_its_cpu_limit_is_killed() -> None:
    source = "async def workflow(problem):\n    while True:\n        pass\n"
    out = await arun_program(source, ["a", "b"], handler=_echo, limits=replace(FAST, cpu_s=1))
    assert all(o.error == "SandboxError: killed by SIGXCPU: over the CPU limit of 1 s" for o in out), out


async def test_a_program_that_exits_keeps_the_outcomes_already_sent() -> None:
    source = """
import asyncio, os
async def workflow(problem):
    if problem == "b":
        await asyncio.sleep(0.2)
        os._exit(3)
    return problem
"""
    out = await arun_program(source, ["a", "b", "c"], handler=_echo, limits=FAST)
    assert [o.value for o in out] == ["a", None, "c"]
    assert out[1].error == "SandboxError: the program exited (status 3) before workflow returned"


async def test_exec_code_payloads_reach_the_handler() -> None:
    source = """
async def workflow(problem):
    first = await exec_code("def f():\\n    return 1\\n", "assert f() == 1")
    second = await exec_code(problem)
    return f"{first} {second}"
"""
    ledger = Ledger(budget=0)
    [out] = await arun_program(source, ["x = 1"], handler=ledger, limits=FAST)
    assert out.value == "no error no error"
    assert ledger.calls == [
        (0, "exec_code", {"solution": "def f():\n    return 1\n", "tests": "assert f() == 1"}),
        (0, "exec_code", {"solution": "x = 1", "tests": None}),
    ]


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_inputs_run_concurrency_at_once(concurrency: int) -> None:
    """Each workflow's call sleeps 0.2 s in the handler: 4 inputs overlap as far as ``concurrency`` allows,
    and the calls of one input's gather overlap too."""
    source = (
        "import asyncio\nasync def workflow(p):\n    await asyncio.gather(call_llm(p), call_llm(p))\n    return p\n"
    )
    running, most = 0, 0

    async def sleepy(index: int, op: str, payload: Mapping[str, Any]) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.2)
        running -= 1
        return ["ok"]

    start = time.monotonic()
    out = await arun_program(source, list("abcd"), handler=sleepy, limits=FAST, concurrency=concurrency)
    took = time.monotonic() - start
    assert [o.value for o in out] == list("abcd")
    assert most == 2 * concurrency
    assert (took < 0.75) if concurrency == 4 else (took > 0.8), took


# --- the child's own check of call_llm matches LLMCall's ------------------------------------------------------

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    messages=_VALUES,
    temperature=_VALUES,
    role=_VALUES,
    n=_VALUES,
    model=_VALUES,
    max_tokens=_VALUES,
    tag=_VALUES,
)
def test_the_childs_call_check_agrees_with_llmcall(
    messages: Any, temperature: Any, role: Any, n: Any, model: Any, max_tokens: Any, tag: Any
) -> None:
    """The harness cannot import ontime, so it checks call_llm's arguments itself: same verdict, same
    message and same payload as ``LLMCall`` (what the parent checks again)."""
    child: Any
    parent: Any
    try:
        child = _program_harness.llm_request(
            messages, temperature, agent_role=role, model=model, n=n, max_tokens=max_tokens, tag=tag
        )
    except _program_harness.UsageError as exc:
        child = str(exc)
    fields = {"messages": messages, "temperature": temperature, "agent_role": role, "model": model,
              "n": 1 if n is None else n, "max_tokens": max_tokens, "tag": tag}  # fmt: skip
    try:
        parent = LLMCall.from_json(fields).to_json()
    except UsageError as exc:
        parent = str(exc)
    assert child == parent


@settings(max_examples=300, deadline=None)
@given(
    index=st.one_of(st.integers(-2, 3), st.booleans(), st.none(), st.text(max_size=2)),
    op=st.sampled_from(["call_llm", "exec_code", "outcome", "", None]),
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["messages", "n", "model", "solution", "tests", "temperature", "x"]), inner, max_size=4
            )
        ),
        max_leaves=8,
    ),
)
def test_any_request_is_accepted_or_a_usage_error(index: Any, op: Any, payload: Any) -> None:
    """Whatever JSON a child sends as a request, the parent's check returns the handler's arguments or
    raises UsageError (which the program sees), never anything that would crash the parent."""
    try:
        got_index, got_op, got = program_sandbox._request(index, op, payload, 2)
    except UsageError:
        return
    assert (got_index, got_op) == (index, op)
    if op == "call_llm":
        assert LLMCall.from_json(got).to_json() == got
    else:
        assert set(got) == {"solution", "tests"}


# --- helpers ------------------------------------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """Every process's parent (Linux: read from /proc)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def _descendants(root: int) -> set[int]:
    parents, found, frontier = _parents(), set[int](), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (a zombie has ended)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _harnesses() -> list[int]:
    """Our descendants that run the program harness."""
    found = []
    for pid in _descendants(os.getpid()):
        try:
            if b"_program_harness" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found
