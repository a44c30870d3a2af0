"""Run untrusted, model-written Python against its tests in a child process, and say what failed.

    result = run_tests(solution, tests)     # tests: asserts, unittest.TestCase classes, test*() functions
    result.passed, result.failures, result.exec_fail
    result.to_exec_code()                   # BayesFlow's exec_code contract (Appendix G)
    result = await arun_tests(solution, tests)  # in async code: cancelling it kills the program at once

The solution, then the tests (as the main script), run as one module in ``python -I -S`` in an empty
temporary directory, under limits the child sets on itself: CPU seconds, address space, file size, no core
dumps, and (where the count is its own) processes. An audit hook then refuses internet sockets, new
processes, ctypes, mmap, signals and priority changes aimed at other processes, and files outside the working
directory (the standard library stays readable). A supervisor process outside the program is the subreaper
of whatever the program starts anyway: when the program ends, or the parent sends SIGTERM, it kills and reaps
every one of them, even those that left the session. The tests fail closed: a failing subtest, a skip, an
unexpected success, or no check run at all does not pass.

Two isolation modes (``Limits.isolation``; ``"auto"`` takes bubblewrap where it works, probed once per
process):

- ``"bubblewrap"``: the child runs in ``bwrap`` with new user, PID, network, IPC, UTS and cgroup namespaces,
  no capabilities, an empty environment apart from ``PATH``, ``LANG``, ``HOME`` and ``TMPDIR``, and a
  read-only root that holds only /usr, /lib*, the interpreter and the harness; the work directory is the
  only writable path, /proc is the namespace's own (no other process is visible), and every process in the
  namespace dies with it, also when bwrap's parent dies. The audit hook stays on as a second wall.
- ``"audit-hook"``: the hook alone, in a scrubbed environment, in a new user and network namespace where the
  kernel allows.

This contains what model-written code does by accident or by shortcut: infinite loops, fork bombs, memory
hogs, runaway writes, network calls, reading the host's files, exiting early to skip the tests. Without
bubblewrap it is not a boundary against code written to escape: Python's audit hooks can be subverted from
inside the process. Even with it, the kernel is shared: for hostile code, run inside a VM (gVisor,
Firecracker) as well.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, get_args

import anyio.to_thread

from runtime.types import LimitError, SandboxError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Failure", "Isolation", "Limits", "SandboxResult", "arun_tests", "run_tests"]

Isolation = Literal["bubblewrap", "audit-hook"]

_HARNESS = str(Path(__file__).with_name("_sandbox_harness.py"))
# Every script a sandbox's child may run, bound read-only into bubblewrap (tools.program_sandbox's harness
# loads this module's harness for its isolation).
_HARNESSES = (_HARNESS, str(Path(__file__).with_name("_program_harness.py")))
_PYTHON = os.path.realpath(sys.executable)  # the interpreter itself, not a venv's link to it
_OUTPUT_CAP = 64 * 1024  # bytes of the program's stdout and stderr kept
_STOP_GRACE_S = 2.0  # for the sandbox to end what the program started, after SIGTERM


@dataclass(frozen=True, slots=True)
class Limits:
    """What the program may use. ``wall_s`` also bounds sleeping and waiting, which ``cpu_s`` does not.
    ``isolation`` picks the mode (see the module's docstring): ``"auto"`` uses bubblewrap where it works and
    falls back to the audit hook; asking for ``"bubblewrap"`` where it does not work raises
    :class:`SandboxError` rather than running with less."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 16
    isolation: Literal["auto", "bubblewrap", "audit-hook"] = "auto"

    def __post_init__(self) -> None:
        if not (self.wall_s > 0 and self.cpu_s >= 1 and self.memory_mb >= 64 and self.file_mb >= 1):
            raise LimitError(f"sandbox limits out of range: {self} (wall_s > 0, cpu_s >= 1, memory_mb >= 64)")
        if self.isolation not in ("auto", *get_args(Isolation)):
            raise LimitError(f"unknown sandbox isolation {self.isolation!r}: auto, bubblewrap or audit-hook")


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
    it did not run to the end (syntax error, exception, timeout, a limit, an early exit); ``isolation`` says
    which mode contained it."""

    passed: bool
    failures: tuple[Failure, ...] = ()
    exec_fail: str | None = None
    tests_run: int = 0
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    traceback: tuple[str, ...] = ()  # of the error behind ``exec_fail``, when there is one
    isolation: Isolation = field(kw_only=True)

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
            _stop(child)

    run = partial(run_tests, solution, tests, limits=limits, started=started)
    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except BaseException:
        abandoned = True
        if pid is not None:
            _stop(pid)  # the worker thread, still waiting on the child, kills its group once it has ended
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
    ``limits.wall_s`` plus process start-up: in async code use :func:`arun_tests`. Raises
    :class:`SandboxError` if the sandbox cannot start (or bubblewrap was asked for and does not work here)."""
    limits = limits or Limits()
    isolation = _isolation(limits.isolation)
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
        report_fd = report_f.fileno()
        argv, env = _child(_HARNESS, limits, [str(report_fd)], workdir, isolation)
        try:
            proc = subprocess.Popen(
                argv, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=out_f, stderr=err_f,
                pass_fds=(report_fd,), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        if started is not None:
            started(proc.pid)
        try:
            timed_out = not _exchange(proc, (nonce + "\n" + job).encode(), limits.wall_s)
            if timed_out:
                _stop(proc.pid)
                if not _exchange(proc, b"", _STOP_GRACE_S):
                    _kill_group(proc.pid)
                    proc.wait()
        finally:
            _kill_group(proc.pid)  # whatever is left in the child's process group
        stdout = _head(out_f, _OUTPUT_CAP).decode("utf-8", "replace")
        stderr = _head(err_f, _OUTPUT_CAP).decode("utf-8", "replace")
        report = _report(_head(report_f), nonce)
    duration = time.monotonic() - start
    result = SandboxResult(False, stdout=stdout, stderr=stderr, duration_s=duration, isolation=isolation)
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


def _child(
    harness: str, limits: Limits, args: Sequence[str], workdir: str, isolation: Isolation
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start ``harness`` in a sandbox: ``python -I -S`` in a scrubbed
    environment with ``workdir`` as its home, inside bubblewrap in that mode. The harness's argv: cpu_s
    memory_bytes file_bytes, then ``args``, then the isolation mode."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    argv = [_PYTHON, "-I", "-S", "-X", "utf8", harness, str(limits.cpu_s), str(limits.memory_mb * 2**20),
            str(limits.file_mb * 2**20), *args, isolation]  # fmt: skip
    if isolation == "bubblewrap":  # bwrap itself runs with an empty environment; the child gets ``env`` from it
        return [*_bwrap_argv(workdir, env), *argv], {}
    return argv, env


def _isolation(wanted: str) -> Isolation:
    if wanted == "audit-hook":
        return "audit-hook"
    problem = _bwrap_problem()
    if problem is None:
        return "bubblewrap"
    if wanted == "bubblewrap":
        raise SandboxError(f"bubblewrap isolation was asked for, but {problem}")
    return "audit-hook"


@functools.cache
def _bwrap_problem() -> str | None:
    """Why bubblewrap cannot run the sandbox here, or None if it can: one run of the interpreter in it, with
    the options of a real run, once per process."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    with tempfile.TemporaryDirectory(prefix="ontime-sandbox-") as workdir:
        argv = [*_bwrap_argv(workdir, {}), _PYTHON, "-I", "-S", "-c", ""]
        try:
            done = subprocess.run(argv, cwd=workdir, env={}, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap did not start: {exc}"
    if done.returncode != 0:
        return f"bwrap failed (status {done.returncode}): {done.stderr.decode(errors='replace').strip()[:300]}"
    return None


def _bwrap_argv(workdir: str, env: dict[str, str]) -> list[str]:
    """bubblewrap's command line: read-only system libraries, interpreter and harness at their own paths;
    ``workdir`` the only writable path; ``env`` the whole environment."""
    bwrap = shutil.which("bwrap") or "bwrap"
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    readable = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(_PYTHON))}
    for path in ("/usr", "/lib", "/lib64", "/etc/ld.so.cache", *sorted(readable)):
        argv += ["--ro-bind-try", path, path]
    for harness in _HARNESSES:
        argv += ["--ro-bind", harness, harness]
    argv += ["--bind", workdir, workdir, "--dev", "/dev", "--proc", "/proc"]
    return [*argv, "--chdir", workdir, "--remount-ro", "/", "--"]


def _exchange(proc: subprocess.Popen[bytes], data: bytes, timeout: float) -> bool:
    """Write ``data`` to the child's stdin (if still open) and close it, then wait for the child to exit: True
    if it did within ``timeout``. Waits on a pidfd: ``Popen.wait(timeout)`` polls, which added up to 50 ms to
    every run."""
    deadline = time.monotonic() + timeout
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(BrokenPipeError), proc.stdin as stdin:  # a child that died reads no more
            os.set_blocking(stdin.fileno(), False)
            view = memoryview(data)
            while view:
                if not select.select([], [stdin], [], max(0.0, deadline - time.monotonic()))[1]:
                    return False
                view = view[os.write(stdin.fileno(), view) :]
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # a kernel without pidfds
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        if not select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


def _head(f: IO[bytes], size: int = -1) -> bytes:
    f.seek(0)
    return f.read(size)


def _stop(pid: int) -> None:
    """Ask the child to end with everything it started: the audit-hook mode's supervisor kills the program
    and its strays, and bubblewrap's PID namespace dies with bwrap. Does not wait."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)


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


def _death(returncode: int | None, limits: Limits, unfinished: str = "its tests finished") -> str:
    """Why a child died without reporting (before ``unfinished``). The supervisor (and bwrap) report the
    program's death by signal N as status 128 + N; a negative status is the child's own death by a signal."""
    signum = 0 if returncode is None else -returncode if returncode < 0 else returncode - 128
    with contextlib.suppress(ValueError):  # not a signal's number: an exit status
        sig = signal.Signals(signum)
        if sig == signal.SIGXCPU or sig == signal.SIGKILL:
            return f"killed by {sig.name}: over the CPU limit of {limits.cpu_s} s"
        return f"killed by {sig.name}"
    return f"the program exited (status {returncode}) before {unfinished}"
