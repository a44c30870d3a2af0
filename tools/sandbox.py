"""Run untrusted, model-written Python against its tests in a child process, and say what failed.

    result = run_tests(solution, tests)     # tests: asserts, unittest.TestCase classes, test*() functions
    result.passed, result.failures, result.exec_fail
    result.to_exec_code()                   # BayesFlow's exec_code contract (Appendix G)
    result = await arun_tests(solution, tests)  # in async code: cancelling it kills the program at once

The solution, then the tests (as the main script), run as one module in ``python -I -S`` in an empty
temporary directory with a scrubbed environment, in its own session (its whole process group is killed at
the end), under limits it sets on itself: CPU seconds, address space, file size, no core dumps. An audit
hook then refuses sockets, new processes, ctypes, mmap, and files outside the working directory (the
standard library stays readable); where the kernel allows, the child also moves into an empty network
namespace. The tests fail closed: a failing subtest, a skip, an unexpected success, or no check run at all
does not pass.

This contains what model-written code does by accident or by shortcut: infinite loops, fork bombs, memory
hogs, runaway writes, network calls, reading the host's files, exiting early to skip the tests. It is not a
security boundary against code written to escape: Python's audit hooks can be subverted from inside the
process. For hostile code, run this inside a container or VM (gVisor, Firecracker) as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio.to_thread

from runtime.types import LimitError, SandboxError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Failure", "Limits", "SandboxResult", "arun_tests", "run_tests"]

_HARNESS = Path(__file__).with_name("_sandbox_harness.py")
_OUTPUT_CAP = 64 * 1024  # bytes of the program's stdout and stderr kept


@dataclass(frozen=True, slots=True)
class Limits:
    """What the program may use. ``wall_s`` also bounds sleeping and waiting, which ``cpu_s`` does not."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 16

    def __post_init__(self) -> None:
        if not (self.wall_s > 0 and self.cpu_s >= 1 and self.memory_mb >= 64 and self.file_mb >= 1):
            raise LimitError(f"sandbox limits out of range: {self} (wall_s > 0, cpu_s >= 1, memory_mb >= 64)")


@dataclass(frozen=True, slots=True)
class Failure:
    """One failing test: the assertion (or test id and line), the error's type and message, the traceback."""

    test_case: str
    error_type: str
    error_message: str
    traceback: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How the program did. ``passed`` only if it ran to the end and no test failed; ``exec_fail`` says why
    it did not run to the end (syntax error, exception, timeout, a limit, an early exit)."""

    passed: bool
    failures: tuple[Failure, ...] = ()
    exec_fail: str | None = None
    tests_run: int = 0
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    traceback: tuple[str, ...] = ()  # of the error behind ``exec_fail``, when there is one

    def to_exec_code(self) -> str | list[dict[str, Any]] | dict[str, str]:
        """BayesFlow's ``exec_code`` return value: ``"no error"``, a list of failing test cases, or
        ``{"exec_fail_case": message}``."""
        if self.exec_fail is not None:
            return {"exec_fail_case": self.exec_fail}
        if self.failures:
            return [{**asdict(f), "traceback": list(f.traceback)} for f in self.failures]
        return "no error"


async def arun_tests(solution: str, tests: str | Sequence[str] = "", *, limits: Limits | None = None) -> SandboxResult:
    """:func:`run_tests` for async code, in a worker thread. Cancelling it kills the program's whole session
    at once, so nothing it started outlives the caller (a run that ends, say, at its deadline)."""
    pid: int | None = None
    abandoned = False

    def started(child: int) -> None:
        nonlocal pid
        pid = child
        if abandoned:  # cancelled while the child was being started
            _kill_group(child)

    run = partial(run_tests, solution, tests, limits=limits, started=started)
    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except BaseException:
        abandoned = True
        if pid is not None:
            _kill_group(pid)
        raise


def run_tests(
    solution: str,
    tests: str | Sequence[str] = "",
    *,
    limits: Limits | None = None,
    started: Callable[[int], None] | None = None,
) -> SandboxResult:
    """Run ``solution`` followed by ``tests`` (source text; several test sources run one after another)
    in a fresh sandbox; ``started`` is told the child's process id, which leads its own session. Blocks up to
    ``limits.wall_s`` plus process start-up: in async code use :func:`arun_tests`."""
    limits = limits or Limits()
    job = json.dumps({"solution": solution, "tests": [tests] if isinstance(tests, str) else list(tests)})
    nonce = secrets.token_hex(16)
    start = time.monotonic()
    # Output and report go to unnamed files, not pipes: the child's file-size limit then bounds them, and a
    # long report cannot fill a pipe nobody reads until the child exits.
    with (
        tempfile.TemporaryDirectory(prefix="ontime-sandbox-") as workdir,
        tempfile.TemporaryFile() as out_f,
        tempfile.TemporaryFile() as err_f,
        tempfile.TemporaryFile() as report_f,
    ):
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        report_fd = report_f.fileno()
        argv = [sys.executable, "-I", "-S", "-X", "utf8", str(_HARNESS), str(limits.cpu_s),
                str(limits.memory_mb * 2**20), str(limits.file_mb * 2**20), str(report_fd)]  # fmt: skip
        try:
            proc = subprocess.Popen(
                argv, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=out_f, stderr=err_f,
                pass_fds=(report_fd,), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        if started is not None:
            started(proc.pid)
        timed_out = False
        try:
            proc.communicate((nonce + "\n" + job).encode(), timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            proc.communicate()
        finally:
            _kill_group(proc.pid)  # whatever the program left behind
        stdout = _head(out_f, _OUTPUT_CAP).decode("utf-8", "replace")
        stderr = _head(err_f, _OUTPUT_CAP).decode("utf-8", "replace")
        report = _report(_head(report_f), nonce)
    result = SandboxResult(False, stdout=stdout, stderr=stderr, duration_s=time.monotonic() - start)
    if timed_out:
        return replace(result, exec_fail=f"timed out after {limits.wall_s:g} s (wall clock)")
    if report is None:
        return replace(result, exec_fail=_death(proc.returncode, limits))
    if "exec_fail_case" in report:
        return replace(result, exec_fail=str(report["exec_fail_case"]), traceback=tuple(report.get("traceback", ())))
    failures = tuple(
        Failure(str(f["test_case"]), str(f["error_type"]), str(f["error_message"]), tuple(f["traceback"]))
        for f in report.get("failures", [])
    )
    return replace(result, passed=not failures, failures=failures, tests_run=int(report.get("tests_run", 0)))


def _head(f: IO[bytes], size: int = -1) -> bytes:
    f.seek(0)
    return f.read(size)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _report(raw: bytes, nonce: str) -> dict[str, Any] | None:
    """The harness's report, or None if there is none or it lacks the run's nonce (the program wrote it)."""
    try:
        report = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) and report.get("nonce") == nonce else None


def _death(returncode: int | None, limits: Limits) -> str:
    """Why a child died without reporting."""
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode)
        if sig == signal.SIGXCPU or sig == signal.SIGKILL:
            return f"killed by {sig.name}: over the CPU limit of {limits.cpu_s} s"
        return f"killed by {sig.name}"
    return f"the program exited (status {returncode}) before its tests finished"
