"""Runs inside the sandbox's child process (``python -I -S``, standard library only): limits itself, then
runs the program and reports to the parent. See :mod:`tools.sandbox` for what it guards against and what
it does not.

argv: cpu_s memory_bytes file_bytes result_fd isolation. stdin: the report's nonce line, then JSON
``{"solution": str, "tests": [str, ...]}``.

The tests fail closed: a failing subtest, a skipped test and an unexpected success fail, and so does a run
in which no check ran at all (no assert statement executed, no unittest test or ``test*()`` function ran).
"""

import _posixsubprocess
import ast
import contextlib
import ctypes
import io
import json
import linecache
import os
import resource
import signal
import sys
import traceback
import types
import unittest
from _socket import AF_UNIX
from collections.abc import Callable
from typing import Any

PROGRAM = "<program>"
_CHECKS = "__ontime_checks__"  # a one-item list in the program's namespace: assert statements executed
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_CHILD_SUBREAPER = 36
_NPROC = 64  # processes and threads at once, set where the count is the sandbox's own (a user namespace)
_BLOCKED = (
    "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto", "socket.sendmsg",
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.killpg",
    "subprocess.Popen", "pty.spawn", "_posixsubprocess.fork_exec", "signal.pidfd_send_signal", "os.mknod",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
    "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at", "ctypes.create_string_buffer",
    "os.chroot", "os.setuid", "os.setgid", "os.putenv", "os.unsetenv", "sys._current_frames",
    "resource.setrlimit", "resource.prlimit", "signal.pthread_kill", "mmap.__new__",
)  # fmt: skip
# Calls that raise no audit event in Python 3.11 but reach other processes, start processes or make special
# files: the harness wraps each so that it raises one, with the call's args and kwargs, for the hook to judge.
_UNAUDITED = (
    (os, "pidfd_open"), (os, "setpriority"), (os, "sched_setaffinity"), (os, "sched_setscheduler"),
    (os, "sched_setparam"), (os, "mknod"), (os, "mkfifo"), (signal, "pidfd_send_signal"),
    (_posixsubprocess, "fork_exec"),
)  # fmt: skip
_PID_ARG = {"os.pidfd_open": 0, "os.setpriority": 1, "os.sched_setaffinity": 0, "os.sched_setscheduler": 0,
            "os.sched_setparam": 0}  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_LISTING = ("os.listdir", "os.scandir")  # the import system lists the standard library's folders
# Events that change files: the positions of their path arguments, and of their dir_fd arguments.
_CHANGES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)), "os.symlink": ((0, 1), (2,)),
    "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)), "os.chmod": ((0,), (2,)),
    "os.chown": ((0,), (3,)), "os.utime": ((0,), (3,)), "os.truncate": ((0,), ()), "os.chdir": ((0,), ()),
    "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()), "shutil.rmtree": ((0,), (1,)),
    "os.fwalk": ((), (4,)),
}  # fmt: skip


def _limit(cpu_s: int, memory: int, file_size: int, *, nproc: bool) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc:  # the kernel does not enforce it for root: there the supervisor or the PID namespace ends strays
        resource.setrlimit(resource.RLIMIT_NPROC, (_NPROC, _NPROC))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing us


def _unshare() -> bool:
    """Without bubblewrap: move into a new user namespace with an empty network namespace, where the kernel
    allows it (for root this also drops every capability outside it: no device files, no raising priorities),
    else into an empty network namespace alone. Best effort: the audit hook refuses sockets anyway. True if
    the process now has a user namespace of its own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
            return True
        libc.unshare(_CLONE_NEWNET)
    except (OSError, AttributeError):
        pass
    return False


def _supervise() -> None:
    """Fork; the child returns and runs the program, this process stays outside it as the subreaper of
    everything it starts. When the program's process ends (or the parent sends SIGTERM), kill and reap every
    process left, setsid() or not, then exit with the program's status (128 + N for signal N, as bubblewrap
    does). Never returns in the supervisor. (In bubblewrap the namespace would end them too, but only after
    bwrap has exited; this way they are gone before the parent sees the end.)"""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    worker = os.fork()
    if worker == 0:
        return

    def stop(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    _, status = os.waitpid(worker, 0)
    _end_the_rest()
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _end_the_rest() -> None:
    """Kill and reap every child of this process; the program's orphans become its children (subreaper)."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0]:
                continue
        except ChildProcessError:
            return  # none left
        children = _children()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, 0 if children else os.WNOHANG)


def _children() -> list[int]:
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == me:
                        found.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _audited(event: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def audited(*args: Any, **kwargs: Any) -> Any:
        sys.audit(event, args, kwargs)
        return call(*args, **kwargs)

    return audited


def _audit_unaudited() -> None:
    """Replace each call in ``_UNAUDITED`` in every module that holds it (``os`` and ``posix``, ``signal`` and
    ``_signal``) with one that raises its audit event first. A program written to escape can still reach the
    originals (from the wrapper's closure, or a fresh copy of a module); there the supervisor and
    bubblewrap's namespaces are the walls."""
    for module, name in _UNAUDITED:
        original = getattr(module, name, None)
        if original is None:
            continue
        wrapped = _audited(f"{module.__name__}.{name}", original)
        for holder in list(sys.modules.values()):
            if getattr(holder, name, None) is original:
                setattr(holder, name, wrapped)


def _guard(workdir: str, readable: tuple[str, ...]) -> None:
    """Refuse internet sockets, new processes, raw memory, signals and priority changes aimed at other
    processes, and files outside ``workdir`` (the standard library stays readable, or imports would fail).
    No directory can be opened as a file descriptor: the ``open`` event does not show ``dir_fd``, so a
    directory descriptor would let a path that looks inside resolve outside."""
    me = os.getpid()
    _audit_unaudited()

    def inside(path: object, roots: tuple[str, ...]) -> bool:
        if isinstance(path, int):
            try:  # the file an fd refers to
                path = os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                return False
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

    def refuse(what: str) -> None:
        raise PermissionError(f"sandbox: {what} is not allowed")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _BLOCKED:
            refuse(event)
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in str(mode) for c in "wax+")) or (flags or 0) & _WRITE_FLAGS
            if isinstance(path, int):
                return  # an fd the process already holds
            if mode is None and os.path.isdir(path):
                refuse(f"opening the directory {path!r} as a file descriptor")
            paths = [path]
        elif event in _LISTING:
            paths, writes = [args[0]], False
        elif event in _CHANGES:
            if event == "shutil.rmtree":  # it reads this right after the event: remove by path, not by dir_fd
                sys.modules["shutil"]._use_fd_functions = False  # type: ignore[attr-defined]
            at, dir_fds = _CHANGES[event]
            if any(args[i] not in (None, -1) for i in dir_fds):
                refuse(f"{event} with dir_fd")
            paths, writes = [args[i] for i in at], True
        elif event == "os.mkfifo":
            (call_args, kwargs) = args
            if kwargs.get("dir_fd") is not None:
                refuse(f"{event} with dir_fd")
            paths, writes = [call_args[0] if call_args else kwargs.get("path")], True
        elif event == "os.kill":
            if args[0] != me:
                refuse("a signal to another process")
            return
        elif event in _PID_ARG:
            call_args, kwargs = args
            if kwargs or len(call_args) <= _PID_ARG[event] or call_args[_PID_ARG[event]] not in (0, me):
                refuse(f"{event} for another process")
            if event == "os.setpriority" and call_args[0] != os.PRIO_PROCESS:
                refuse(f"{event} for a process group or user")
            return
        elif event == "socket.__new__":
            if args[1] != AF_UNIX:  # a pair of local sockets (asyncio's self-pipe) does no harm
                refuse("an internet socket")
            return
        elif event == "import":
            if args[0] == "_posixsubprocess":  # a fresh copy, after the program deleted the wrapped one
                refuse("importing _posixsubprocess again")
            return
        else:
            return
        for path in paths:
            if path is not None and not inside(path, (workdir,) if writes else (workdir, *readable)):
                raise PermissionError(f"sandbox: no access to {path!r} outside the working directory")

    sys.addaudithook(hook)


MAX_CASES, MAX_FRAMES, MAX_TEXT = 50, 30, 2000  # keep the report small whatever the program does


def _frames(exc: BaseException) -> list[str]:
    return [line[:MAX_TEXT] for line in traceback.format_exception(type(exc), exc, exc.__traceback__)[-MAX_FRAMES:]]


def _case(exc: BaseException, test_id: str = "") -> dict[str, Any]:
    """A failing test in exec_code's shape: the test and the program's line where ``exc`` was raised (the
    failing assertion), the error's type and message, the traceback."""
    line = next((f.line or "" for f in reversed(traceback.extract_tb(exc.__traceback__)) if f.filename == PROGRAM), "")
    return {
        "test_case": ": ".join(x for x in (test_id, line.strip()) if x),
        "error_type": type(exc).__name__,
        "error_message": str(exc)[:MAX_TEXT],
        "traceback": _frames(exc),
    }


def _exited(exc: SystemExit) -> dict[str, Any]:
    return {"exec_fail_case": f"the program exited (SystemExit: {exc.code!r}) before its tests finished"}


class _Collect(unittest.TestResult):
    """Every way a test can fall short of passing is a failing case: failures, errors, failing subtests,
    skips and unexpected successes (an expected failure is the test's own business)."""

    def __init__(self) -> None:
        super().__init__()
        self.cases: list[dict[str, Any]] = []

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        self._add(_case(err[1], test.id()))

    addError = addFailure

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any) -> None:
        if err is not None:
            self._add(_case(err[1], subtest.id()))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        self._add({"test_case": test.id(), "error_type": "Skipped", "error_message": reason[:MAX_TEXT]})

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        message = "passed, but is marked as an expected failure"
        self._add({"test_case": test.id(), "error_type": "UnexpectedSuccess", "error_message": message})

    def _add(self, case: dict[str, Any]) -> None:
        if len(self.cases) < MAX_CASES:
            self.cases.append({"traceback": [], **case})


class _CountAsserts(ast.NodeTransformer):
    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        count = ast.parse(f"{_CHECKS}[0] += 1").body[0]
        return [ast.copy_location(count, node), node]


def _compiled(source: str, first_line: int) -> types.CodeType:
    """``source`` (lines ``first_line`` on of the program) with every executed assert statement counted."""
    try:
        tree = ast.parse(source, PROGRAM)
    except SyntaxError as exc:
        exc.lineno = None if exc.lineno is None else exc.lineno + first_line - 1
        raise
    ast.increment_lineno(tree, first_line - 1)
    return compile(ast.fix_missing_locations(_CountAsserts().visit(tree)), PROGRAM, "exec")


def _no_main(*args: Any, **kwargs: Any) -> None:
    """``unittest.main()`` in the tests: their cases are collected and run after the tests' code."""


def _tests(namespace: dict[str, Any]) -> unittest.TestSuite:
    """The unittest cases defined by the solution or the tests, and the tests' ``test*()`` functions that
    take no arguments (pytest's plain style)."""
    suite = unittest.TestSuite()
    for v in list(namespace.values()):
        if isinstance(v, type) and issubclass(v, unittest.TestCase) and v.__module__ in ("__sandbox__", "__main__"):
            suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(v))
        elif isinstance(v, types.FunctionType) and v.__name__.startswith("test") and v.__module__ == "__main__":
            code = v.__code__
            if code.co_argcount == len(v.__defaults__ or ()) and not code.co_kwonlyargcount:  # no fixtures
                suite.addTest(unittest.FunctionTestCase(v, description=v.__name__))
    return suite


def _run(solution: str, tests: list[str]) -> dict[str, Any]:
    """Run the solution, then the tests as the main script (their ``if __name__ == "__main__":`` blocks
    run), then the unittest cases and test functions they define."""
    source = "\n\n".join(p for p in (solution, *tests) if p)
    linecache.cache[PROGRAM] = (len(source), None, source.splitlines(True), PROGRAM)
    namespace: dict[str, Any] = {"__builtins__": __builtins__, _CHECKS: [0]}
    unittest.main = _no_main  # type: ignore[assignment]
    line = 1
    try:
        for part, name in [(solution, "__sandbox__"), *((t, "__main__") for t in tests)]:
            if part:
                namespace["__name__"] = name
                exec(_compiled(part, line), namespace)
                line += part.count("\n") + 2
    except AssertionError as exc:
        return {"failures": [_case(exc)]}
    except SystemExit as exc:
        return _exited(exc)
    except BaseException as exc:
        return {"exec_fail_case": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
                "traceback": _frames(exc)}  # fmt: skip
    result = _Collect()
    try:
        _tests(namespace).run(result)
    except SystemExit as exc:
        return _exited(exc)
    if result.testsRun == 0 and namespace[_CHECKS][0] == 0:
        why = "no test ran: no assert was executed and no unittest case or test*() function ran"
        return {"exec_fail_case": why}
    return {"failures": result.cases, "tests_run": result.testsRun}


def main() -> None:
    cpu_s, memory, file_size, result_fd = (int(x) for x in sys.argv[1:5])
    _supervise()
    own_user_namespace = sys.argv[5] == "bubblewrap" or _unshare()  # bubblewrap made one for the program
    nonce = sys.stdin.readline().strip()
    job = json.loads(sys.stdin.read())
    report = os.fdopen(result_fd, "w", encoding="utf-8")
    workdir = os.path.realpath(os.getcwd())
    stdlib = tuple(os.path.realpath(p) for p in sys.path if p)  # with -I -S: the standard library alone
    readable = (*stdlib, "/dev/null", "/dev/urandom", "/dev/zero")
    _limit(cpu_s, memory, file_size, nproc=own_user_namespace)
    _guard(workdir, readable)
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", errors="replace", line_buffering=True)
    try:
        out = _run(job["solution"], job["tests"])
    except MemoryError:
        out = {"exec_fail_case": "MemoryError: the program ran out of its memory limit"}
    report.write(json.dumps({"nonce": nonce, **out}))
    report.flush()
    os._exit(0)  # no interpreter teardown: the program's atexit handlers and finalizers do not run


if __name__ == "__main__":
    main()
